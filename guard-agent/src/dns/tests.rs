//! Tests for the DNS module: messages are built and serialised with
//! hickory-proto, then fed back through `parse`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::*;

mod learned;
mod names;
mod tunnel;

// ---- helpers ---------------------------------------------------------------

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("test name")
}

fn a(owner: &str, ip: [u8; 4], ttl: u32) -> Record {
    Record::from_rdata(name(owner), ttl, RData::A(A(Ipv4Addr::from(ip))))
}

fn aaaa(owner: &str, ip: Ipv6Addr, ttl: u32) -> Record {
    Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA(ip)))
}

fn cname(owner: &str, target: &str, ttl: u32) -> Record {
    Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
}

fn response_msg(qname: &str, qtype: RecordType, answers: Vec<Record>) -> Message {
    let mut m = Message::response(0x1234, OpCode::Query);
    m.add_query(Query::query(name(qname), qtype));
    for r in answers {
        m.add_answer(r);
    }
    m
}

fn response(qname: &str, answers: Vec<Record>) -> Vec<u8> {
    response_msg(qname, RecordType::A, answers)
        .to_vec()
        .expect("serialise")
}

fn tcp(msg: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(msg.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    out
}

fn udp(bytes: &[u8]) -> Dns {
    parse(bytes, Transport::Udp, true).expect("parse")
}

fn v4(ip: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(ip))
}

/// Tiny deterministic PRNG (xorshift64*), so tests need no `rand`.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A realistic response: CNAME chain, A and AAAA, EDNS.
fn rich_response() -> Vec<u8> {
    let mut m = response_msg(
        "www.example.com.",
        RecordType::A,
        vec![
            cname("www.example.com.", "edge.cdn.example.net.", 300),
            cname("edge.cdn.example.net.", "e1.cdn.example.net.", 60),
            a("e1.cdn.example.net.", [192, 0, 2, 1], 20),
            a("e1.cdn.example.net.", [192, 0, 2, 2], 20),
            aaaa("e1.cdn.example.net.", "2001:db8::1".parse().unwrap(), 30),
        ],
    );
    m.set_edns(Edns::new());
    m.to_vec().unwrap()
}

// ---- parse -----------------------------------------------------------------

#[test]
fn udp_response_fields() {
    let bytes = response(
        "WWW.Example.COM.",
        vec![a("www.example.com.", [192, 0, 2, 7], 300)],
    );
    let dns = udp(&bytes);
    assert_eq!(dns.id, 0x1234);
    assert!(dns.response);
    assert_eq!(dns.opcode, 0);
    assert_eq!(dns.rcode, 0);
    assert!(!dns.truncated);
    assert_eq!(
        dns.questions,
        vec![Question {
            name: "www.example.com".into(),
            qtype: 1
        }]
    );
    assert_eq!(
        dns.answers,
        vec![Answer {
            name: "www.example.com".into(),
            ttl: 300,
            data: AnswerData::A(Ipv4Addr::new(192, 0, 2, 7)),
        }]
    );
}

#[test]
fn query_is_parsed_but_resolves_nothing() {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(name("api.github.com."), RecordType::AAAA));
    // A query carrying answer records must not teach us anything.
    m.add_answer(a("api.github.com.", [192, 0, 2, 1], 60));
    let dns = udp(&m.to_vec().unwrap());
    assert!(!dns.response);
    assert_eq!(dns.questions[0].qtype, 28);
    assert!(dns.resolved().is_empty());
}

#[test]
fn tcp_framing() {
    let msg = response(
        "a.example.com.",
        vec![a("a.example.com.", [192, 0, 2, 1], 5)],
    );
    let framed = tcp(&msg);
    assert_eq!(parse(&framed, Transport::Tcp, true).unwrap(), udp(&msg));

    // Two messages in one segment: the first is decoded.
    let other = response(
        "b.example.com.",
        vec![a("b.example.com.", [192, 0, 2, 2], 5)],
    );
    let mut two = framed.clone();
    two.extend_from_slice(&tcp(&other));
    let dns = parse(&two, Transport::Tcp, true).unwrap();
    assert_eq!(dns.questions[0].name, "a.example.com");

    // The prefix claims more than present.
    let cut = &framed[..framed.len() - 1];
    assert_eq!(parse(cut, Transport::Tcp, true), Err(ParseError::Truncated));
    assert_eq!(
        parse(&framed[..1], Transport::Tcp, true),
        Err(ParseError::Truncated)
    );
    assert_eq!(parse(&[], Transport::Tcp, true), Err(ParseError::Truncated));
    assert!(matches!(
        parse(&[0, 0, 1, 2], Transport::Tcp, true),
        Err(ParseError::Malformed(_))
    ));
    // Without the prefix the UDP bytes are not a TCP frame.
    assert!(parse(&msg, Transport::Tcp, true).is_err());
}

#[test]
fn incomplete_copy_holding_whole_tcp_message_parses() {
    let msg = response(
        "a.example.com.",
        vec![a("a.example.com.", [192, 0, 2, 1], 5)],
    );
    let mut framed = tcp(&msg);
    framed.extend_from_slice(&[0, 40, 1, 2, 3]); // start of a next message
    assert!(parse(&framed, Transport::Tcp, false).is_ok());
}

#[test]
fn malformed_vs_truncated() {
    // Header claims one question, then a label with the reserved 0b10 prefix.
    let mut bad = vec![0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
    bad.extend_from_slice(&[0x80, 0, 0, 1, 0, 1]);
    match parse(&bad, Transport::Udp, true) {
        Err(ParseError::Malformed(text)) => {
            assert!(!text.is_empty() && text.len() <= 96, "{text}")
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    // The same bytes from an incomplete copy are blamed on the copy.
    assert_eq!(
        parse(&bad, Transport::Udp, false),
        Err(ParseError::Truncated)
    );
    // Counts that cannot fit are Truncated before hickory allocates.
    let huge = [0, 1, 0x81, 0x80, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
    assert_eq!(
        parse(&huge, Transport::Udp, true),
        Err(ParseError::Truncated)
    );
}

#[test]
fn every_cut_of_a_message_is_an_error() {
    let msg = rich_response();
    for len in 0..msg.len() {
        let cut = &msg[..len];
        assert_eq!(
            parse(cut, Transport::Udp, false),
            Err(ParseError::Truncated),
            "len {len}"
        );
        assert!(parse(cut, Transport::Udp, true).is_err(), "len {len}");
        assert_eq!(
            parse(&tcp(&msg)[..len + 2], Transport::Tcp, true),
            Err(ParseError::Truncated),
            "tcp len {len}"
        );
    }
    assert!(parse(&msg, Transport::Udp, false).is_ok());
}

#[test]
fn random_garbage_never_panics() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut ok = 0;
    for i in 0..20_000 {
        let len = rng.below(600);
        let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Half the buffers get small section counts so decoding goes deeper
        // than the header check.
        if i % 2 == 0 && buf.len() >= 12 {
            for c in buf[4..12].chunks_mut(2) {
                c[0] = 0;
                c[1] = (rng.next() % 4) as u8;
            }
        }
        for transport in [Transport::Udp, Transport::Tcp] {
            for complete in [true, false] {
                if let Ok(dns) = parse(&buf, transport, complete) {
                    ok += 1;
                    let _ = dns.resolved();
                }
            }
        }
    }
    // Mostly errors, but some decode, so the deeper paths ran too.
    assert!(ok > 0 && ok < 80_000, "{ok}");
}

#[test]
fn mutated_messages_never_panic() {
    let msg = rich_response();
    // Every single-bit flip.
    for bit in 0..msg.len() * 8 {
        let mut m = msg.clone();
        m[bit / 8] ^= 1 << (bit % 8);
        if let Ok(dns) = parse(&m, Transport::Udp, true) {
            let _ = dns.resolved();
        }
    }
    // Random multi-byte mutations, also through TCP framing.
    let mut rng = XorShift(42);
    for _ in 0..5_000 {
        let mut m = msg.clone();
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(m.len());
            m[at] = rng.next() as u8;
        }
        for (bytes, transport) in [(m.clone(), Transport::Udp), (tcp(&m), Transport::Tcp)] {
            if let Ok(dns) = parse(&bytes, transport, true) {
                let _ = dns.resolved();
            }
        }
    }
}

#[test]
fn non_in_class_and_huge_ttl() {
    let mut chaos = a("x.example.com.", [192, 0, 2, 9], 10);
    chaos.dns_class = DNSClass::CH;
    let bytes = response(
        "x.example.com.",
        vec![chaos, a("x.example.com.", [192, 0, 2, 1], 0x8000_0000)],
    );
    let dns = udp(&bytes);
    assert_eq!(dns.answers[0].data, AnswerData::Other(1));
    assert_eq!(
        dns.answers[1].ttl, 0,
        "TTL with the top bit set counts as 0"
    );
    let r = dns.resolved();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].addr, v4([192, 0, 2, 1]));
}

#[test]
fn odd_label_bytes_are_escaped() {
    let owner = Name::from_labels(vec![&b"a.b"[..], b"Ex\\ample", b"com"]).unwrap();
    let rec = Record::from_rdata(owner.clone(), 5, RData::A(A(Ipv4Addr::new(192, 0, 2, 1))));
    let mut m = Message::response(1, OpCode::Query);
    m.add_query(Query::query(owner, RecordType::A));
    m.add_answer(rec);
    let dns = udp(&m.to_vec().unwrap());
    assert_eq!(dns.questions[0].name, "a\\046b.ex\\092ample.com");
    assert_eq!(dns.resolved().len(), 1);
    // A dot inside a label cannot fake a subdomain: the single label
    // `x.example` under `com` renders as `x\046example.com`.
    let p = HostPattern::parse("*.example.com").unwrap();
    assert!(!p.matches("x\\046example.com"));
}

// ---- resolved --------------------------------------------------------------

#[test]
fn cname_chain_with_min_ttl() {
    let dns = udp(&rich_response());
    let r = dns.resolved();
    assert_eq!(r.len(), 3);
    let chain = vec![
        "www.example.com".to_string(),
        "edge.cdn.example.net".into(),
        "e1.cdn.example.net".into(),
    ];
    for x in &r {
        assert_eq!(x.asked, "www.example.com");
        assert_eq!(x.chain, chain);
    }
    let by_addr = |ip: IpAddr| r.iter().find(|x| x.addr == ip).unwrap();
    assert_eq!(by_addr(v4([192, 0, 2, 1])).ttl, 20);
    assert_eq!(by_addr(v4([192, 0, 2, 2])).ttl, 20);
    assert_eq!(by_addr("2001:db8::1".parse().unwrap()).ttl, 30);
}

#[test]
fn ttl_minimum_comes_from_the_cname() {
    let bytes = response(
        "www.example.com.",
        vec![
            cname("www.example.com.", "real.example.com.", 7),
            a("real.example.com.", [192, 0, 2, 1], 3600),
        ],
    );
    let r = udp(&bytes).resolved();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].ttl, 7);
}

#[test]
fn direct_answer_chain_is_just_the_question() {
    let bytes = response(
        "a.example.com.",
        vec![a("A.Example.com.", [192, 0, 2, 1], 9)],
    );
    let r = udp(&bytes).resolved();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].chain, vec!["a.example.com".to_string()]);
}

#[test]
fn cname_loops_terminate() {
    let bytes = response(
        "a.example.com.",
        vec![
            cname("a.example.com.", "b.example.com.", 60),
            cname("b.example.com.", "a.example.com.", 60),
            cname("b.example.com.", "b.example.com.", 60),
            a("b.example.com.", [192, 0, 2, 5], 60),
        ],
    );
    let r = udp(&bytes).resolved();
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0].chain,
        vec!["a.example.com".to_string(), "b.example.com".into()]
    );
}

#[test]
fn unasked_owners_are_not_returned() {
    let bytes = response(
        "www.example.com.",
        vec![
            a("www.example.com.", [192, 0, 2, 1], 60),
            a("evil.example.org.", [203, 0, 113, 66], 60),
            // CNAME pointing *at* the question does not make its owner asked.
            cname("other.example.org.", "www.example.com.", 60),
            a("other.example.org.", [203, 0, 113, 67], 60),
        ],
    );
    let r = udp(&bytes).resolved();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].addr, v4([192, 0, 2, 1]));
}

#[test]
fn additional_section_addresses_are_ignored() {
    let mut m = response_msg("www.example.com.", RecordType::A, vec![]);
    m.add_additional(a("www.example.com.", [192, 0, 2, 1], 60));
    let r = udp(&m.to_vec().unwrap()).resolved();
    assert!(r.is_empty());
}

#[test]
fn cname_hop_limit() {
    let chain_of = |hops: usize| {
        let names: Vec<String> = (0..=hops).map(|i| format!("n{i}.example.com.")).collect();
        let mut answers: Vec<Record> = names.windows(2).map(|w| cname(&w[0], &w[1], 60)).collect();
        answers.push(a(&names[hops], [192, 0, 2, 1], 60));
        response(&names[0], answers)
    };
    let r = udp(&chain_of(MAX_CNAME_HOPS)).resolved();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].chain.len(), MAX_CNAME_HOPS + 1);
    assert!(udp(&chain_of(MAX_CNAME_HOPS + 1)).resolved().is_empty());
}

#[test]
fn error_responses_resolve_nothing() {
    let mut m = response_msg("www.example.com.", RecordType::A, vec![]);
    m.add_answer(a("www.example.com.", [192, 0, 2, 1], 60));
    m.metadata.response_code = ResponseCode::NXDomain;
    let dns = udp(&m.to_vec().unwrap());
    assert_eq!(dns.rcode, 3);
    assert!(dns.resolved().is_empty());
}

#[test]
fn duplicate_addresses_are_merged_with_min_ttl() {
    let bytes = response(
        "www.example.com.",
        vec![
            a("www.example.com.", [192, 0, 2, 1], 60),
            cname("www.example.com.", "alt.example.com.", 30),
            a("alt.example.com.", [192, 0, 2, 1], 100),
        ],
    );
    let r = udp(&bytes).resolved();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].ttl, 30);
}
