//! Exfiltration-shaped flows, end to end: byte budgets cut in the kernel, sensitive reads that
//! taint a process tree, FQDN allowlists learned from the agent's own DNS answers, DNS-tunnel
//! shapes, and malformed DNS. All traffic stays on loopback or in a network namespace the test
//! creates. Run as root by `cargo xtask test`.
use std::{
    net::{Ipv4Addr, SocketAddr},
    os::unix::process::ExitStatusExt as _,
    time::{Duration, Instant},
};

use guard_tests::{
    Daemon, TempDir, agent_cmd,
    dns_server::{DnsServer, Zone, send_malformed},
    field, launch,
    netns::{NetNs, tcp_sink, tcp_sink_local},
    spawn_launch, unique,
};
use serde_json::Value;

const DNS: &str = env!("CARGO_BIN_EXE_guard-test-dns");
const NET: &str = env!("CARGO_BIN_EXE_guard-test-connect");
const PYTHON: &str = "/usr/bin/python3";

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(prefix))
}

fn status_exfil() -> Value {
    let out = agent_cmd(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status --json: {e}: {}", stdout(&out)));
    v["exfil"].clone()
}

/// DNS records the kernel dropped because the ring buffer was full (from `status`).
fn dns_drops() -> u64 {
    let out = agent_cmd(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status --json: {e}: {}", stdout(&out)));
    v["counters"]["ring_buffer_drops"].as_array().into_iter().flatten().filter(|d| d["kind"] == "dns").filter_map(|d| d["dropped"].as_u64()).sum()
}

/// Streams `mib` MiB to `addr`, printing `sent N` (bytes written before it stopped).
const STREAM: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
chunk = b"x" * 65536
sent = 0
try:
    for _ in range(int(sys.argv[3]) * 16):
        s.sendall(chunk)
        sent += len(chunk)
        print("sent", sent, flush=True)
    s.close()
    print("done", flush=True)
except OSError as e:
    print("oserror", e.errno, flush=True)
"#;

#[test]
fn a_stream_over_budget_is_cut_in_the_kernel_and_its_sender_killed_but_an_exempt_one_completes() {
    let dir = TempDir::new("budget");
    let agent = unique("budget");
    const BUDGET: u64 = 1 << 20;
    let daemon = Daemon::start(
        &dir,
        &format!(
            "agents:\n  - name: {agent}\n    exfil:\n      egress_budget: {{ bytes: 1MiB, per: 60s, action: kill }}\n      budget_exempt: [127.0.0.2/32]\n"
        ),
    );
    // Loopback is not exempt in this policy: 127.0.0.1 is limited like any destination.
    let sink = tcp_sink_local(Ipv4Addr::LOCALHOST);
    let port = sink.addr().port().to_string();
    let (_, out) = launch(&agent, &[PYTHON, "-c", STREAM, "127.0.0.1", &port, "50"], &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "the streamer was not killed: {:?} {}", out.status, stdout(&out));
    // An observation window on purpose: the assertion below is an upper bound, and bytes past
    // the budget would have to arrive in it. (No event marks "nothing more will come": the
    // kernel drops the rest, and the dead sender's retransmissions keep the connection open.)
    let received = sink.wait_bytes(u64::MAX, Duration::from_secs(2));
    assert!(received > 0, "nothing reached the sink");
    // IP packet lengths are counted, so the payload that got through is below the budget.
    assert!(received <= BUDGET, "the sink received {received} bytes, budget {BUDGET}");
    let v = daemon.await_verdict("the budget verdict", 10, |v| field(v, "/unmapped/operation") == "egress_budget");
    assert_eq!(field(&v, "/unmapped/verdict"), "killed");
    assert_eq!(field(&v, "/dst_endpoint/ip"), "127.0.0.1");
    assert_eq!(field(&v, "/dst_endpoint/port"), port);
    assert_eq!(field(&v, "/unmapped/exfil/egress_budget/budget"), BUDGET.to_string());
    assert_eq!(field(&v, "/unmapped/exfil/egress_budget/window_seconds"), "60.0");
    let sent: u64 = field(&v, "/unmapped/exfil/egress_budget/bytes_sent").parse().unwrap();
    assert!(sent <= BUDGET && sent >= received, "bytes_sent {sent}, received {received}");
    assert!(field(&v, "/actor/process/pid") != "", "{v:#}");
    assert_eq!(field(&v, "/unmapped/rule/section"), "exfil.egress_budget");
    assert!(field(&v, "/unmapped/error").is_empty(), "{v:#}");
    assert_eq!(daemon.findings(|f| field(f, "/unmapped/operation") == "egress_budget").len(), 1);

    // An exempt destination: counted, never limited — 50 MiB arrive whole.
    let exempt = tcp_sink_local(Ipv4Addr::new(127, 0, 0, 2));
    let port = exempt.addr().port().to_string();
    let (_, out) = launch(&agent, &[PYTHON, "-c", STREAM, "127.0.0.2", &port, "50"], &[]);
    assert!(out.status.success() && stdout(&out).contains("done"), "exempt stream: {:?} {}", out.status, stdout(&out));
    assert_eq!(exempt.wait_bytes(50 << 20, Duration::from_secs(10)), 50 << 20);
    assert_eq!(daemon.verdicts(|v| field(v, "/unmapped/operation") == "egress_budget").len(), 1, "only the first stream was over budget");
    daemon.stop();
}

/// Optionally reads a file, optionally forks, then connects (in the child when forked):
/// prints `connected` or `errno N`.
const READ_THEN_CONNECT: &str = r#"
import os, socket, sys
path, host, port, fork = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "fork"
if path != "-":
    open(path).read()
if fork and os.fork() != 0:
    _, status = os.wait()
    sys.exit(os.waitstatus_to_exitcode(status))
try:
    socket.create_connection((host, port), timeout=3).close()
    print("connected", os.getpid(), flush=True)
except OSError as e:
    print("errno", e.errno, os.getpid(), flush=True)
    sys.exit(3)
"#;

#[test]
fn a_sensitive_read_taints_the_reader_and_its_children_and_the_verdict_names_it() {
    let dir = TempDir::new("taint");
    let agent = unique("taint");
    let home = dir.path("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let key = home.join(".ssh/id_rsa");
    std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n").unwrap();
    std::fs::write(home.join("notes.txt"), "nothing secret\n").unwrap();
    let daemon = Daemon::start(
        &dir,
        &format!(
            "agents:\n  - name: {agent}\n    network:\n      default: allow\n      allow:\n        - cidr: 127.0.0.3/32\n    exfil:\n      sensitive_paths: [\"**/.ssh/id_*\"]\n      after_sensitive_read: allowlist-only\n"
        ),
    );
    let sink = tcp_sink_local(Ipv4Addr::LOCALHOST);
    let allowed = tcp_sink_local(Ipv4Addr::new(127, 0, 0, 3));
    let port = sink.addr().port().to_string();
    let run = |file: &str, host: &str, port: &str, fork: &str| {
        let (_, out) = launch(&agent, &[PYTHON, "-c", READ_THEN_CONNECT, file, host, port, fork], &[("HOME", home.to_str().unwrap())]);
        stdout(&out)
    };
    // Without the read (an ordinary file read instead) the connect works.
    let notes = home.join("notes.txt");
    assert!(run(notes.to_str().unwrap(), "127.0.0.1", &port, "no").starts_with("connected"), "a connect after an ordinary read");
    // Read the key, then connect at once: refused.
    let out = run(key.to_str().unwrap(), "127.0.0.1", &port, "no");
    assert!(out.starts_with(&format!("errno {}", libc::EPERM)), "connect after reading the key: {out}");
    let pid = out.split_whitespace().nth(2).unwrap().to_owned();
    let v = daemon.await_verdict("the refused connect", 10, |v| field(v, "/actor/process/pid") == pid && v["class_uid"] == 4001);
    assert_eq!(field(&v, "/unmapped/verdict"), "denied");
    assert_eq!(field(&v, "/unmapped/exfil/sensitive_read/path"), key.to_str().unwrap());
    assert_eq!(field(&v, "/unmapped/exfil/sensitive_read/reader_pid"), pid);
    assert_eq!(field(&v, "/unmapped/rule/section"), "exfil.after_sensitive_read");
    assert!(field(&v, "/unmapped/reason").contains(".ssh/id_rsa"), "{v:#}");
    // An allow-listed destination still works after the read.
    let out = run(key.to_str().unwrap(), "127.0.0.3", &allowed.addr().port().to_string(), "no");
    assert!(out.starts_with("connected"), "allow-listed connect after the read: {out}");
    // A child of the reader is tainted too.
    let out = run(key.to_str().unwrap(), "127.0.0.1", &port, "fork");
    assert!(out.starts_with(&format!("errno {}", libc::EPERM)), "child's connect after its parent's read: {out}");
    let child = out.split_whitespace().nth(2).unwrap().to_owned();
    let v = daemon.await_verdict("the child's refused connect", 10, |v| field(v, "/actor/process/pid") == child && v["class_uid"] == 4001);
    assert_eq!(field(&v, "/unmapped/exfil/sensitive_read/inherited"), "true");
    assert_eq!(field(&v, "/unmapped/exfil/sensitive_read/path"), key.to_str().unwrap());
    assert_ne!(field(&v, "/unmapped/exfil/sensitive_read/reader_pid"), child);
    let x = status_exfil();
    assert!(x["sensitive_reads"].as_u64().unwrap() >= 3, "{x:#}");
    daemon.stop();
}

fn server(ns: &NetNs) -> SocketAddr {
    SocketAddr::new(ns.addr(2).into(), 53)
}

#[test]
fn dns_answers_allow_exactly_the_allowed_names_until_their_ttl_runs_out() {
    let ns = NetNs::new("fqdn");
    let dir = TempDir::new("fqdn");
    let agent = unique("fqdn");
    let (allowed_ip, other_ip) = (ns.addr(3), ns.addr(4));
    let zone = Zone::new().a("allowed.test", allowed_ip, 2).a("other.test", other_ip, 2);
    let dns = DnsServer::start_in(&ns, server(&ns), zone);
    let sink_a = tcp_sink(&ns, allowed_ip, 8080);
    let sink_b = tcp_sink(&ns, other_ip, 8080);
    let daemon = Daemon::start(
        &dir,
        &format!(
            "agents:\n  - name: {agent}\n    network:\n      default: deny\n      dns_grace: 1s\n      allow:\n        - cidr: {}/32\n          ports: [53]\n        - host: allowed.test\n          ports: [8080]\n",
            ns.addr(2)
        ),
    );
    let srv = server(&ns).to_string();
    // Before any answer the address is refused like any other.
    let (_, out) = launch(&agent, &[NET, &allowed_ip.to_string(), "8080"], &[]);
    assert_eq!(out.status.code(), Some(3), "connect before resolving: {}", stdout(&out));
    let v = daemon.await_verdict("the refusal before resolving", 10, |v| field(v, "/dst_endpoint/ip") == allowed_ip.to_string());
    assert!(field(&v, "/unmapped/reason").contains("never answered"), "{v:#}");

    // The daemon learns the address from the answer a moment after the client has it (see
    // README, "FQDN allowlists"): the client connects 200 ms later, as a retrying one would.
    let (_, out) = launch(&agent, &[DNS, &srv, "allowed.test", "8080", "200"], &[]);
    let text = stdout(&out);
    assert_eq!(line(&text, "addr "), Some(allowed_ip.to_string().as_str()), "{text}");
    assert!(text.contains("connected"), "connect to allowed.test's address: {text}");
    assert_eq!(sink_a.wait_bytes(0, Duration::from_millis(100)), 0);
    assert!(sink_a.connections() >= 1);
    let v = daemon.await_verdict("the allowed connect", 10, |v| field(v, "/dst_endpoint/ip") == allowed_ip.to_string() && field(v, "/unmapped/verdict") == "allowed");
    assert_eq!(field(&v, "/unmapped/rule/matcher"), "host: allowed.test ports: 8080");

    let (_, out) = launch(&agent, &[DNS, &srv, "other.test", "8080", "200"], &[]);
    let text = stdout(&out);
    assert_eq!(line(&text, "addr "), Some(other_ip.to_string().as_str()), "{text}");
    assert_eq!(line(&text, "errno "), Some(libc::EPERM.to_string().as_str()), "connect to other.test's address: {text}");
    assert_eq!(sink_b.connections(), 0);
    let v = daemon.await_verdict("the refused connect", 10, |v| field(v, "/dst_endpoint/ip") == other_ip.to_string());
    assert_eq!(field(&v, "/unmapped/verdict"), "denied");
    assert!(field(&v, "/unmapped/reason").contains("other.test"), "{v:#}");

    // TTL 2 s + grace 1 s: then the learned address is gone. Real time must pass for that (a
    // sleep on purpose); the daemon then drops the address at its next tick (100 ms), which is
    // waited for: the connect is refused within the second the test always allowed for it.
    std::thread::sleep(Duration::from_secs(3));
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let (_, out) = launch(&agent, &[NET, &allowed_ip.to_string(), "8080"], &[]);
        if out.status.code() == Some(3) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "connect after the TTL ran out: {}", stdout(&out));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(dns.queries() >= 2);
    drop(daemon);
    drop((sink_a, sink_b, dns));
}

#[test]
fn a_dns_tunnel_burst_is_cut_off_and_normal_lookups_are_not() {
    let ns = NetNs::new("tunnel");
    let dir = TempDir::new("tunnel");
    let agent = unique("tunnel");
    let zone = Zone::new().a("allowed.test", ns.addr(3), 300).wildcard("*.tunnel.test", ns.addr(3), 0);
    let dns = DnsServer::start_in(&ns, server(&ns), zone);
    let daemon = Daemon::start(&dir, &format!("agents:\n  - name: {agent}\n    exfil:\n      dns_tunnel: {{ max_queries: 60, per: 60s }}\n"));
    let srv = server(&ns).to_string();
    // Ordinary lookups, 40 of them: all answered, nothing reported.
    let (_, out) = launch(&agent, &[DNS, &srv, "repeat", "40", "allowed.test"], &[]);
    assert_eq!(line(&stdout(&out), "answered "), Some("40"), "{}", stdout(&out));
    // A tunnel-shaped burst: long random labels. The first one is answered; then the
    // workload's DNS is refused.
    let (_, out) = launch(&agent, &[DNS, &srv, "burst", "50", "tunnel.test"], &[]);
    let text = stdout(&out);
    let answered: usize = line(&text, "answered ").unwrap().parse().unwrap();
    assert!(answered < 5, "the burst was not cut off: {text}");
    assert!(line(&text, "first_error ").is_some_and(|e| e.contains("Operation not permitted")), "{text}");
    let v = daemon.await_verdict("the tunnel verdict", 10, |v| field(v, "/unmapped/operation") == "dns_tunnel");
    assert_eq!(field(&v, "/unmapped/verdict"), "denied");
    assert!(field(&v, "/unmapped/exfil/dns_tunnel/query").ends_with(".tunnel.test"), "{v:#}");
    assert_eq!(field(&v, "/unmapped/exfil/dns_tunnel/base_domain"), "tunnel.test");
    assert_eq!(field(&v, "/dst_endpoint/ip"), ns.addr(2).to_string());
    // Refused sends are reported as such.
    daemon.await_verdict("a refused DNS send", 10, |v| field(v, "/unmapped/operation") == "sendmsg" && field(v, "/unmapped/verdict") == "denied");
    // Another session of the agent keeps resolving.
    let (_, out) = launch(&agent, &[DNS, &srv, "repeat", "10", "allowed.test"], &[]);
    assert_eq!(line(&stdout(&out), "answered "), Some("10"), "{}", stdout(&out));
    assert_eq!(daemon.verdicts(|v| field(v, "/unmapped/operation") == "dns_tunnel").len(), 1);
    drop(daemon);
    drop(dns);
}

#[test]
fn ten_thousand_malformed_dns_packets_are_counted_and_nothing_breaks() {
    let ns = NetNs::new("baddns");
    let dir = TempDir::new("baddns");
    let agent = unique("baddns");
    let daemon = Daemon::start(&dir, &format!("agents:\n  - name: {agent}\n    exfil:\n      dns_tunnel: off\n    network:\n      allow:\n        - host: allowed.test\n"));
    let before = status_exfil();
    let dns_dropped_before = dns_drops();
    // The workload's socket sends once to port 53 in the namespace (so guard knows it), then
    // listens; 10,000 malformed "answers" come from port 53.
    let mut child = spawn_launch(&[], &agent, &[DNS, &server(&ns).to_string(), "listen", "8"], &[]);
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut port = None;
    let start = Instant::now();
    while port.is_none() && start.elapsed() < Duration::from_secs(10) {
        let mut l = String::new();
        if std::io::BufRead::read_line(&mut reader, &mut l).unwrap_or(0) == 0 {
            break;
        }
        port = l.trim().strip_prefix("port ").map(|p| p.parse::<u16>().unwrap());
    }
    let port = port.expect("the workload's port");
    let to = SocketAddr::new(ns.host_addr().into(), port);
    let from = server(&ns);
    let sent = ns.run_in(move || send_malformed(from, to, 10_000, 7));
    assert_eq!(sent, 10_000);
    let out = child.wait_with_output().unwrap();
    let received: u64 = line(&stdout(&out), "received ").unwrap_or("0").parse().unwrap();
    // The workload is gone, but the daemon may still be reading its DNS records: they are all
    // counted once a later exec's verdict is out (the ring buffer is read in order). A copy the
    // ring buffer had no room for is a counted drop instead.
    daemon.barrier(&agent);
    let dns_dropped = dns_drops() - dns_dropped_before;
    let after = status_exfil();
    let counted = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    let (malformed, truncated, parsed) = (counted("dns_malformed"), counted("dns_truncated"), counted("dns_messages"));
    eprintln!("sent {sent}, received by the workload {received}, malformed {malformed}, truncated {truncated}, parsed {parsed}, dropped {dns_dropped}");
    assert!(malformed + truncated + dns_dropped >= 9_000, "malformed {malformed} + truncated {truncated} + dropped {dns_dropped} of 10000");
    assert!(malformed > 0 && truncated > 0, "both kinds seen");
    // Still alive and enforcing.
    let (_, out) = launch(&agent, &[NET, "raw"], &[]);
    assert_eq!(out.status.code(), Some(3));
    daemon.await_verdict("a raw socket refused after the flood", 10, |v| field(v, "/unmapped/operation") == "socket");
    drop(daemon);
}
