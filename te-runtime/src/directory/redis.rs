//! Redis through RESP2: `SET NX PX` claims a key, short Lua scripts renew
//! and remove it only while it holds our value (docs/DESIGN.md says why
//! not the redis crate).

use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use te_proto::text::Escaped;
use te_proto::Result;

use super::{dial, store_error, Claim, Lease, Store, REPLY_MAX};

/// Extends the key's time to live if it still holds our value.
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                     return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
/// Deletes the key if it still holds our value.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                       return redis.call('DEL', KEYS[1]) else return 0 end";

/// A Redis server and database.
pub(super) struct Redis {
    addr: String,
    db: u32,
    timeout: Duration,
    /// `redis://host:port/db`, for messages.
    name: String,
}

/// A RESP2 reply.
#[derive(Debug, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

/// Most elements of an array reply read (te's commands get none).
const ARRAY_MAX: usize = 16;

fn read_reply(r: &mut impl BufRead, depth: u32) -> std::io::Result<Reply> {
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let mut line = Vec::new();
    r.by_ref().take(4096).read_until(b'\n', &mut line)?;
    if line.len() < 3 || !line.ends_with(b"\r\n") {
        return Err(bad("reply line not ended by CRLF"));
    }
    let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let int = || text.parse::<i64>().map_err(|_| bad("bad number in reply"));
    match line[0] {
        b'+' => Ok(Reply::Simple(text)),
        b'-' => Ok(Reply::Error(text)),
        b':' => Ok(Reply::Int(int()?)),
        b'$' => match int()? {
            -1 => Ok(Reply::Bulk(None)),
            n if (0..=REPLY_MAX as i64).contains(&n) => {
                let mut v = vec![0; n as usize + 2];
                r.read_exact(&mut v)?;
                v.truncate(n as usize);
                Ok(Reply::Bulk(Some(v)))
            }
            _ => Err(bad("bulk reply length out of range")),
        },
        b'*' if depth == 0 => match int()? {
            -1 => Ok(Reply::Array(Vec::new())),
            n if (0..=ARRAY_MAX as i64).contains(&n) => (0..n)
                .map(|_| read_reply(r, depth + 1))
                .collect::<std::io::Result<_>>()
                .map(Reply::Array),
            _ => Err(bad("array reply length out of range")),
        },
        _ => Err(bad("not a RESP reply")),
    }
}

/// A command in RESP: an array of bulk strings.
fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

impl Redis {
    pub(super) fn new(addr: String, db: u32, timeout: Duration) -> Redis {
        let name = format!("redis://{addr}/{db}");
        Redis {
            addr,
            db,
            timeout,
            name,
        }
    }

    /// Runs one command (after `SELECT db` when the database is not 0) on a
    /// connection of its own; a Redis error reply is `RuntimeError` naming it.
    fn command(&self, what: &str, args: &[&[u8]]) -> Result<Reply> {
        let fail = |e: &dyn std::fmt::Display| store_error(&self.name, what, e);
        let mut s = dial(&self.addr, self.timeout).map_err(|e| fail(&e))?;
        let mut out = Vec::new();
        let db = self.db.to_string();
        if self.db != 0 {
            encode(&mut out, &[b"SELECT", db.as_bytes()]);
        }
        encode(&mut out, args);
        s.write_all(&out).map_err(|e| fail(&e))?;
        let mut r = BufReader::new(s);
        if self.db != 0 {
            if let Reply::Error(e) = read_reply(&mut r, 0).map_err(|e| fail(&e))? {
                return Err(fail(&format_args!("SELECT {db}: {}", Escaped(&e))));
            }
        }
        match read_reply(&mut r, 0).map_err(|e| fail(&e))? {
            Reply::Error(e) => Err(fail(&Escaped(&e))),
            reply => Ok(reply),
        }
    }

    fn unexpected(&self, what: &str, reply: &Reply) -> te_proto::Status {
        let shown: String = format!("{reply:?}").chars().take(60).collect();
        store_error(
            &self.name,
            what,
            format_args!("unexpected reply {}", Escaped(&shown)),
        )
    }
}

impl Store for Redis {
    fn claim(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Claim> {
        let ms = ttl.as_millis().max(1).to_string();
        match self.command(
            "SET NX",
            &[b"SET", key.as_bytes(), value, b"NX", b"PX", ms.as_bytes()],
        )? {
            Reply::Simple(ok) if ok == "OK" => Ok(Claim::Ours(Lease {
                id: 0,
                value: value.to_vec(),
                ttl,
            })),
            Reply::Bulk(None) => Ok(Claim::Held(self.get(key)?.unwrap_or_default())),
            other => Err(self.unexpected("SET NX", &other)),
        }
    }

    fn renew(&self, key: &str, lease: &Lease) -> Result<bool> {
        let ms = lease.ttl.as_millis().max(1).to_string();
        match self.command(
            "renew",
            &[
                b"EVAL",
                RENEW.as_bytes(),
                b"1",
                key.as_bytes(),
                &lease.value,
                ms.as_bytes(),
            ],
        )? {
            Reply::Int(n) => Ok(n == 1),
            other => Err(self.unexpected("renew", &other)),
        }
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.command("GET", &[b"GET", key.as_bytes()])? {
            Reply::Bulk(v) => Ok(v),
            other => Err(self.unexpected("GET", &other)),
        }
    }

    fn release(&self, key: &str, lease: &Lease) -> Result<()> {
        match self.command(
            "release",
            &[b"EVAL", RELEASE.as_bytes(), b"1", key.as_bytes(), &lease.value],
        )? {
            Reply::Int(_) => Ok(()),
            other => Err(self.unexpected("release", &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> std::io::Result<Reply> {
        read_reply(&mut &bytes[..], 0)
    }

    #[test]
    fn replies_are_read() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Reply::Simple("OK".into()));
        assert_eq!(parse(b"-ERR no\r\n").unwrap(), Reply::Error("ERR no".into()));
        assert_eq!(parse(b":1\r\n").unwrap(), Reply::Int(1));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Reply::Bulk(None));
        assert_eq!(
            parse(b"$3\r\nabc\r\n").unwrap(),
            Reply::Bulk(Some(b"abc".to_vec()))
        );
        assert_eq!(
            parse(b"*2\r\n:1\r\n$1\r\nx\r\n").unwrap(),
            Reply::Array(vec![Reply::Int(1), Reply::Bulk(Some(b"x".to_vec()))])
        );
    }

    #[test]
    fn bad_replies_are_errors_not_panics() {
        for r in [
            &b""[..],
            b"\r\n",
            b"+OK",
            b"$99999999999\r\n",
            b"$-2\r\n",
            b"$5\r\nab\r\n",
            b"*1000\r\n",
            b"*1\r\n*1\r\n:1\r\n",
            b":x\r\n",
            b"HTTP/1.1 200 OK\r\n",
        ] {
            assert!(parse(r).is_err(), "{:?}", String::from_utf8_lossy(r));
        }
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[b"GET", b"k"]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }
}
