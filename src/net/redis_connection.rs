//! One Redis connection for a store that lives as long as the gateway: it
//! connects lazily (a Redis that is down at start-up is only a store that
//! falls back), bounds every connect and answer by one timeout, and can be
//! switched to a new client when a watched CA bundle changes.

use std::sync::RwLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// The connection every call clones, replaceable while calls run.
pub(crate) struct RedisConnection {
    current: RwLock<ConnectionManager>,
    config: ConnectionManagerConfig,
}

impl RedisConnection {
    /// A lazy connection through `client`; connecting and each answer are
    /// bounded by `timeout`, with one reconnect attempt per command.
    ///
    /// # Errors
    /// The client cannot make a connection manager.
    pub(crate) fn new(client: redis::Client, timeout: Duration) -> Result<Self, redis::RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let connection = ConnectionManager::new_lazy_with_config(client, config.clone())?;
        Ok(Self {
            current: RwLock::new(connection),
            config,
        })
    }

    /// The connection to use now (a cheap clone).
    pub(crate) fn current(&self) -> ConnectionManager {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Connects through `client` from now on (its CA bundle changed).
    ///
    /// # Errors
    /// The client's settings are unusable; the previous connection stays.
    pub(crate) fn reconnect(&self, client: redis::Client) -> Result<(), redis::RedisError> {
        let connection = ConnectionManager::new_lazy_with_config(client, self.config.clone())?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = connection;
        Ok(())
    }
}
