//! Values loaded from files and loaded again when the files change: Tencent
//! credentials, TLS certificates, caller tokens. Files are polled on an
//! interval and compared by the SHA-256 of their bytes, because Kubernetes
//! replaces a mounted Secret by swapping a symlink, which timestamps and file
//! events report unreliably. A new version that does not parse is logged and
//! the previous value stays in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// Turns the files' bytes (in the order of the paths) into a value.
type Parse<T, E> = Box<dyn Fn(&[Vec<u8>]) -> Result<T, E> + Send + Sync>;

/// A value that follows its files.
pub(crate) struct Watched<T, E> {
    /// What the files hold, for log lines ("caller tokens").
    what: &'static str,
    paths: Vec<PathBuf>,
    read_error: fn(&Path) -> E,
    parse: Parse<T, E>,
    current: RwLock<Arc<T>>,
    loaded_digest: Mutex<[u8; 32]>,
}

impl<T, E> std::fmt::Debug for Watched<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("what", &self.what)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl<T, E> Watched<T, E>
where
    T: Send + Sync + 'static,
    E: std::fmt::Display + 'static,
{
    /// Reads and parses `paths` once.
    ///
    /// # Errors
    /// `read_error(path)` for an unreadable file, or what `parse` returns.
    pub(crate) fn load(
        what: &'static str,
        paths: Vec<PathBuf>,
        read_error: fn(&Path) -> E,
        parse: impl Fn(&[Vec<u8>]) -> Result<T, E> + Send + Sync + 'static,
    ) -> Result<Self, E> {
        let contents = read_all(&paths, read_error)?;
        let value = parse(&contents)?;
        Ok(Self {
            what,
            loaded_digest: Mutex::new(digest(&contents)),
            paths,
            read_error,
            parse: Box::new(parse),
            current: RwLock::new(Arc::new(value)),
        })
    }

    /// The value now in use.
    pub(crate) fn current(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Reads the files again and switches to the new value when their bytes
    /// changed. Returns whether it switched.
    ///
    /// # Errors
    /// The files became unreadable or do not parse; the value stays.
    pub(crate) fn reload(&self) -> Result<bool, E> {
        let contents = read_all(&self.paths, self.read_error)?;
        let digest = digest(&contents);
        let mut loaded = self
            .loaded_digest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *loaded == digest {
            return Ok(false);
        }
        let value = (self.parse)(&contents)?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(value);
        *loaded = digest;
        Ok(true)
    }

    /// Polls the files every `interval` until `shutdown`, logging changes
    /// and bad versions (never their content); `after_check` then looks at
    /// the value in use and whether this check switched to it.
    pub(crate) fn spawn_reloader(
        self: &Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
        after_check: impl Fn(&T, bool) + Send + 'static,
    ) {
        let watched = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let changed = match watched.reload() {
                    Ok(true) => {
                        tracing::info!(what = watched.what, "reloaded from file");
                        true
                    }
                    Ok(false) => false,
                    Err(error) => {
                        tracing::warn!(
                            what = watched.what,
                            %error,
                            "file unusable; keeping the previous version"
                        );
                        false
                    }
                };
                after_check(&watched.current(), changed);
            }
        });
    }
}

fn read_all<E>(paths: &[PathBuf], read_error: fn(&Path) -> E) -> Result<Vec<Vec<u8>>, E> {
    paths
        .iter()
        .map(|path| std::fs::read(path).map_err(|_| read_error(path)))
        .collect()
}

fn digest(contents: &[Vec<u8>]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for bytes in contents {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(dir: &tempfile::TempDir) -> Result<Watched<u32, String>, String> {
        Watched::load(
            "a number",
            vec![dir.path().join("n")],
            |path| format!("cannot read {}", path.display()),
            |contents| {
                std::str::from_utf8(&contents[0])
                    .ok()
                    .and_then(|text| text.trim().parse().ok())
                    .ok_or_else(|| "not a number".to_owned())
            },
        )
    }

    #[test]
    fn follows_changes_and_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("n"), "1").unwrap();
        let watched = numbers(&dir).unwrap();
        assert_eq!(*watched.current(), 1);
        assert_eq!(watched.reload(), Ok(false));
        std::fs::write(dir.path().join("n"), "2").unwrap();
        assert_eq!(watched.reload(), Ok(true));
        assert_eq!(*watched.current(), 2);
        std::fs::write(dir.path().join("n"), "two").unwrap();
        assert_eq!(watched.reload(), Err("not a number".to_owned()));
        assert_eq!(*watched.current(), 2);
        std::fs::remove_file(dir.path().join("n")).unwrap();
        assert!(watched.reload().unwrap_err().starts_with("cannot read"));
    }

    #[test]
    fn a_missing_file_fails_the_first_load() {
        let dir = tempfile::tempdir().unwrap();
        assert!(numbers(&dir).is_err());
    }
}
