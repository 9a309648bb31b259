//! The network test helpers, tested without a guard daemon: a namespace the host reaches over
//! its veth, TCP sinks that count what they get, the DNS server (answers, CNAME chains, TTLs,
//! NXDOMAIN, wildcards, TCP) and the malformed-DNS sender. Run as root.
//!
//! Every helper cleans up on drop, so a failed assertion leaves nothing behind either. Each test
//! declares its namespace first, so that the servers in it are dropped before it is.
use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use guard_tests::{
    dns_server::{DnsServer, Rr, Zone, query, query_message, send_malformed},
    netns::{NetNs, tcp_sink, tcp_sink_local},
};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};

const TIMEOUT: Duration = Duration::from_secs(3);

fn ip_link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

#[test]
fn a_namespace_has_its_own_addresses_and_is_gone_after_drop() {
    let ns = NetNs::new("self");
    let (name, host_if) = (ns.name().to_owned(), ns.host_if().to_owned());
    assert!(Path::new("/run/netns").join(&name).exists(), "/run/netns/{name}");
    assert!(ip_link_exists(&host_if), "the host side {host_if} of the veth");
    assert!(host_if.len() <= 15 && ns.ns_if().len() <= 15, "interface names fit IFNAMSIZ: {host_if} {}", ns.ns_if());
    assert_eq!(ns.host_addr().octets()[..3], ns.addr(3).octets()[..3]);
    assert!((200..208).contains(&ns.addr(2).octets()[1]), "{} is in 10.200.0.0/13", ns.addr(2));

    // 10.x.y.3 can be bound inside the namespace, and not on the host.
    assert!(UdpSocket::bind((ns.addr(3), 0)).is_err(), "the host has no {}", ns.addr(3));
    let bound = ns.run_in(|| UdpSocket::bind((ns.addr(3), 0)).map(|s| s.local_addr().unwrap()));
    assert!(bound.is_ok(), "bind {} in the namespace: {bound:?}", ns.addr(3));
    // Inside, the only interfaces are lo and the namespace's end of the veth. (Not /sys/class/net:
    // sysfs shows the namespace it was mounted in; /proc/thread-self/net follows the thread's.)
    let devs = ns.run_in(|| std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default());
    let mut devs: Vec<&str> = devs.lines().skip(2).filter_map(|l| Some(l.split(':').next()?.trim())).collect();
    devs.sort_unstable();
    let mut want = ["lo", ns.ns_if()];
    want.sort_unstable();
    assert_eq!(devs, want, "interfaces in the namespace");

    // A long-running thread in the namespace sees the same.
    let t = ns.spawn_in(|| std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default());
    assert!(t.join().unwrap().contains(ns.ns_if()));

    drop(ns);
    assert!(!Path::new("/run/netns").join(&name).exists(), "/run/netns/{name} removed");
    assert!(!ip_link_exists(&host_if), "{host_if} removed with the namespace");
}

#[test]
fn the_host_connects_to_a_tcp_sink_in_the_namespace_and_its_bytes_are_counted() {
    let ns = NetNs::new("sink");
    let sink = tcp_sink(&ns, ns.addr(2), 8080);
    assert_eq!(sink.addr(), SocketAddr::from((ns.addr(2), 8080)));
    for size in [1000usize, 70_000] {
        let mut c = TcpStream::connect_timeout(&sink.addr(), TIMEOUT).unwrap_or_else(|e| panic!("connect to {} from the host: {e}", sink.addr()));
        c.write_all(&vec![7u8; size]).unwrap();
    }
    assert_eq!(sink.wait_bytes(71_000, TIMEOUT), 71_000);
    assert_eq!(sink.connections(), 2);

    // Another of the namespace's addresses, a free port, and nothing listens on the host's side.
    let other = tcp_sink(&ns, ns.addr(4), 0);
    assert_ne!(other.addr().port(), 0);
    TcpStream::connect_timeout(&other.addr(), TIMEOUT).unwrap().write_all(b"hello").unwrap();
    assert_eq!(other.wait_bytes(5, TIMEOUT), 5);
    assert!(TcpStream::connect_timeout(&SocketAddr::from((ns.addr(3), 8080)), TIMEOUT).is_err(), "nothing listens on .3");
}

#[test]
fn the_namespace_reaches_the_host_through_the_veth() {
    let ns = NetNs::new("back");
    let listener = TcpListener::bind((ns.host_addr(), 0)).unwrap();
    let to = listener.local_addr().unwrap();
    let (from, sent) = ns.run_in(|| {
        let mut c = TcpStream::connect_timeout(&to, TIMEOUT).unwrap_or_else(|e| panic!("connect to {to} from the namespace: {e}"));
        (c.local_addr().unwrap(), c.write_all(b"up").is_ok())
    });
    assert!(sent);
    let (mut conn, peer) = listener.accept().unwrap();
    assert_eq!(peer, from);
    assert_eq!(peer.ip(), IpAddr::V4(ns.addr(2)), "the namespace's primary address");
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, "up");
}

#[test]
fn a_local_tcp_sink_counts_bytes_on_loopback() {
    let sink = tcp_sink_local(Ipv4Addr::new(127, 0, 0, 9));
    assert_eq!(sink.addr().ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)));
    let mut c = TcpStream::connect(sink.addr()).unwrap();
    c.write_all(&[1u8; 12_345]).unwrap();
    drop(c);
    assert_eq!(sink.wait_bytes(12_345, TIMEOUT), 12_345);
    assert_eq!(sink.connections(), 1);
}

fn test_zone(ns: &NetNs) -> Zone {
    Zone::new()
        .a("allowed.test", ns.addr(3), 2)
        .cname("alias.test", "middle.test", 30)
        .cname("middle.test", "allowed.test", 40)
        .cname("dangling.test", "nowhere.test", 50)
        .aaaa("v6.test", "fd00::3".parse().unwrap(), 60)
        .a("Two.Test.", ns.addr(3), 5)
        .a("two.test", ns.addr(4), 5)
}

#[test]
fn the_dns_server_in_the_namespace_answers_a_records_with_their_ttl() {
    let ns = NetNs::new("dns");
    let dns = DnsServer::start_in(&ns, (ns.addr(2), 53).into(), test_zone(&ns));
    let server = dns.addr();
    assert_eq!(server, SocketAddr::from((ns.addr(2), 53)));

    assert_eq!(query(server, "allowed.test", RecordType::A, TIMEOUT), Ok(vec![IpAddr::V4(ns.addr(3))]));
    let reply = query_message(server, "ALLOWED.test.", RecordType::A, TIMEOUT).unwrap();
    assert_eq!(reply.message_type, MessageType::Response);
    assert!(reply.authoritative, "an authoritative answer");
    assert!(reply.recursion_desired, "RD copied from the query");
    assert_eq!(reply.queries.len(), 1, "the question echoed");
    assert_eq!(reply.queries[0].name().to_ascii(), "ALLOWED.test.", "the question as asked");
    assert_eq!(reply.answers.len(), 1);
    assert_eq!(reply.answers[0].ttl, 2);
    assert_eq!(reply.answers[0].data, RData::A(hickory_proto::rr::rdata::A(ns.addr(3))));

    // Two records, case-insensitive names; AAAA; no AAAA for an A-only name (NODATA).
    let mut two = query(server, "two.test", RecordType::A, TIMEOUT).unwrap();
    two.sort();
    assert_eq!(two, [IpAddr::V4(ns.addr(3)), IpAddr::V4(ns.addr(4))]);
    assert_eq!(query(server, "v6.test", RecordType::AAAA, TIMEOUT), Ok(vec!["fd00::3".parse::<IpAddr>().unwrap()]));
    assert_eq!(query(server, "allowed.test", RecordType::AAAA, TIMEOUT), Ok(vec![]));

    assert_eq!(dns.queries(), 5);
    assert_eq!(dns.names(), ["allowed.test", "allowed.test", "two.test", "v6.test", "allowed.test"]);
}

#[test]
fn the_dns_server_follows_cname_chains_and_says_nxdomain_for_unknown_names() {
    let ns = NetNs::new("cname");
    let dns = DnsServer::start_in(&ns, (ns.addr(2), 53).into(), test_zone(&ns));
    let server = dns.addr();

    let reply = query_message(server, "alias.test", RecordType::A, TIMEOUT).unwrap();
    assert_eq!(reply.response_code, ResponseCode::NoError);
    let chain: Vec<(String, u32, String)> = reply.answers.iter().map(|r| (r.name.to_ascii(), r.ttl, r.data.to_string())).collect();
    assert_eq!(
        chain,
        [
            ("alias.test.".to_owned(), 30, "middle.test.".to_owned()),
            ("middle.test.".to_owned(), 40, "allowed.test.".to_owned()),
            ("allowed.test.".to_owned(), 2, ns.addr(3).to_string()),
        ]
    );
    assert_eq!(query(server, "alias.test", RecordType::A, TIMEOUT), Ok(vec![IpAddr::V4(ns.addr(3))]));
    // Asked for the CNAME itself: just that record.
    let reply = query_message(server, "alias.test", RecordType::CNAME, TIMEOUT).unwrap();
    assert_eq!(reply.answers.len(), 1);

    let err = query(server, "unknown.test", RecordType::A, TIMEOUT).unwrap_err();
    assert!(err.contains("NXDOMAIN"), "{err}");
    let reply = query_message(server, "unknown.test", RecordType::A, TIMEOUT).unwrap();
    assert_eq!((reply.response_code, reply.answers.len(), reply.queries.len()), (ResponseCode::NXDomain, 0, 1));
    // A chain to a name the zone does not have: the CNAME, and NXDOMAIN (RFC 6604).
    let reply = query_message(server, "dangling.test", RecordType::A, TIMEOUT).unwrap();
    assert_eq!((reply.response_code, reply.answers.len()), (ResponseCode::NXDomain, 1));
    assert_eq!(dns.names().last().map(String::as_str), Some("dangling.test"));
}

#[test]
fn a_wildcard_answers_every_name_below_its_suffix() {
    let ns = NetNs::new("wild");
    let zone = Zone::new().wildcard("*.tunnel.test", ns.addr(4), 1).a("exact.tunnel.test", ns.addr(3), 9);
    let dns = DnsServer::start_in(&ns, (ns.addr(2), 53).into(), zone);
    let server = dns.addr();

    let names: Vec<String> = (0..50).map(|i| format!("{i:04x}deadbeef{i}.c{i}.Tunnel.TEST")).collect();
    for name in &names {
        assert_eq!(query(server, name, RecordType::A, TIMEOUT), Ok(vec![IpAddr::V4(ns.addr(4))]), "{name}");
    }
    let reply = query_message(server, "x.tunnel.test", RecordType::A, TIMEOUT).unwrap();
    assert_eq!((reply.answers[0].name.to_ascii().as_str(), reply.answers[0].ttl), ("x.tunnel.test.", 1), "the answer's owner is the name asked");
    // A name of its own wins; the suffix itself and names beside it are not covered.
    assert_eq!(query(server, "exact.tunnel.test", RecordType::A, TIMEOUT), Ok(vec![IpAddr::V4(ns.addr(3))]));
    assert!(query(server, "tunnel.test", RecordType::A, TIMEOUT).unwrap_err().contains("NXDOMAIN"));
    assert!(query(server, "x.othertunnel.test", RecordType::A, TIMEOUT).unwrap_err().contains("NXDOMAIN"));

    let seen = dns.names();
    assert_eq!(seen.len(), 54);
    assert_eq!(seen[..50], names.iter().map(|n| n.to_ascii_lowercase()).collect::<Vec<_>>()[..]);
}

#[test]
fn the_dns_server_answers_over_tcp_on_the_same_port() {
    let ns = NetNs::new("dnstcp");
    let dns = DnsServer::start_in(&ns, (ns.addr(2), 0).into(), test_zone(&ns));
    let mut q = Message::new(0x1234, MessageType::Query, OpCode::Query);
    q.add_query(Query::query(Name::from_ascii("alias.test.").unwrap(), RecordType::A));
    let bytes = q.to_vec().unwrap();
    let mut c = TcpStream::connect_timeout(&dns.addr(), TIMEOUT).expect("connect to the DNS server over TCP");
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    for _ in 0..2 {
        c.write_all(&(bytes.len() as u16).to_be_bytes()).unwrap();
        c.write_all(&bytes).unwrap();
        let mut len = [0u8; 2];
        c.read_exact(&mut len).unwrap();
        let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
        c.read_exact(&mut reply).unwrap();
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!((reply.id, reply.answers.len()), (0x1234, 3));
    }
    assert_eq!(dns.queries(), 2);
}

#[test]
fn a_query_to_a_silent_port_times_out_with_the_reason() {
    let ns = NetNs::new("silent");
    let started = Instant::now();
    let err = query((ns.addr(2), 5353).into(), "allowed.test", RecordType::A, Duration::from_millis(300)).unwrap_err();
    assert!(err.contains("no answer") && err.contains("allowed.test"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "gave up in time");
}

#[test]
fn a_query_whose_sendto_fails_says_so_with_the_os_error() {
    // A broadcast without SO_BROADCAST: sendto fails with EACCES, as a refused sendmsg would
    // with EPERM.
    let err = query((Ipv4Addr::BROADCAST, 53).into(), "allowed.test", RecordType::A, TIMEOUT).unwrap_err();
    assert!(err.contains("sendto") && err.contains("Permission denied"), "{err}");
}

/// Counts datagrams arriving on `socket` (and their sources) until `want` arrived or 5 s passed.
fn count_datagrams(socket: &UdpSocket, want: usize) -> (usize, Vec<SocketAddr>) {
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let (mut n, mut sources, mut buf) = (0, Vec::new(), vec![0u8; 2048]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while n < want && Instant::now() < deadline {
        if let Ok((_, from)) = socket.recv_from(&mut buf) {
            n += 1;
            if !sources.contains(&from) {
                sources.push(from);
            }
        }
    }
    (n, sources)
}

/// A bigger receive buffer (as root, past rmem_max), so a burst is not dropped while the
/// counting thread is not scheduled.
fn big_receive_buffer(socket: &UdpSocket) {
    use std::os::fd::AsRawFd as _;
    let size: libc::c_int = 16 << 20;
    // SAFETY: setsockopt on an open socket with a c_int option value.
    let rc = unsafe { libc::setsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, (&raw const size).cast(), size_of::<libc::c_int>() as libc::socklen_t) };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

#[test]
fn malformed_dns_from_port_53_in_the_namespace_all_reaches_the_host() {
    let ns = NetNs::new("junk");
    let receiver = UdpSocket::bind((ns.host_addr(), 0)).unwrap();
    big_receive_buffer(&receiver);
    let to = receiver.local_addr().unwrap();
    let from = SocketAddr::from((ns.addr(3), 53));
    let sent = ns.run_in(|| send_malformed(from, to, 1000, 42));
    assert_eq!(sent, 1000);
    let (got, sources) = count_datagrams(&receiver, sent);
    assert_eq!(got, sent, "datagrams received on the host");
    assert_eq!(sources, [from], "all from port 53 in the namespace");

    // The same seed makes the same datagrams; another seed, others.
    let lengths = |seed| {
        let r = UdpSocket::bind("127.0.0.1:0").unwrap();
        big_receive_buffer(&r);
        let to = r.local_addr().unwrap();
        assert_eq!(send_malformed("127.0.0.1:0".parse().unwrap(), to, 200, seed), 200);
        r.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut buf = vec![0u8; 2048];
        (0..200).map_while(|_| r.recv(&mut buf).ok().map(|n| buf[..n].to_vec())).collect::<Vec<_>>()
    };
    let a = lengths(7);
    assert_eq!(a.len(), 200);
    assert_eq!(a, lengths(7));
    assert_ne!(a, lengths(8));
    assert!(a.iter().any(Vec::is_empty) || a.iter().any(|d| d.len() < 12), "some shorter than a header");
    assert!(a.iter().any(|d| d.len() > 300), "some long ones");
}

#[test]
fn the_dns_server_survives_malformed_datagrams_and_still_answers() {
    let ns = NetNs::new("survive");
    let dns = DnsServer::start_in(&ns, (ns.addr(2), 53).into(), test_zone(&ns));
    let server = dns.addr();
    let sent = ns.run_in(|| send_malformed((ns.addr(4), 53).into(), server, 500, 1));
    assert_eq!(sent, 500);
    let deadline = Instant::now() + TIMEOUT;
    while dns.malformed() + dns.queries() < 500 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert!(dns.malformed() > 400, "most were not queries it could parse: {} malformed, {} queries", dns.malformed(), dns.queries());
    assert_eq!(query(server, "allowed.test", RecordType::A, TIMEOUT), Ok(vec![IpAddr::V4(ns.addr(3))]));
    // Zone records given as data work as the builders do.
    let mut zone = Zone::new();
    zone.insert("Data.Test", Rr::A(ns.addr(4)), 3);
    let local = DnsServer::start("127.0.0.1:0".parse().unwrap(), zone);
    assert_eq!(query(local.addr(), "data.test", RecordType::A, TIMEOUT), Ok(vec![IpAddr::V4(ns.addr(4))]));
}
