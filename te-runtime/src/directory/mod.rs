//! The directory: where a named segment runs now, kept in etcd or Redis.
//!
//! Without a directory (the default) a segment's name is its `host:port`
//! and nothing is stored anywhere. With one, an engine publishes an
//! [`Entry`] under its segment name, `{prefix}/segments/{name}`, with a lease
//! (etcd) or a time to live (Redis) that a [`Publication`] renews; a crashed
//! engine's entry expires, a clean finalize removes it at once. Peers look
//! the name up to learn where to connect, and nothing more: the handshake
//! (and the shared secret, when set) still authenticates whoever answers.
//! The key layout is docs/PROTOCOL.md section 16.
//!
//! Every operation opens its own connection to the store and is bounded by
//! the timeout given to [`Directory::open`], so an outage of the store is a
//! `RuntimeError` naming it, never a hang.
//!
//! ```no_run
//! use std::time::Duration;
//! use te_runtime::directory::Directory;
//!
//! let dir = Directory::open("redis://127.0.0.1:6379", "te", Duration::from_secs(2))?;
//! if let Some(entry) = dir.lookup("prefill-3")? {
//!     println!("prefill-3 listens on {} ({})", entry.tcp, entry.holder());
//! }
//! # Ok::<(), te_runtime::Status>(())
//! ```

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use te_proto::text::Escaped;
use te_proto::{status, Result};

mod entry;
mod etcd;
mod http;
mod publication;
mod redis;

pub use self::entry::Entry;
pub use self::publication::Publication;

/// Longest key prefix accepted.
pub const PREFIX_MAX: usize = 128;
/// The most bytes of a reply read from a store.
const REPLY_MAX: usize = 1 << 20;

/// How a store answered a claim on a key.
enum Claim {
    /// The key is ours, under this lease.
    Ours(Lease),
    /// Another holder has it: its value.
    Held(Vec<u8>),
}

/// The claim of one key: what renews it and what proves it is ours.
#[derive(Debug)]
pub struct Lease {
    /// etcd's lease id (0 for Redis).
    id: i64,
    /// The value we stored: Redis renews and removes only while the key holds it.
    value: Vec<u8>,
    ttl: Duration,
}

/// One store's operations on keys. Every call is bounded by the store's timeout.
trait Store: Send + Sync {
    /// Puts `value` under `key` unless the key exists, with a lease of `ttl`.
    fn claim(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Claim>;
    /// Extends the lease; `Ok(false)` when it is gone (expired, or the key no longer ours).
    fn renew(&self, key: &str, lease: &Lease) -> Result<bool>;
    /// The value under `key`.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Removes `key` if it is still ours.
    fn release(&self, key: &str, lease: &Lease) -> Result<()>;
}

/// A connection to a directory store, chosen by URL: `etcd://host:port[,host:port...]`
/// (etcd v3, through its JSON gateway) or `redis://host:port[/db]`.
pub struct Directory {
    url: String,
    prefix: String,
    store: Box<dyn Store>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Checks a directory URL and key prefix without connecting: `Invalid` naming the bad part.
pub fn check(url: &str, prefix: &str) -> Result<()> {
    parse(url, Duration::from_secs(1)).map(drop)?;
    check_prefix(prefix)
}

fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.len() > PREFIX_MAX || prefix.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(status!(
            Invalid,
            "directory prefix {:?} must be at most {PREFIX_MAX} bytes without spaces",
            prefix
        ));
    }
    Ok(())
}

/// `host:port` with a port, or `Invalid` naming `what`.
fn host_port<'a>(s: &'a str, url: &str) -> Result<&'a str> {
    match s.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0) => Ok(s),
        _ => Err(status!(Invalid, "directory {url:?}: {s:?} is not host:port")),
    }
}

fn parse(url: &str, timeout: Duration) -> Result<Box<dyn Store>> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        status!(
            Invalid,
            "directory {url:?} is not etcd://host:port or redis://host:port[/db]"
        )
    })?;
    match scheme {
        "etcd" => {
            let endpoints = rest
                .split(',')
                .map(|e| host_port(e, url).map(str::to_string))
                .collect::<Result<Vec<_>>>()?;
            Ok(Box::new(etcd::Etcd::new(endpoints, timeout)))
        }
        "redis" => {
            let (addr, db) = match rest.split_once('/') {
                None => (rest, 0),
                Some((a, "")) => (a, 0),
                Some((a, d)) => (
                    a,
                    d.parse::<u32>()
                        .map_err(|_| status!(Invalid, "directory {url:?}: database {d:?} is not a number"))?,
                ),
            };
            Ok(Box::new(redis::Redis::new(
                host_port(addr, url)?.to_string(),
                db,
                timeout,
            )))
        }
        other => Err(status!(
            Invalid,
            "directory {url:?}: scheme {other:?} is not etcd or redis"
        )),
    }
}

impl Directory {
    /// Opens the directory at `url` with keys under `prefix` (a cluster's
    /// namespace; `te` by default in [`EngineConfig`](crate::EngineConfig)); every
    /// operation on the store gives up after `timeout`. Does not connect yet.
    pub fn open(url: &str, prefix: &str, timeout: Duration) -> Result<Directory> {
        check_prefix(prefix)?;
        Ok(Directory {
            url: url.to_string(),
            prefix: prefix.to_string(),
            store: parse(url, timeout)?,
        })
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key of segment `name`: `{prefix}/segments/{name}`.
    pub fn key(&self, name: &str) -> String {
        format!("{}/segments/{name}", self.prefix)
    }

    /// Where segment `name` runs, if it is published; a store that cannot
    /// be reached is `RuntimeError` naming it.
    pub fn lookup(&self, name: &str) -> Result<Option<Entry>> {
        match self.store.get(&self.key(name))? {
            None => Ok(None),
            Some(v) => Entry::decode(&v).map(Some).map_err(|e| {
                status!(
                    RuntimeError,
                    "directory entry of {}: {}",
                    Escaped(name),
                    e.message()
                )
            }),
        }
    }

    /// Publishes `entry` under its name with a lease of `ttl`, unless
    /// another holder has the name: `Invalid` naming it.
    pub fn publish(&self, entry: &Entry, ttl: Duration) -> Result<Lease> {
        let key = self.key(&entry.name);
        for _ in 0..3 {
            match self.store.claim(&key, &entry.encode(), ttl)? {
                Claim::Ours(lease) => return Ok(lease),
                // Held when claimed, gone when read: the holder just left; claim again.
                Claim::Held(v) if v.is_empty() => {}
                Claim::Held(v) => {
                    let holder =
                        Entry::decode(&v).map_or_else(|_| "an entry te cannot read".into(), |e| e.holder());
                    return Err(status!(
                        Invalid,
                        "segment name {} is held by {holder}",
                        Escaped(&entry.name)
                    ));
                }
            }
        }
        Err(status!(
            RuntimeError,
            "directory {}: claim of {key} did not settle",
            self.url
        ))
    }

    /// Extends the lease of `name`; `Ok(false)` when the entry is gone
    /// (expired during an outage), so that it must be published again.
    pub fn renew(&self, name: &str, lease: &Lease) -> Result<bool> {
        self.store.renew(&self.key(name), lease)
    }

    /// Removes the entry of `name` if it is still this lease's.
    pub fn withdraw(&self, name: &str, lease: &Lease) -> Result<()> {
        self.store.release(&self.key(name), lease)
    }
}

/// Opens a connection to `host:port`, trying each address it resolves to,
/// with `timeout` for the connect and for every read and write after it.
fn dial(endpoint: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "resolves to no address");
    for addr in endpoint.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The error of a store that failed: `RuntimeError` naming the store and the step.
fn store_error(store: &str, what: &str, why: impl std::fmt::Display) -> te_proto::Status {
    status!(RuntimeError, "directory {store}: {what}: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_without_connecting() {
        assert!(check("etcd://127.0.0.1:2379", "te").is_ok());
        assert!(check("etcd://a:1,b:2", "te").is_ok());
        assert!(check("redis://localhost:6379/3", "cluster-a").is_ok());
        assert!(check("redis://localhost:6379/", "").is_ok());
        for (url, says) in [
            ("etcd:/x", "is not etcd://"),
            ("http://h:1", "scheme \"http\""),
            ("etcd://h", "\"h\" is not host:port"),
            ("etcd://h:1,,", "\"\" is not host:port"),
            ("redis://h:0", "is not host:port"),
            ("redis://h:1/x", "database \"x\""),
        ] {
            let e = check(url, "te").unwrap_err();
            assert_eq!(e.code(), te_proto::ErrorCode::Invalid, "{url}");
            assert!(e.message().contains(says), "{url}: {}", e.message());
        }
        assert!(check("redis://h:1", "a b")
            .unwrap_err()
            .message()
            .contains("prefix"));
    }

    #[test]
    fn keys_are_namespaced_by_the_prefix() {
        let d = Directory::open("redis://h:1", "cluster-a", Duration::from_secs(1)).unwrap();
        assert_eq!(d.key("prefill-3"), "cluster-a/segments/prefill-3");
    }
}
