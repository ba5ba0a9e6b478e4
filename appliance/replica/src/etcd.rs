//! The arbiter's register in etcd, as etcd v3's JSON gateway (`/v3/kv/range`, `/v3/kv/txn`)
//! wants it: the requests for each `ft::shared::StorageOp` and the reading of the answers,
//! for every driver (the hosted replica over std sockets, the appliance over smoltcp).
//!
//! The record is one key holding `ArbiterRecord::to_bytes`. Reads are etcd's default
//! linearizable ranges; the test-and-set is one transaction comparing the key's modification
//! revision (0 for a key that does not exist yet) before the put. The gateway writes proto3
//! JSON: int64 fields are strings, and `false` is left out (a failed compare has no
//! `succeeded`).
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use understudy_ft::arbiter::ArbiterRecord;
use understudy_ft::shared::{Revision, StorageOp, StorageResult};

/// One request to the gateway: a POST of `body` (JSON) to `path`.
pub struct Request {
    pub path: &'static str,
    pub body: String,
}

/// The request that carries out `op` on `key`.
pub fn request(op: StorageOp, key: &str) -> Request {
    let key = BASE64.encode(key);
    match op {
        StorageOp::Read => Request {
            path: "/v3/kv/range",
            body: serde_json::json!({ "key": key }).to_string(),
        },
        StorageOp::CompareAndPut { expected, record } => Request {
            path: "/v3/kv/txn",
            body: serde_json::json!({
                "compare": [{
                    "key": key,
                    "result": "EQUAL",
                    "target": "MOD",
                    "mod_revision": expected.0.to_string(),
                }],
                "success": [{
                    "request_put": { "key": key, "value": BASE64.encode(record.to_bytes()) }
                }],
            })
            .to_string(),
        },
    }
}

/// What an answer body to `op` says; `None` when it is not an answer of that kind (another
/// server, or a damaged record): the driver treats that as no answer.
pub fn answer(op: StorageOp, body: &[u8]) -> Option<StorageResult> {
    let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    let header = answer.get("header")?;
    match op {
        StorageOp::Read => {
            let Some(kv) = answer.get("kvs").and_then(|kvs| kvs.get(0)) else {
                // No key yet: a new pair, and the revision a first write must find.
                return Some(StorageResult::Read {
                    record: None,
                    revision: Revision(0),
                });
            };
            let revision = number(kv.get("mod_revision")?)?;
            let value = BASE64
                .decode(kv.get("value").and_then(|v| v.as_str()).unwrap_or(""))
                .ok()?;
            let record = ArbiterRecord::from_bytes(&value).ok()?;
            Some(StorageResult::Read {
                record: Some(record),
                revision: Revision(revision),
            })
        }
        StorageOp::CompareAndPut { .. } => {
            if answer.get("succeeded").and_then(|v| v.as_bool()) == Some(true) {
                Some(StorageResult::Written {
                    revision: Revision(number(header.get("revision")?)?),
                })
            } else {
                Some(StorageResult::CompareFailed)
            }
        }
    }
}

/// An int64 field, which proto3's JSON writes as a string.
fn number(value: &serde_json::Value) -> Option<u64> {
    match value {
        serde_json::Value::String(text) => text.parse().ok(),
        serde_json::Value::Number(number) => number.as_u64(),
        _ => None,
    }
}

/// The HTTP/1.1 bytes of `request` to `host` (`A.B.C.D:PORT`), closing after the answer.
pub fn http_post(host: &str, request: &Request) -> Vec<u8> {
    format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{}",
        request.path,
        request.body.len(),
        request.body
    )
    .into_bytes()
}

/// The body of a complete HTTP/1.1 answer whose status is 200; `None` while the answer is
/// incomplete or when it is not a 200 with a length.
pub fn http_body(answer: &[u8]) -> Option<&[u8]> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = core::str::from_utf8(&answer[..end]).ok()?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let length: usize = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())
            .flatten()
    })?;
    answer.get(end + 4..end + 4 + length)
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_ft::{Epoch, NodeId};

    #[test]
    fn gateway_answers_are_read_as_proto3_json_writes_them() {
        let record = ArbiterRecord {
            epoch: Epoch(2),
            owner: NodeId(2),
        };
        let range = format!(
            "{{\"header\":{{\"revision\":\"9\"}},\"kvs\":[{{\"key\":\"eA==\",\"mod_revision\":\"7\",\"value\":\"{}\"}}],\"count\":\"1\"}}",
            BASE64.encode(record.to_bytes())
        );
        assert_eq!(
            answer(StorageOp::Read, range.as_bytes()),
            Some(StorageResult::Read {
                record: Some(record),
                revision: Revision(7)
            })
        );
        assert_eq!(
            answer(StorageOp::Read, br#"{"header":{"revision":"9"}}"#),
            Some(StorageResult::Read {
                record: None,
                revision: Revision(0)
            })
        );
        let put = StorageOp::CompareAndPut {
            expected: Revision(7),
            record,
        };
        assert_eq!(
            answer(put, br#"{"header":{"revision":"10"},"succeeded":true}"#),
            Some(StorageResult::Written {
                revision: Revision(10)
            })
        );
        assert_eq!(
            answer(put, br#"{"header":{"revision":"10"}}"#),
            Some(StorageResult::CompareFailed)
        );
        assert_eq!(
            answer(
                StorageOp::Read,
                br#"{"header":{},"kvs":[{"mod_revision":"1","value":"AAAA"}]}"#
            ),
            None
        );
        assert_eq!(answer(StorageOp::Read, b"<html>"), None);
    }

    #[test]
    fn http_answers_are_complete_only_with_their_whole_body() {
        let whole =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(http_body(whole), Some(&b"{}"[..]));
        assert_eq!(http_body(&whole[..whole.len() - 1]), None);
        assert_eq!(
            http_body(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"),
            None
        );
        let post = http_post("10.0.0.21:2379", &request(StorageOp::Read, "/p/arbiter"));
        assert_eq!(
            core::str::from_utf8(&post).unwrap(),
            "POST /v3/kv/range HTTP/1.1\r\nHost: 10.0.0.21:2379\r\nContent-Type: application/json\r\n\
             Content-Length: 26\r\nConnection: close\r\n\r\n{\"key\":\"L3AvYXJiaXRlcg==\"}"
        );
    }
}
