//! [`Publication`]: an entry kept alive in the directory by a thread of its own.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use te_proto::text::Escaped;
use te_proto::{status, Result};
use tracing::{info, warn};

use super::{Directory, Entry, Lease};

/// The stop flag the keeper thread sleeps on.
type Stop = Arc<(Mutex<bool>, Condvar)>;

/// An [`Entry`] published in a [`Directory`] and renewed every third of
/// its time to live until [`withdraw`](Self::withdraw) (or drop) removes it.
///
/// During an outage of the store the keeper retries at the same pace and
/// logs the outage once; when the store is back it renews the lease, or, if
/// the entry expired meanwhile, publishes it again (unless another engine
/// took the name, which it logs and retries).
pub struct Publication {
    name: String,
    stop: Stop,
    keeper: Option<JoinHandle<Option<Lease>>>,
    directory: Arc<Directory>,
}

impl std::fmt::Debug for Publication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publication")
            .field("name", &self.name)
            .field("url", &self.directory.url())
            .finish()
    }
}

impl Publication {
    /// Publishes `entry` with a lease of `ttl` (at least a second) and
    /// starts renewing it. A name another engine holds is `Invalid` naming
    /// the holder; a store that cannot be reached is `RuntimeError`.
    pub fn start(directory: Arc<Directory>, entry: Entry, ttl: Duration) -> Result<Publication> {
        if ttl < Duration::from_secs(1) {
            return Err(status!(Invalid, "directory ttl {ttl:?} is under a second"));
        }
        let lease = directory
            .publish(&entry, ttl)
            .map_err(|e| status!(=e.code(), "{} (directory {})", e.message(), directory.url()))?;
        info!(segment = %Escaped(&entry.name), "published in directory {}", directory.url());
        let stop: Stop = Arc::new((Mutex::new(false), Condvar::new()));
        let keeper = {
            let (dir, stop) = (Arc::clone(&directory), Arc::clone(&stop));
            let entry = entry.clone();
            std::thread::Builder::new()
                .name(format!("te-directory {}", entry.name))
                .spawn(move || keep(&dir, &entry, ttl, lease, &stop))
                .map_err(|e| status!(RuntimeError, "cannot start the directory keeper: {e}"))?
        };
        Ok(Publication {
            name: entry.name,
            stop,
            keeper: Some(keeper),
            directory,
        })
    }

    /// Stops renewing and removes the entry (if it is still this one's).
    /// Idempotent; a store that cannot be reached is `RuntimeError` (the
    /// entry then expires with its lease).
    pub fn withdraw(&mut self) -> Result<()> {
        let Some(keeper) = self.keeper.take() else {
            return Ok(());
        };
        *self.stop.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.stop.1.notify_all();
        match keeper.join() {
            Ok(Some(lease)) => self.directory.withdraw(&self.name, &lease),
            Ok(None) => Ok(()),
            Err(_) => Err(status!(
                RuntimeError,
                "the directory keeper of {} panicked",
                self.name
            )),
        }
    }
}

impl Drop for Publication {
    fn drop(&mut self) {
        if let Err(e) = self.withdraw() {
            warn!(
                "withdrawing {} from directory {}: {}",
                Escaped(&self.name),
                self.directory.url(),
                e.message()
            );
        }
    }
}

/// The keeper: renews (or publishes again) every `ttl / 3` until stopped;
/// returns the lease it holds then.
fn keep(dir: &Directory, entry: &Entry, ttl: Duration, lease: Lease, stop: &Stop) -> Option<Lease> {
    let name = Escaped(&entry.name);
    let mut lease = Some(lease);
    let mut failing = false;
    loop {
        {
            let (flag, cv) = &**stop;
            let guard = flag.lock().unwrap_or_else(|p| p.into_inner());
            let (guard, _) = cv
                .wait_timeout_while(guard, ttl / 3, |stopped| !*stopped)
                .unwrap_or_else(|p| p.into_inner());
            if *guard {
                return lease;
            }
        }
        let step = match &lease {
            Some(l) => dir.renew(&entry.name, l).map(|alive| {
                if !alive {
                    warn!(segment = %name, "entry expired in directory {}: publishing it again", dir.url());
                    lease = None;
                }
            }),
            None => Ok(()),
        };
        let step = step.and_then(|()| {
            if lease.is_none() {
                lease = Some(dir.publish(entry, ttl)?);
                info!(segment = %name, "published again in directory {}", dir.url());
            }
            Ok(())
        });
        match step {
            Ok(()) if failing => {
                info!(segment = %name, "directory {} answers again", dir.url());
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                warn!(segment = %name, "directory {}: {} (retrying every {:?})", dir.url(), e.message(), ttl / 3);
                failing = true;
            }
            Err(_) => {}
        }
    }
}
