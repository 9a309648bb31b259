//! Decoding of DNS payloads with `hickory-proto`, flattened to the fields
//! the agent needs, and CNAME-aware extraction of resolved addresses.

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, DecodeError};

/// Longest CNAME chain followed from a question name. Real chains are
/// 1-4 hops; the bound keeps hostile answers from making us walk forever.
pub const MAX_CNAME_HOPS: usize = 16;

/// Upper bound on answer records visited by one [`Dns::resolved`] call, so
/// a crafted message with thousands of questions and records stays cheap.
const RESOLVE_BUDGET: usize = 65_536;

/// Longest error text kept in [`ParseError::Malformed`].
const MAX_ERROR_TEXT: usize = 96;

/// Size of the fixed DNS header (RFC 1035 4.1.1).
const HEADER_LEN: usize = 12;

/// How the payload travelled; decides whether a length prefix comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The payload is exactly one DNS message.
    Udp,
    /// The payload starts with the 2-byte big-endian length prefix of
    /// RFC 1035 4.2.2 and must begin at a message boundary.
    Tcp,
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The payload is shorter than the message claims, or the kernel copied
    /// only a prefix of the packet and what was copied does not decode.
    Truncated,
    /// The bytes are not a valid DNS message (short hickory error text).
    Malformed(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated DNS message"),
            Self::Malformed(why) => write!(f, "malformed DNS message: {why}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// The parts of a DNS message the agent uses.
///
/// Only the question and answer sections are kept: authority and additional
/// records are never trusted as answers (they would let a server attach
/// addresses for names nobody asked about).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    /// Transaction id.
    pub id: u16,
    /// QR bit: true for responses.
    pub response: bool,
    /// Header OPCODE (0 = QUERY).
    pub opcode: u8,
    /// Response code, including the EDNS extended bits (0 = NOERROR).
    pub rcode: u16,
    /// TC bit: the server cut the answer short; the client will retry on TCP.
    pub truncated: bool,
    /// Question section.
    pub questions: Vec<Question>,
    /// Answer section.
    pub answers: Vec<Answer>,
}

/// One entry of the question section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Lowercase name without the trailing dot (see the module doc).
    pub name: String,
    /// QTYPE as a number (1 = A, 28 = AAAA, ...).
    pub qtype: u16,
}

/// One record of the answer section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Owner name, lowercase, without the trailing dot.
    pub name: String,
    /// TTL in seconds; values with the top bit set count as 0 (RFC 2181 8).
    pub ttl: u32,
    /// The record data the agent cares about.
    pub data: AnswerData,
}

/// Record data of an answer; everything but IN-class A/AAAA/CNAME is
/// reduced to its type number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerData {
    /// IPv4 address.
    A(Ipv4Addr),
    /// IPv6 address.
    Aaaa(Ipv6Addr),
    /// Alias target, normalised like every other name.
    Cname(String),
    /// Any other record, by TYPE number.
    Other(u16),
}

/// An address the answer section gives for a question name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The question name the address answers.
    pub asked: String,
    /// The address.
    pub addr: IpAddr,
    /// Smallest TTL (seconds) along the CNAME chain and the address record.
    pub ttl: u32,
    /// Names from `asked` (first) to the owner of the address record (last);
    /// just `[asked]` when there is no CNAME.
    pub chain: Vec<String>,
}

/// Decodes one DNS message from a packet payload.
///
/// `complete` says whether the kernel copied the whole packet; when it did
/// not and decoding fails, the failure is reported as
/// [`ParseError::Truncated`] since the missing tail is the likely cause.
/// For TCP the first whole message of the segment is decoded and any
/// following messages are ignored.
pub fn parse(payload: &[u8], transport: Transport, complete: bool) -> Result<Dns, ParseError> {
    match transport {
        Transport::Udp => decode(payload, complete),
        Transport::Tcp => {
            let Some((prefix, rest)) = payload.split_first_chunk::<2>() else {
                return Err(ParseError::Truncated);
            };
            let len = usize::from(u16::from_be_bytes(*prefix));
            if len == 0 {
                return Err(malformed("zero TCP length prefix"));
            }
            match rest.get(..len) {
                // The whole framed message is present, so a decode failure
                // is the message's fault, whatever the kernel copied.
                Some(msg) => decode(msg, true),
                None => Err(ParseError::Truncated),
            }
        }
    }
}

/// Decodes one unframed message.
fn decode(msg: &[u8], complete: bool) -> Result<Dns, ParseError> {
    check_counts(msg)?;
    let message = Message::from_vec(msg).map_err(|e| {
        if !complete || matches!(e, DecodeError::InsufficientBytes) {
            ParseError::Truncated
        } else {
            malformed(&error_text(&e))
        }
    })?;
    Ok(flatten(&message))
}

/// Rejects headers whose section counts cannot fit in the payload before
/// hickory pre-allocates room for them (it reserves `QDCOUNT` entries
/// up front, so a 12-byte packet could cost megabytes).
fn check_counts(msg: &[u8]) -> Result<(), ParseError> {
    if msg.len() < HEADER_LEN {
        return Err(ParseError::Truncated);
    }
    let header = Header::read(&mut BinDecoder::new(msg)).map_err(|_| ParseError::Truncated)?;
    let c = header.counts;
    // Smallest encodings: a question is a root name plus type and class
    // (5 bytes), a record adds TTL and RDLENGTH (11 bytes).
    let records = usize::from(c.answers) + usize::from(c.authorities) + usize::from(c.additionals);
    let min_len = HEADER_LEN + usize::from(c.queries) * 5 + records * 11;
    if min_len > msg.len() {
        return Err(ParseError::Truncated);
    }
    Ok(())
}

/// Builds the short error text kept in [`ParseError::Malformed`]. Names
/// from the packet are left out so the text stays short and printable.
fn error_text(e: &DecodeError) -> String {
    match e {
        DecodeError::EdnsNameNotRoot(_) => "edns record owner is not the root".to_string(),
        other => other.to_string(),
    }
}

/// Wraps a reason as [`ParseError::Malformed`], cut to a short length.
fn malformed(why: &str) -> ParseError {
    let mut text: String = why.chars().take(MAX_ERROR_TEXT).collect();
    text.retain(|c| !c.is_control());
    ParseError::Malformed(text)
}

/// Copies the fields the agent uses out of a decoded message.
fn flatten(m: &Message) -> Dns {
    Dns {
        id: m.metadata.id,
        response: m.metadata.message_type == MessageType::Response,
        opcode: u8::from(m.metadata.op_code),
        rcode: u16::from(m.metadata.response_code),
        truncated: m.metadata.truncation,
        questions: m
            .queries
            .iter()
            .map(|q| Question {
                name: name_text(&q.name),
                qtype: u16::from(q.query_type),
            })
            .collect(),
        answers: m.answers.iter().map(answer).collect(),
    }
}

/// Converts one answer record.
fn answer(r: &Record) -> Answer {
    let data = match &r.data {
        _ if r.dns_class != DNSClass::IN => AnswerData::Other(u16::from(r.record_type())),
        RData::A(a) => AnswerData::A(a.0),
        RData::AAAA(a) => AnswerData::Aaaa(a.0),
        RData::CNAME(c) => AnswerData::Cname(name_text(&c.0)),
        _ => AnswerData::Other(u16::from(r.record_type())),
    };
    Answer {
        name: name_text(&r.name),
        ttl: if r.ttl > i32::MAX as u32 { 0 } else { r.ttl },
        data,
    }
}

/// Renders a wire name as lowercase text without the trailing dot.
///
/// Done here rather than with `Name::to_ascii` so the escaping is fixed
/// (decimal `\DDD`, never a bare `.` or `\` inside a label) and no hickory
/// formatting path with internal `unwrap`s is involved.
fn name_text(name: &Name) -> String {
    let mut out = String::new();
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        for &b in label {
            match b {
                b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => out.push(char::from(b)),
                b'A'..=b'Z' => out.push(char::from(b.to_ascii_lowercase())),
                _ => {
                    let _ = write!(out, "\\{b:03}");
                }
            }
        }
    }
    out
}

impl Dns {
    /// True for a successful standard query response (QR=1, OPCODE QUERY,
    /// RCODE NOERROR): the only kind whose addresses are worth learning.
    pub fn is_answer(&self) -> bool {
        self.response
            && self.opcode == u8::from(OpCode::Query)
            && self.rcode == u16::from(ResponseCode::NoError)
    }

    /// Addresses given for each question name, following CNAMEs inside the
    /// answer section (at most [`MAX_CNAME_HOPS`], loops cut).
    ///
    /// Address records whose owner cannot be reached from a question are
    /// dropped, so an answer cannot smuggle addresses for unasked names.
    /// Messages that are not a successful query response yield nothing.
    /// Each (asked, address) pair appears once, with the smallest TTL seen.
    pub fn resolved(&self) -> Vec<Resolved> {
        if !self.is_answer() {
            return Vec::new();
        }
        let mut by_owner: HashMap<&str, Vec<&Answer>> = HashMap::new();
        for a in &self.answers {
            by_owner.entry(a.name.as_str()).or_default().push(a);
        }
        let mut out: Vec<Resolved> = Vec::new();
        let mut index: HashMap<(&str, IpAddr), usize> = HashMap::new();
        let mut budget = RESOLVE_BUDGET;
        let mut asked_done: HashSet<&str> = HashSet::new();

        for q in &self.questions {
            if !asked_done.insert(q.name.as_str()) {
                continue;
            }
            let mut visited: HashSet<&str> = HashSet::from([q.name.as_str()]);
            let mut stack: Vec<(&str, Vec<String>, u32)> =
                vec![(q.name.as_str(), vec![q.name.clone()], u32::MAX)];
            while let Some((owner, chain, ttl)) = stack.pop() {
                for a in by_owner.get(owner).map(Vec::as_slice).unwrap_or_default() {
                    if budget == 0 {
                        return out;
                    }
                    budget -= 1;
                    let ttl = ttl.min(a.ttl);
                    let addr = match &a.data {
                        AnswerData::A(ip) => IpAddr::V4(*ip),
                        AnswerData::Aaaa(ip) => IpAddr::V6(*ip),
                        AnswerData::Cname(target) => {
                            // chain.len() - 1 hops taken so far.
                            if chain.len() <= MAX_CNAME_HOPS && visited.insert(target.as_str()) {
                                let mut next = chain.clone();
                                next.push(target.clone());
                                stack.push((target.as_str(), next, ttl));
                            }
                            continue;
                        }
                        AnswerData::Other(_) => continue,
                    };
                    match index.get(&(q.name.as_str(), addr)) {
                        Some(&i) => out[i].ttl = out[i].ttl.min(ttl),
                        None => {
                            index.insert((q.name.as_str(), addr), out.len());
                            out.push(Resolved {
                                asked: q.name.clone(),
                                addr,
                                ttl,
                                chain: chain.clone(),
                            });
                        }
                    }
                }
            }
        }
        out
    }
}
