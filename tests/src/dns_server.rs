//! A tiny authoritative DNS server for the DNS tests, and a client to ask it: the tests need
//! names that resolve to addresses they choose (in a [`NetNs`]), with TTLs and CNAME chains they
//! choose, an NXDOMAIN on demand, and a count of what was asked, without depending on the VM's
//! resolver. Built on hickory-proto, the parser the agent uses too.
//!
//! It answers over UDP and TCP on the same port, from a [`Zone`]: each name's A, AAAA and CNAME
//! records (CNAME chains are followed within the zone), and `*.suffix` wildcards. It answers
//! nothing to a datagram that is not a query it can parse, and counts those.
//!
//! [`send_malformed`] sends DNS-looking garbage from port 53, for the tests of a parser that
//! must survive it.
use std::{
    collections::{BTreeMap, VecDeque},
    io::{ErrorKind, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, CNAME},
    },
};

use crate::netns::NetNs;

/// The data of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rr {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// The target name.
    Cname(String),
}

/// What the server knows: lowercase names (no trailing dot) to their records, each with a TTL.
/// A name `*.suffix` is a wildcard: it answers for every name below `suffix` that has no
/// records of its own (not for `suffix` itself).
#[derive(Debug, Clone, Default)]
pub struct Zone {
    pub records: BTreeMap<String, Vec<(Rr, u32)>>,
}

/// `name` lowercased, without a trailing dot.
fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Zone {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a record for `name`.
    pub fn insert(&mut self, name: &str, rr: Rr, ttl: u32) {
        let rr = match rr {
            Rr::Cname(target) => Rr::Cname(norm(&target)),
            other => other,
        };
        self.records.entry(norm(name)).or_default().push((rr, ttl));
    }

    /// With an A record `name` -> `ip`.
    pub fn a(mut self, name: &str, ip: Ipv4Addr, ttl: u32) -> Self {
        self.insert(name, Rr::A(ip), ttl);
        self
    }

    /// With an AAAA record `name` -> `ip`.
    pub fn aaaa(mut self, name: &str, ip: Ipv6Addr, ttl: u32) -> Self {
        self.insert(name, Rr::Aaaa(ip), ttl);
        self
    }

    /// With a CNAME record `name` -> `target`.
    pub fn cname(mut self, name: &str, target: &str, ttl: u32) -> Self {
        self.insert(name, Rr::Cname(target.to_owned()), ttl);
        self
    }

    /// With a wildcard: every name below `suffix` (given as `suffix` or `*.suffix`) -> `ip`.
    pub fn wildcard(self, suffix: &str, ip: Ipv4Addr, ttl: u32) -> Self {
        let suffix = suffix.strip_prefix("*.").unwrap_or(suffix);
        self.a(&format!("*.{suffix}"), ip, ttl)
    }

    /// The records of `name` (normalised): its own, else those of the closest `*.` wildcard
    /// above it.
    fn lookup(&self, name: &str) -> Option<&[(Rr, u32)]> {
        if let Some(rrs) = self.records.get(name) {
            return Some(rrs);
        }
        let mut rest = name;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(rrs) = self.records.get(&format!("*.{parent}")) {
                return Some(rrs);
            }
            rest = parent;
        }
        None
    }

    /// The answer to `name`/`qtype`: the response code and the answer records. A CNAME is
    /// followed (up to 8 links) unless CNAME was asked for; the code is that of the last name
    /// of the chain (RFC 6604): NXDOMAIN if it is not in the zone.
    pub fn answer(&self, name: &str, qtype: RecordType) -> (ResponseCode, Vec<Record>) {
        let mut answers = Vec::new();
        let mut current = norm(name);
        for _ in 0..8 {
            let Some(rrs) = self.lookup(&current) else { return (ResponseCode::NXDomain, answers) };
            let Ok(owner) = Name::from_ascii(format!("{current}.")) else { return (ResponseCode::FormErr, answers) };
            let cname = rrs.iter().find_map(|(rr, ttl)| match rr {
                Rr::Cname(t) => Some((t.clone(), *ttl)),
                _ => None,
            });
            if let (Some((target, ttl)), false) = (&cname, qtype == RecordType::CNAME) {
                let Ok(t) = Name::from_ascii(format!("{target}.")) else { return (ResponseCode::ServFail, answers) };
                answers.push(Record::from_rdata(owner, *ttl, RData::CNAME(CNAME(t))));
                current = target.clone();
                continue;
            }
            for (rr, ttl) in rrs {
                let data = match rr {
                    Rr::A(ip) if matches!(qtype, RecordType::A | RecordType::ANY) => RData::A(A(*ip)),
                    Rr::Aaaa(ip) if matches!(qtype, RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(*ip)),
                    Rr::Cname(t) if matches!(qtype, RecordType::CNAME | RecordType::ANY) => match Name::from_ascii(format!("{t}.")) {
                        Ok(t) => RData::CNAME(CNAME(t)),
                        Err(_) => continue,
                    },
                    _ => continue,
                };
                answers.push(Record::from_rdata(owner.clone(), *ttl, data));
            }
            // A name with no record of the type asked: NOERROR, no answer (NODATA).
            return (ResponseCode::NoError, answers);
        }
        // A chain longer than 8 (or a loop).
        (ResponseCode::ServFail, answers)
    }
}

/// At most this many names are kept by [`DnsServer::names`] (the oldest are dropped).
const NAMES_KEPT: usize = 100_000;

struct Shared {
    zone: Zone,
    queries: AtomicU64,
    malformed: AtomicU64,
    names: Mutex<VecDeque<String>>,
    stop: AtomicBool,
    /// Open TCP connections, shut down on drop so their readers end.
    conns: Mutex<Vec<TcpStream>>,
}

/// A running DNS server (UDP and TCP on one port), stopped on drop.
pub struct DnsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A UDP socket and a TCP listener on the same address and port (`bind` port 0: a free one).
fn bind_pair(bind: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind(bind)?;
        match TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            // Port 0: the free UDP port may be taken for TCP; pick another.
            Err(e) if bind.port() == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| ErrorKind::AddrInUse.into()))
}

impl DnsServer {
    /// Serves `zone` on `bind` (UDP and TCP) in the host's namespace, on a thread of its own.
    pub fn start(bind: SocketAddr, zone: Zone) -> Self {
        let sockets = bind_pair(bind).unwrap_or_else(|e| panic!("bind the DNS server on {bind}: {e}"));
        Self::serve(sockets, zone)
    }

    /// Serves `zone` on `bind` inside `ns`: the sockets are made there (the serving thread
    /// then needs not be).
    pub fn start_in(ns: &NetNs, bind: SocketAddr, zone: Zone) -> Self {
        let sockets = ns.run_in(|| bind_pair(bind)).unwrap_or_else(|e| panic!("bind the DNS server on {bind} in {}: {e}", ns.name()));
        Self::serve(sockets, zone)
    }

    fn serve((udp, tcp): (UdpSocket, TcpListener), zone: Zone) -> Self {
        let addr = udp.local_addr().expect("the DNS server's address");
        udp.set_read_timeout(Some(Duration::from_millis(10))).expect("a UDP read timeout");
        // Room for a burst (a flood test): 8 MiB, past rmem_max (we are root); best effort.
        let size: libc::c_int = 8 << 20;
        // SAFETY: setsockopt on an open socket with a c_int option value.
        unsafe { libc::setsockopt(udp.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, (&raw const size).cast(), size_of::<libc::c_int>() as libc::socklen_t) };
        tcp.set_nonblocking(true).expect("a nonblocking TCP listener");
        let shared = Arc::new(Shared {
            zone,
            queries: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            names: Mutex::new(VecDeque::new()),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            let mut tcp_threads: Vec<JoinHandle<()>> = Vec::new();
            while !s.stop.load(Ordering::SeqCst) {
                if let Ok((n, peer)) = udp.recv_from(&mut buf)
                    && let Some(reply) = respond(&s, &buf[..n], true)
                {
                    let _ = udp.send_to(&reply, peer);
                }
                if let Ok((stream, _)) = tcp.accept() {
                    if let Ok(clone) = stream.try_clone() {
                        s.conns.lock().unwrap().push(clone);
                    }
                    let s = Arc::clone(&s);
                    tcp_threads.push(thread::spawn(move || serve_tcp(&s, stream)));
                    tcp_threads.retain(|t| !t.is_finished());
                }
            }
            for c in s.conns.lock().unwrap().drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
            for t in tcp_threads {
                let _ = t.join();
            }
        });
        Self { addr, shared, thread: Some(thread) }
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queries answered so far (UDP and TCP).
    pub fn queries(&self) -> u64 {
        self.shared.queries.load(Ordering::SeqCst)
    }

    /// Messages that were not a query it could parse (no answer was sent).
    pub fn malformed(&self) -> u64 {
        self.shared.malformed.load(Ordering::SeqCst)
    }

    /// The names asked (lowercase, no trailing dot), in order: the last 100 000.
    pub fn names(&self) -> Vec<String> {
        self.shared.names.lock().unwrap().iter().cloned().collect()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// DNS over TCP: two-byte length, message; until the client closes or the server stops.
fn serve_tcp(s: &Shared, mut stream: TcpStream) {
    if stream.set_nonblocking(false).and_then(|()| stream.set_read_timeout(Some(Duration::from_secs(10)))).is_err() {
        return;
    }
    let mut len = [0u8; 2];
    while !s.stop.load(Ordering::SeqCst) && stream.read_exact(&mut len).is_ok() {
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        if stream.read_exact(&mut msg).is_err() {
            return;
        }
        let Some(reply) = respond(s, &msg, false) else { continue };
        let Ok(n) = u16::try_from(reply.len()) else { return };
        if stream.write_all(&n.to_be_bytes()).and_then(|()| stream.write_all(&reply)).is_err() {
            return;
        }
    }
}

/// The reply to one message, if it is a query; counts it.
fn respond(s: &Shared, bytes: &[u8], udp: bool) -> Option<Vec<u8>> {
    let query = match Message::from_vec(bytes) {
        Ok(m) if m.message_type == MessageType::Query => m,
        _ => {
            s.malformed.fetch_add(1, Ordering::SeqCst);
            return None;
        }
    };
    s.queries.fetch_add(1, Ordering::SeqCst);
    let mut reply = Message::response(query.id, query.op_code);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = query.recursion_desired;
    reply.add_queries(query.queries.iter().cloned());
    if let Some(edns) = &query.edns {
        let mut e = Edns::new();
        e.set_max_payload(edns.max_payload().max(512));
        reply.set_edns(e);
    }
    match (query.op_code, query.queries.first()) {
        (OpCode::Query, Some(q)) => {
            let name = norm(&q.name().to_ascii());
            {
                let mut names = s.names.lock().unwrap();
                if names.len() >= NAMES_KEPT {
                    names.pop_front();
                }
                names.push_back(name.clone());
            }
            let (code, answers) = s.zone.answer(&name, q.query_type());
            reply.metadata.response_code = code;
            reply.add_answers(answers);
        }
        (OpCode::Query, None) => reply.metadata.response_code = ResponseCode::FormErr,
        _ => reply.metadata.response_code = ResponseCode::NotImp,
    }
    let bytes = reply.to_vec().ok()?;
    let limit = query.edns.as_ref().map_or(512, |e| e.max_payload().max(512)) as usize;
    if udp && bytes.len() > limit {
        return reply.truncate().to_vec().ok();
    }
    Some(bytes)
}

/// Asks `server` over UDP, from an ephemeral port, for `name`/`qtype` (recursion desired), and
/// returns the whole response. The socket is not connected, so the send is a `sendto` (which is
/// what a cgroup sendmsg hook sees). Errors: the `sendto` failing (with the OS error, e.g.
/// "Operation not permitted"), no answer within `timeout`, or an answer that does not parse.
pub fn query_message(server: SocketAddr, name: &str, qtype: RecordType, timeout: Duration) -> Result<Message, String> {
    let qname = Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).map_err(|e| format!("bad name {name:?}: {e}"))?;
    let local: SocketAddr = if server.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket = UdpSocket::bind(local).map_err(|e| format!("bind a UDP socket: {e}"))?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let id = (nanos ^ std::process::id() ^ (nanos >> 16)) as u16;
    let mut q = Message::new(id, MessageType::Query, OpCode::Query);
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(qname, qtype));
    let bytes = q.to_vec().map_err(|e| format!("encode the query: {e}"))?;
    socket.send_to(&bytes, server).map_err(|e| format!("sendto {server} (query for {name}): {e}"))?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no answer from {server} for {name} within {timeout:?}"));
        }
        socket.set_read_timeout(Some(left)).map_err(|e| format!("set a read timeout: {e}"))?;
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!("no answer from {server} for {name} within {timeout:?}: {e}"));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("recvfrom (answer from {server} for {name}): {e}")),
        };
        // Something else sent to this port: not the answer.
        let from_server = from.port() == server.port() && (from.ip() == server.ip() || server.ip().is_unspecified());
        if !from_server || n < 2 || u16::from_be_bytes([buf[0], buf[1]]) != id {
            continue;
        }
        return Message::from_vec(&buf[..n]).map_err(|e| format!("the answer from {server} for {name} does not parse: {e}"));
    }
}

/// Asks `server` (see [`query_message`]) and returns the A and AAAA addresses in the answer
/// (empty for a name without records of that type). An error says why there are none:
/// `NXDOMAIN: ...`, `REFUSED: ...` (or another response code), or the query's failure.
pub fn query(server: SocketAddr, name: &str, qtype: RecordType, timeout: Duration) -> Result<Vec<IpAddr>, String> {
    let reply = query_message(server, name, qtype, timeout)?;
    match reply.response_code {
        ResponseCode::NoError => Ok(reply.answers.iter().filter_map(|r| r.data.ip_addr()).collect()),
        ResponseCode::NXDomain => Err(format!("NXDOMAIN: {name} does not exist (asked {server})")),
        code => {
            let mnemonic = match code {
                ResponseCode::FormErr => "FORMERR",
                ResponseCode::ServFail => "SERVFAIL",
                ResponseCode::NotImp => "NOTIMP",
                ResponseCode::Refused => "REFUSED",
                _ => "error",
            };
            Err(format!("{mnemonic}: {server} answered {name} with {code} (rcode {})", u16::from(code)))
        }
    }
}

/// A xorshift64* generator: reproducible garbage from a seed, without a rand crate.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// 0..n.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A DNS header: id, flags (a response: QR, RD, RA), and the four counts.
fn header(id: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut h = id.to_be_bytes().to_vec();
    h.extend_from_slice(&0x8180u16.to_be_bytes());
    for c in counts {
        h.extend_from_slice(&c.to_be_bytes());
    }
    h
}

/// A well-formed answer `r<random>.test A <random>`, to cut short or to spoil.
fn valid_answer(rng: &mut XorShift) -> Vec<u8> {
    let mut m = header(rng.next() as u16, [1, 1, 0, 0]);
    let label = format!("r{:x}", rng.next() & 0xffff_ffff);
    m.push(label.len() as u8);
    m.extend_from_slice(label.as_bytes());
    m.extend_from_slice(&[4, b't', b'e', b's', b't', 0, 0, 1, 0, 1]);
    // The answer's name points at the question's (offset 12).
    m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    m.extend_from_slice(&rng.bytes(4));
    m
}

/// One malformed DNS-looking datagram.
fn malformed(rng: &mut XorShift) -> Vec<u8> {
    match rng.below(8) {
        // Random bytes, 0 to 600 of them.
        0 => {
            let n = rng.below(601);
            rng.bytes(n)
        }
        // A valid answer cut short (possibly inside the header).
        1 => {
            let m = valid_answer(rng);
            let cut = rng.below(m.len());
            m[..cut].to_vec()
        }
        // A header claiming 65535 of everything, and a few bytes.
        2 => {
            let mut m = header(rng.next() as u16, [0xffff; 4]);
            let n = rng.below(64);
            m.extend(rng.bytes(n));
            m
        }
        // A name that is a pointer to itself.
        3 => {
            let mut m = header(rng.next() as u16, [1, 1, 0, 0]);
            m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
            m
        }
        // Two pointers that point at each other (12 -> 14 -> 12), in the answer's name.
        4 => {
            let mut m = header(rng.next() as u16, [0, 1, 0, 0]);
            m.extend_from_slice(&[0xc0, 0x0e, 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
            m
        }
        // A name longer than 255 bytes, or a label running past the end.
        5 => {
            let mut m = header(rng.next() as u16, [1, 0, 0, 0]);
            if rng.below(2) == 0 {
                for _ in 0..6 {
                    m.push(63);
                    m.extend(std::iter::repeat_n(b'a', 63));
                }
                m.extend_from_slice(&[0, 0, 1, 0, 1]);
            } else {
                m.extend_from_slice(&[63, b'a', b'b']);
            }
            m
        }
        // An answer whose RDLENGTH runs past the end, or an A record of the wrong length.
        6 => {
            let mut m = valid_answer(rng);
            let len_at = m.len() - 6;
            let rdlen: u16 = [0xffff, 3, 16, 0][rng.below(4)];
            m[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
            m
        }
        // Reserved label types (0x40, 0x80), or a pointer past the end.
        _ => {
            let mut m = header(rng.next() as u16, [1, 1, 0, 0]);
            let first = [0x40, 0x80, 0xff][rng.below(3)];
            m.extend_from_slice(&[first, 0x20, 0, 1, 0, 1]);
            m.extend_from_slice(&[0xc3, 0xff, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
            m
        }
    }
}

/// Sends `count` malformed DNS-looking datagrams (random bytes, answers cut short, headers
/// with huge counts, compression pointer loops, overlong names, bad RDLENGTHs), made
/// reproducibly from `seed`, from a socket bound to `from` (say port 53 on an address in a
/// namespace: call it from [`NetNs::run_in`]) to `to`. Returns how many were sent.
pub fn send_malformed(from: SocketAddr, to: SocketAddr, count: usize, seed: u64) -> usize {
    let socket = UdpSocket::bind(from).unwrap_or_else(|e| panic!("bind {from} to send malformed DNS: {e}"));
    // Any seed but one maps to a nonzero state (xorshift stays at zero forever).
    let mut rng = XorShift(seed.wrapping_add(0x9e37_79b9_7f4a_7c15).max(1));
    (0..count).filter(|_| socket.send_to(&malformed(&mut rng), to).is_ok()).count()
}
