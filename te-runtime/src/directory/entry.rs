//! [`Entry`]: what the directory holds for one segment, as JSON.

use std::net::SocketAddr;

use serde_json::{json, Value};
use te_proto::text::Escaped;
use te_proto::{status, Result};

/// Version of the entry's layout; an entry of another version is refused.
const VERSION: u64 = 1;

/// What a peer needs to connect to a segment, published under its name
/// (docs/PROTOCOL.md 16.2). Only where to connect: the handshake
/// authenticates whoever answers there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The segment name.
    pub name: String,
    /// Where it accepts TCP connections (the same-host path is negotiated over them).
    pub tcp: SocketAddr,
    /// The paths it offers: `tcp`, and `shm` when it offers the same-host path.
    pub paths: Vec<String>,
    /// Where its memory lives (`cpu`, `sim:N`, ...).
    pub location: String,
    /// The host it runs on (its node name).
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Random per engine: tells a restarted engine of the same name from the old one.
    pub instance: String,
}

impl Entry {
    /// Who holds the name, for messages: `pid 12 on node-a at 10.0.0.1:5000`.
    pub fn holder(&self) -> String {
        format!("pid {} on {} at {}", self.pid, Escaped(&self.host), self.tcp)
    }

    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        json!({
            "version": VERSION,
            "name": self.name,
            "endpoints": {"tcp": self.tcp.to_string()},
            "paths": self.paths,
            "location": self.location,
            "host": self.host,
            "pid": self.pid,
            "instance": self.instance,
        })
        .to_string()
        .into_bytes()
    }

    /// Reads stored bytes: `RuntimeError` naming what is missing or wrong.
    /// Fields it does not know are ignored (later versions may add some).
    pub fn decode(bytes: &[u8]) -> Result<Entry> {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| status!(RuntimeError, "entry is not JSON: {e}"))?;
        let text = |field: &str, v: Option<&Value>| -> Result<String> {
            v.and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| status!(RuntimeError, "entry has no text field {field:?}"))
        };
        match v.get("version").and_then(Value::as_u64) {
            Some(VERSION) => {}
            other => {
                return Err(status!(
                    RuntimeError,
                    "entry version {other:?}, te reads {VERSION}"
                ))
            }
        }
        let tcp = text("endpoints.tcp", v.pointer("/endpoints/tcp"))?;
        let tcp = tcp
            .parse()
            .map_err(|_| status!(RuntimeError, "entry endpoint {tcp:?} is not ip:port"))?;
        let paths = v
            .get("paths")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        Ok(Entry {
            name: text("name", v.get("name"))?,
            tcp,
            paths,
            location: text("location", v.get("location")).unwrap_or_else(|_| "cpu".into()),
            host: text("host", v.get("host")).unwrap_or_default(),
            pid: v.get("pid").and_then(Value::as_u64).map_or(0, |p| p as u32),
            instance: text("instance", v.get("instance")).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            name: "prefill-3".into(),
            tcp: "10.0.0.1:5000".parse().unwrap(),
            paths: vec!["tcp".into(), "shm".into()],
            location: "cpu".into(),
            host: "node-a".into(),
            pid: 12,
            instance: "ab12".into(),
        }
    }

    #[test]
    fn entries_round_trip() {
        let e = entry();
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
        assert_eq!(e.holder(), "pid 12 on node-a at 10.0.0.1:5000");
    }

    #[test]
    fn bad_entries_name_what_is_wrong() {
        for (bytes, says) in [
            (&b"not json"[..], "not JSON"),
            (br#"{"version": 2}"#, "version Some(2)"),
            (br#"{"version": 1, "name": "a"}"#, "endpoints.tcp"),
            (
                br#"{"version": 1, "name": "a", "endpoints": {"tcp": "x\ny"}}"#,
                "\"x\\ny\" is not ip:port",
            ),
            (
                br#"{"version": 1, "endpoints": {"tcp": "1.2.3.4:5"}}"#,
                "\"name\"",
            ),
        ] {
            let e = Entry::decode(bytes).unwrap_err();
            assert!(e.message().contains(says), "{}", e.message());
        }
    }

    #[test]
    fn a_peers_host_name_is_escaped_in_messages() {
        let e = Entry {
            host: "evil\n[ERROR] forged".into(),
            ..entry()
        };
        assert!(!e.holder().contains('\n'));
    }
}
