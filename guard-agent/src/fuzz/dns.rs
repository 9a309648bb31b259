//! DNS messages, as the kernel copies them from an agent's sockets: built with hickory (names
//! of awkward labels, CNAME chains and loops, many sections, EDNS), then often mutated,
//! truncated or framed for TCP. A message we built whole parses back to what we built; any
//! message that parses gives normalised names, and its resolved addresses come from CNAME
//! chains that start at a question and stay within the hop limit.
use std::{
    collections::HashSet,
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query},
    rr::{
        DNSClass, Name, RData, Record, RecordType,
        rdata::{A, AAAA, CNAME, TXT},
    },
};

use super::{Rng, Target, mutate};
use crate::dns::{self, AnswerData, HostPattern, MAX_CNAME_HOPS, Transport, TunnelDetector, TunnelLimits};

#[derive(Debug)]
pub struct Input {
    payload: Vec<u8>,
    transport: Transport,
    complete: bool,
    /// The (lowercased) question names, when the payload is a message exactly as built.
    intact: Option<Vec<String>>,
}

const LABELS: &[&str] = &["www", "example", "com", "cdn", "a", "xn--bcher-kva", "_tcp", "-", "api", "anthropic", "net", "e1", "x"];

fn label(rng: &mut Rng) -> Vec<u8> {
    match rng.below(6) {
        0 => {
            let n = 1 + rng.below(63);
            rng.bytes(n)
        }
        1 => b"abcdefghijklmnopqrstuvwxyz234567".iter().cycle().skip(rng.below(32)).take(1 + rng.below(63)).copied().collect(),
        2 => rng.pick(LABELS).to_ascii_uppercase().into_bytes(),
        _ => rng.pick(LABELS).as_bytes().to_vec(),
    }
}

/// A name from a small pool (so CNAMEs chain and loop), or a fresh odd one.
fn name(rng: &mut Rng, pool: &[Name]) -> Name {
    if !pool.is_empty() && rng.chance(2, 3) {
        return rng.pick(pool).clone();
    }
    let labels: Vec<Vec<u8>> = (0..rng.below(6)).map(|_| label(rng)).collect();
    Name::from_labels(labels).unwrap_or_else(|_| Name::root())
}

/// A message on the wire (before any framing or damage), and its question names.
fn message(rng: &mut Rng) -> (Vec<u8>, Vec<String>) {
    let pool: Vec<Name> = (0..1 + rng.below(5)).map(|_| name(rng, &[])).collect();
    let id = rng.next_u64() as u16;
    let mut m = if rng.chance(4, 5) { Message::response(id, OpCode::Query) } else { Message::new(id, MessageType::Query, OpCode::Query) };
    let mut asked = Vec::new();
    for _ in 0..rng.size(2).min(40) + usize::from(rng.chance(9, 10)) {
        let n = name(rng, &pool);
        asked.push(n.clone());
        m.add_query(Query::query(n, *rng.pick(&[RecordType::A, RecordType::AAAA, RecordType::TXT, RecordType::ANY])));
    }
    let answers = rng.size(6).min(200);
    for _ in 0..answers {
        let owner = name(rng, &pool);
        let ttl = rng.edge_u64() as u32;
        let data = match rng.below(6) {
            0 | 1 => RData::A(A(Ipv4Addr::from(rng.next_u64() as u32))),
            2 => RData::AAAA(AAAA(Ipv6Addr::from(u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())))),
            3 | 4 => RData::CNAME(CNAME(name(rng, &pool))),
            _ => RData::TXT(TXT::new(vec![mutate::awkward(rng)])),
        };
        let mut r = Record::from_rdata(owner, ttl, data);
        if rng.chance(1, 15) {
            r.dns_class = DNSClass::CH;
        }
        m.add_answer(r);
    }
    if rng.chance(1, 3) {
        m.set_edns(Edns::new());
    }
    let names = asked.iter().map(|n| n.to_ascii().to_ascii_lowercase()).collect();
    match m.to_vec() {
        Ok(bytes) => (bytes, names),
        // Too long for hickory to write: a header alone.
        Err(_) => (vec![0; 12], Vec::new()),
    }
}

/// A DNS payload as a record would carry it (for the ring-buffer target).
pub fn wire(rng: &mut Rng) -> Vec<u8> {
    let (mut bytes, _) = message(rng);
    if rng.chance(1, 2) {
        mutate::mutate_bytes(rng, &mut bytes, 4);
    }
    bytes
}

fn generate(rng: &mut Rng) -> Input {
    let (mut bytes, names) = message(rng);
    let mut intact = Some(names);
    if rng.chance(2, 3) {
        intact = None;
        match rng.below(4) {
            0 => {
                // A compression pointer to itself or forwards: loops hickory must refuse.
                if bytes.len() > 14 {
                    let at = 12 + rng.below(bytes.len() - 13);
                    let to = rng.below(bytes.len()) as u16;
                    bytes[at] = 0xc0 | (to >> 8) as u8 & 0x3f;
                    bytes[at + 1] = to as u8;
                }
            }
            1 => {
                // Section counts that disagree with the sections.
                if bytes.len() >= 12 {
                    let at = 4 + 2 * rng.below(4);
                    bytes[at..at + 2].copy_from_slice(&(rng.edge_u64() as u16).to_be_bytes());
                }
            }
            _ => mutate::mutate_bytes(rng, &mut bytes, 8),
        }
    }
    let transport = if rng.chance(1, 3) { Transport::Tcp } else { Transport::Udp };
    if transport == Transport::Tcp {
        if bytes.len() > usize::from(u16::MAX) {
            intact = None;
        }
        let len = if intact.is_some() || rng.chance(3, 4) { bytes.len() as u16 } else { rng.edge_u64() as u16 };
        bytes.splice(0..0, len.to_be_bytes());
        if rng.chance(1, 4) {
            // A second message behind the first, as TCP may deliver.
            bytes.extend(message(rng).0);
        }
    }
    let mut complete = true;
    if rng.chance(1, 5) {
        // The kernel copied only a prefix.
        intact = None;
        complete = false;
        bytes.truncate(rng.below(bytes.len() + 1));
    }
    Input { payload: bytes, transport, complete, intact }
}

fn normalised(name: &str) -> bool {
    !name.ends_with('.') && name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'\\'))
}

fn check(input: &Input) {
    let parsed = dns::parse(&input.payload, input.transport, input.complete);
    let msg = match (parsed, &input.intact) {
        (Ok(m), _) => m,
        (Err(e), Some(_)) => panic!("a message hickory wrote does not parse: {e}"),
        (Err(e), None) => {
            assert!(!e.to_string().contains('\n'));
            return;
        }
    };
    if let Some(names) = &input.intact {
        let got: Vec<&str> = msg.questions.iter().map(|q| q.name.as_str()).collect();
        // hickory writes `a.b.` and `.` for the root; we name them without the dot.
        let want: Vec<&str> = names.iter().map(|n| n.strip_suffix('.').unwrap_or(n)).collect();
        if want.iter().all(|n| n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')) {
            assert_eq!(got, want, "question names changed on the way through");
        }
    }
    for name in msg.questions.iter().map(|q| &q.name).chain(msg.answers.iter().map(|a| &a.name)) {
        assert!(normalised(name), "name {name:?} is not normalised");
    }
    for a in &msg.answers {
        if let AnswerData::Cname(t) = &a.data {
            assert!(normalised(t), "CNAME target {t:?} is not normalised");
        }
        assert!(a.ttl <= i32::MAX as u32);
    }
    let asked: HashSet<&str> = msg.questions.iter().map(|q| q.name.as_str()).collect();
    let mut pairs = HashSet::new();
    for r in msg.resolved() {
        assert!(asked.contains(r.asked.as_str()), "{} resolved but not asked", r.asked);
        assert_eq!(r.chain.first(), Some(&r.asked));
        assert!(r.chain.len() <= MAX_CNAME_HOPS + 1, "a chain of {} names", r.chain.len());
        assert!(pairs.insert((r.asked.clone(), r.addr)), "{} -> {} given twice", r.asked, r.addr);
    }
    // What the daemon does with the names next: tunnel shapes and host patterns.
    let mut tunnels = TunnelDetector::new(TunnelLimits::default(), 16);
    let now = Instant::now();
    for (i, q) in msg.questions.iter().enumerate() {
        let _ = tunnels.observe(1, &q.name, now + Duration::from_millis(i as u64));
        let _ = dns::base_domain(&q.name);
        if let Ok(p) = HostPattern::parse(&q.name) {
            assert!(p.matches(&q.name), "pattern {q:?} does not match its own name");
        }
    }
}

#[test]
fn messages() {
    Target { name: "dns::messages", generate, check }.run();
}
