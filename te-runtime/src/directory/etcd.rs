//! etcd v3 through its JSON gateway (`/v3/...`, etcd 3.4 and later): keys
//! and values base64, 64-bit numbers as strings (docs/DESIGN.md says why
//! not a gRPC client).

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use te_proto::text::Escaped;
use te_proto::Result;

use super::{http, store_error, Claim, Lease, Store};

/// An etcd cluster: the endpoints are tried in order until one answers.
pub(super) struct Etcd {
    endpoints: Vec<String>,
    timeout: Duration,
    /// `etcd://a:1,b:2`, for messages.
    name: String,
}

impl Etcd {
    pub(super) fn new(endpoints: Vec<String>, timeout: Duration) -> Etcd {
        let name = format!("etcd://{}", endpoints.join(","));
        Etcd {
            endpoints,
            timeout,
            name,
        }
    }

    /// One gateway call; the first endpoint that answers decides.
    fn call(&self, path: &str, body: Value) -> Result<Value> {
        let body = body.to_string().into_bytes();
        let mut last = String::from("no endpoint");
        for ep in &self.endpoints {
            match http::post(ep, path, &body, self.timeout) {
                Ok((200, reply)) => {
                    return serde_json::from_slice(&reply)
                        .map_err(|e| store_error(&self.name, path, format_args!("reply is not JSON: {e}")));
                }
                Ok((code, reply)) => {
                    let v: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
                    let msg = v.get("message").and_then(Value::as_str).unwrap_or("");
                    return Err(store_error(
                        &self.name,
                        path,
                        format_args!("HTTP {code} {}", Escaped(msg)),
                    ));
                }
                Err(e) => last = format!("{ep}: {e}"),
            }
        }
        Err(store_error(&self.name, path, last))
    }
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

/// A 64-bit number the gateway writes as a string (or, leniently, as a number).
fn int(v: Option<&Value>) -> Option<i64> {
    let v = v?;
    v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_i64())
}

/// The value of the first key in a range answer.
fn first_value(store: &str, range: &Value) -> Result<Option<Vec<u8>>> {
    let Some(kv) = range.get("kvs").and_then(|k| k.get(0)) else {
        return Ok(None);
    };
    let text = kv.get("value").and_then(Value::as_str).unwrap_or("");
    B64.decode(text)
        .map(Some)
        .map_err(|e| store_error(store, "range", format_args!("value is not base64: {e}")))
}

impl Store for Etcd {
    fn claim(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Claim> {
        let secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let grant = self.call("/v3/lease/grant", json!({ "TTL": secs }))?;
        let id = int(grant.get("ID")).ok_or_else(|| store_error(&self.name, "lease grant", "no lease ID"))?;
        let k = b64(key.as_bytes());
        let txn = self.call(
            "/v3/kv/txn",
            json!({
                "compare": [{"key": k, "target": "CREATE", "create_revision": "0"}],
                "success": [{"request_put": {"key": k, "value": b64(value), "lease": id.to_string()}}],
                "failure": [{"request_range": {"key": k}}],
            }),
        )?;
        if txn.get("succeeded").and_then(Value::as_bool) == Some(true) {
            return Ok(Claim::Ours(Lease {
                id,
                value: value.to_vec(),
                ttl,
            }));
        }
        let _ = self.call("/v3/lease/revoke", json!({ "ID": id.to_string() }));
        let range = txn
            .pointer("/responses/0/response_range")
            .cloned()
            .unwrap_or(Value::Null);
        Ok(Claim::Held(first_value(&self.name, &range)?.unwrap_or_default()))
    }

    fn renew(&self, _key: &str, lease: &Lease) -> Result<bool> {
        let r = self.call("/v3/lease/keepalive", json!({ "ID": lease.id.to_string() }))?;
        // A lease that is gone answers without a TTL (or with 0).
        Ok(int(r.pointer("/result/TTL")).unwrap_or(0) > 0)
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let r = self.call("/v3/kv/range", json!({ "key": b64(key.as_bytes()) }))?;
        first_value(&self.name, &r)
    }

    fn release(&self, _key: &str, lease: &Lease) -> Result<()> {
        // Revoking the lease deletes the keys attached to it: only ours.
        match self.call("/v3/lease/revoke", json!({ "ID": lease.id.to_string() })) {
            Err(e) if e.message().contains("lease not found") => Ok(()),
            r => r.map(drop),
        }
    }
}
