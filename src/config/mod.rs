//! Configuration: the command line (every flag also read from a `FACEID_*`
//! variable) and the files re-read while the gateway runs (credentials, TLS
//! certificates, caller tokens).
//!
//! May import nothing else of the crate: every layer reads its settings from
//! here.

mod cli;
pub(crate) mod watch;

pub use cli::{
    Cli, Command, CredentialsSource, DurationOrOff, EncryptionAlgorithm, EncryptionDefault,
    LogFormat, ServeArgs, SimulatorArgs, TokenArgs, parse_duration,
};
