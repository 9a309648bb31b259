//! Control-socket requests: the bytes a client sends go through the same bounded line reader
//! and strict parser the socket tasks use. Every line gets a request or a one-line error; an
//! accepted request survives a round trip through its JSON form; an accepted launch names a
//! cgroup that stays below the agents' directory.
use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Rng, Target, mutate};
use crate::{
    control::{self, Kind, MAX_REQUEST, Request},
    verdict::VERDICT_NAMES,
};

#[derive(Debug)]
pub struct Input {
    bytes: Vec<u8>,
    kind: Kind,
    has_session: bool,
}

const OPS: &[&str] = &["status", "approve", "deny", "reload", "tail", "launch", "end", "Status", "", "metrics"];
const FIELDS: &[&str] = &["op", "id", "agent", "verdicts", "labels", "command", "keep_running", "x", ""];

fn text(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => (*rng.pick(&["coding-agent", "a", "..", ".hidden", "a/b", "a b", "é", "a\nb", "a\u{0}b", "-", "x.y_z"])).to_owned(),
        1 => (*rng.pick(&VERDICT_NAMES)).to_owned(),
        2 => {
            let n = rng.size(20);
            String::from_utf8_lossy(&rng.bytes(n)).into_owned()
        }
        _ => mutate::awkward(rng),
    }
}

fn value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 4 { 6 } else { 9 }) {
        0 => Value::Null,
        1 => json!(rng.chance(1, 2)),
        2 => json!(rng.edge_u64()),
        3 => json!(-(rng.below(1000) as i64)),
        4 => json!(rng.next_u64() as f64 / 7.0),
        5 => json!(text(rng)),
        6 => Value::Array((0..rng.below(6)).map(|_| value(rng, depth + 1)).collect()),
        7 => Value::Object((0..rng.below(6)).map(|_| (text(rng), value(rng, depth + 1))).collect()),
        _ => {
            // Nesting past serde_json's recursion limit.
            let n = rng.below(1000);
            serde_json::from_str(&format!("{}{}", "[".repeat(n), "]".repeat(n))).unwrap_or(Value::Null)
        }
    }
}

/// A request the daemon would accept (or nearly so).
fn request(rng: &mut Rng) -> Request {
    match rng.below(7) {
        0 => Request::Status {},
        1 => Request::Approve { id: rng.edge_u64() },
        2 => Request::Deny { id: rng.edge_u64() },
        3 => Request::Reload {},
        4 => Request::Tail {
            agent: rng.chance(1, 2).then(|| text(rng)),
            verdicts: (0..rng.size(3).min(40)).map(|_| (*rng.pick(&VERDICT_NAMES)).to_owned()).collect(),
        },
        5 => {
            let mut l = BTreeMap::new();
            for _ in 0..rng.size(4).min(40) {
                l.insert(text(rng), text(rng));
            }
            Request::Launch { agent: text(rng), labels: l, command: (0..rng.size(4).min(40)).map(|_| text(rng)).collect(), keep_running: rng.chance(1, 2) }
        }
        _ => Request::End {},
    }
}

fn line(rng: &mut Rng) -> Vec<u8> {
    let mut bytes = match rng.below(3) {
        0 => serde_json::to_vec(&request(rng)).unwrap_or_default(),
        1 => {
            let mut obj = serde_json::Map::new();
            if rng.chance(7, 8) {
                obj.insert("op".into(), json!(rng.pick(OPS)));
            }
            for _ in 0..rng.size(3).min(12) {
                obj.insert((*rng.pick(FIELDS)).to_owned(), value(rng, 0));
            }
            serde_json::to_vec(&Value::Object(obj)).unwrap_or_default()
        }
        _ => {
            let mut b = serde_json::to_vec(&request(rng)).unwrap_or_default();
            mutate::mutate_bytes(rng, &mut b, 6);
            b
        }
    };
    if rng.chance(1, 30) {
        // Longer than a request may be.
        bytes.resize(MAX_REQUEST + rng.below(3) - 1, b' ');
    }
    if rng.chance(9, 10) {
        bytes.push(b'\n');
    }
    bytes
}

fn generate(rng: &mut Rng) -> Input {
    let kind = if rng.chance(1, 2) { Kind::Admin } else { Kind::Launch };
    let mut bytes = Vec::new();
    for _ in 0..1 + rng.below(3) {
        bytes.extend(line(rng));
    }
    Input { bytes, kind, has_session: rng.chance(1, 4) }
}

fn check(input: &Input) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    rt.block_on(async {
        let mut reader = input.bytes.as_slice();
        let mut read = 0;
        loop {
            let line = match control::read_line(&mut reader).await {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(e) => {
                    one_line_error(&e);
                    break;
                }
            };
            read += line.len();
            assert!(line.len() <= MAX_REQUEST, "a line of {} bytes got through", line.len());
            assert!(read <= input.bytes.len());
            match control::parse(&line, input.kind, input.has_session) {
                Err(e) => one_line_error(&e),
                Ok(request) => accepted(&request, input.kind),
            }
        }
    });
}

/// Errors go back to the client on its line-based connection.
fn one_line_error(e: &str) {
    assert!(!e.is_empty());
    let response = control::error(e).to_string();
    assert!(!response.contains('\n'), "an error response spans lines: {response:?}");
}

fn accepted(request: &Request, kind: Kind) {
    // What the CLI would send for it parses back to the same request.
    let again = serde_json::to_string(request).expect("a request serialises");
    let back = control::parse(&again, kind, false).unwrap_or_else(|e| panic!("{again} does not parse back: {e}"));
    assert_eq!(format!("{back:?}"), format!("{request:?}"));
    match request {
        Request::Launch { agent, labels, .. } => {
            assert_eq!(kind, Kind::Launch, "a launch accepted on the admin socket");
            // What `launch` checks before it touches a cgroup.
            if crate::policy::valid_agent_name(agent) {
                assert!(!agent.contains('/') && agent != "." && agent != "..", "agent name {agent:?} escapes its cgroup directory");
            }
            let _ = crate::sessions::check_labels(labels);
        }
        Request::End {} => assert_eq!(kind, Kind::Launch),
        Request::Tail { verdicts, .. } => assert!(verdicts.iter().all(|v| VERDICT_NAMES.contains(&v.as_str()))),
        _ => assert_eq!(kind, Kind::Admin, "{request:?} accepted on the launch socket"),
    }
}

#[test]
fn requests() {
    Target { name: "control::requests", generate, check }.run();
}
