//! Egress control beyond the first slice: UDP sends (sendmsg), raw and packet sockets, default
//! deny with nested prefixes, and audit mode. Run as root by `cargo xtask test`.
use std::{
    net::{TcpListener, UdpSocket},
    os::unix::process::ExitStatusExt as _,
};

use guard_tests::{Daemon, TempDir, field, launch, net_call, unique};

const NET: &str = env!("CARGO_BIN_EXE_guard-test-connect");
const MARKER: &str = env!("CARGO_BIN_EXE_guard-test-marker");

fn by_pid(pid: &str) -> impl Fn(&serde_json::Value) -> bool + '_ {
    move |v| field(v, "/actor/process/pid") == pid
}

#[test]
fn udp_sendto_a_denied_port_is_refused_and_reported() {
    let dir = TempDir::new("sendto");
    let agent = unique("sendto");
    let denied = UdpSocket::bind("127.0.0.1:0").unwrap();
    let allowed = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (dp, ap) = (denied.local_addr().unwrap().port(), allowed.local_addr().unwrap().port());
    let daemon = Daemon::start(&dir, &format!("agents:\n  - name: {agent}\n    network:\n      deny:\n        - cidr: 127.0.0.1\n          ports: [{dp}]\n"));

    let (code, pid, errno) = net_call(Some(&agent), NET, &["127.0.0.1", &dp.to_string(), "sendto"]);
    assert_eq!((code, errno), (3, Some(libc::EPERM)), "sendto a denied port");
    let v = daemon.only_verdict(&agent, "the refused datagram", by_pid(&pid));
    assert_eq!(field(&v, "/unmapped/verdict"), "denied");
    assert_eq!(field(&v, "/unmapped/operation"), "sendmsg");
    assert_eq!(field(&v, "/connection_info/protocol_name"), "udp");
    assert_eq!(field(&v, "/dst_endpoint/port"), dp.to_string());

    // An allowed datagram goes out, and is not reported (only refusals are, for sends).
    let (code, pid, _) = net_call(Some(&agent), NET, &["127.0.0.1", &ap.to_string(), "sendto"]);
    assert_eq!(code, 0);
    let mut buf = [0u8; 16];
    allowed.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    assert_eq!(allowed.recv(&mut buf).unwrap(), 5, "the allowed datagram did not arrive");
    daemon.assert_no_verdict_by(&agent, "an allowed datagram", |v| by_pid(&pid)(v) && v["class_uid"] == 4001);

    // Outside agents the denied port receives.
    let (code, _, _) = net_call(None, NET, &["127.0.0.1", &dp.to_string(), "sendto"]);
    assert_eq!(code, 0);
    daemon.stop();
}

#[test]
fn raw_and_packet_sockets_are_refused_unless_allowed() {
    let dir = TempDir::new("raw");
    let strict = unique("raw");
    let lenient = unique("rawok");
    let daemon = Daemon::start(
        &dir,
        &format!("agents:\n  - name: {strict}\n  - name: {lenient}\n    network:\n      raw_sockets: allow\n"),
    );
    // A raw inet socket: socket() fails with EPERM (cgroup/sock_create).
    let (code, pid, errno) = net_call(Some(&strict), NET, &["raw"]);
    assert_eq!((code, errno), (3, Some(libc::EPERM)), "raw socket in {strict}");
    let v = daemon.only_verdict(&strict, "the refused socket", by_pid(&pid));
    assert_eq!(field(&v, "/unmapped/verdict"), "denied");
    assert_eq!(field(&v, "/unmapped/operation"), "socket");
    assert_eq!(field(&v, "/unmapped/socket/family"), "inet");
    assert_eq!(field(&v, "/unmapped/socket/type"), "raw");

    // A packet socket: no cgroup hook sees it, so the caller is killed at syscall entry, before
    // the socket exists (it never prints "ok").
    let (_, out) = launch(&strict, &[NET, "packet"], &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{:?}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("ok"), "the packet socket was created: {stdout}");
    let pid = stdout.lines().find_map(|l| l.strip_prefix("pid ")).unwrap().to_owned();
    let v = daemon.only_verdict(&strict, "the killed packet socket", by_pid(&pid));
    assert_eq!(field(&v, "/unmapped/verdict"), "killed");
    assert_eq!(field(&v, "/unmapped/socket/family"), "packet");

    for kind in ["raw", "packet"] {
        let (code, _, _) = net_call(Some(&lenient), NET, &[kind]);
        assert_eq!(code, 0, "{kind} socket where the policy allows it");
        let (code, _, _) = net_call(None, NET, &[kind]);
        assert_eq!(code, 0, "{kind} socket outside agents");
    }
    daemon.stop();
}

#[test]
fn default_deny_with_an_allow_list_and_a_longer_deny_prefix() {
    let dir = TempDir::new("prefix");
    let agent = unique("prefix");
    let one = TcpListener::bind("127.0.0.1:0").unwrap();
    let p1 = one.local_addr().unwrap().port();
    let two = TcpListener::bind("127.0.0.2:0").unwrap();
    let p2 = two.local_addr().unwrap().port();
    let six = TcpListener::bind("[::1]:0").unwrap();
    let p6 = six.local_addr().unwrap().port();
    let daemon = Daemon::start(
        &dir,
        &format!(
            "agents:\n  - name: {agent}\n    network:\n      default: deny\n      allow:\n        - cidr: 127.0.0.0/8\n      deny:\n        - cidr: 127.0.0.2/32\n"
        ),
    );
    let (code, _, _) = net_call(Some(&agent), NET, &["127.0.0.1", &p1.to_string()]);
    assert_eq!(code, 0, "127.0.0.1 is in the allowed /8");
    let (code, pid, errno) = net_call(Some(&agent), NET, &["127.0.0.2", &p2.to_string()]);
    assert_eq!((code, errno), (3, Some(libc::EPERM)), "the /32 deny is longer than the /8 allow");
    assert_eq!(field(&daemon.only_verdict(&agent, "127.0.0.2", by_pid(&pid)), "/unmapped/rule/matcher"), "cidr: 127.0.0.2/32");
    let (code, pid, errno) = net_call(Some(&agent), NET, &["::1", &p6.to_string()]);
    assert_eq!((code, errno), (3, Some(libc::EPERM)), "::1 is not allowed: default deny");
    let v = daemon.only_verdict(&agent, "::1", by_pid(&pid));
    assert_eq!(field(&v, "/unmapped/rule"), "", "the default decided, not a rule");
    assert_eq!(field(&v, "/unmapped/verdict"), "denied");
    for (addr, port) in [("127.0.0.2", p2), ("::1", p6)] {
        let (code, _, _) = net_call(None, NET, &[addr, &port.to_string()]);
        assert_eq!(code, 0, "{addr} outside agents");
    }
    daemon.stop();
}

#[test]
fn a_longer_allow_prefix_inside_a_denied_one_is_allowed() {
    let dir = TempDir::new("allowin");
    let agent = unique("allowin");
    let one = TcpListener::bind("127.0.0.1:0").unwrap();
    let two = TcpListener::bind("127.0.0.2:0").unwrap();
    let (p1, p2) = (one.local_addr().unwrap().port(), two.local_addr().unwrap().port());
    let daemon = Daemon::start(
        &dir,
        &format!("agents:\n  - name: {agent}\n    network:\n      deny:\n        - cidr: 127.0.0.0/8\n      allow:\n        - cidr: 127.0.0.1/32\n"),
    );
    let (code, pid, _) = net_call(Some(&agent), NET, &["127.0.0.1", &p1.to_string()]);
    assert_eq!(code, 0, "the /32 allow is longer than the /8 deny");
    assert_eq!(field(&daemon.only_verdict(&agent, "127.0.0.1", by_pid(&pid)), "/unmapped/rule/matcher"), "cidr: 127.0.0.1/32");
    let (code, _, errno) = net_call(Some(&agent), NET, &["127.0.0.2", &p2.to_string()]);
    assert_eq!((code, errno), (3, Some(libc::EPERM)), "127.0.0.2 is only in the denied /8");
    daemon.stop();
}

#[test]
fn audit_mode_reports_what_it_would_do_and_stops_nothing() {
    let dir = TempDir::new("audit");
    let agent = unique("audit");
    let bin = dir.path("guard-audited");
    std::fs::copy(MARKER, &bin).unwrap();
    let port_sock = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = port_sock.local_addr().unwrap().port();
    let daemon = Daemon::start(
        &dir,
        &format!(
            "mode: audit\nagents:\n  - name: {agent}\n    exec:\n      deny:\n        - basename: guard-audited\n    network:\n      deny:\n        - cidr: 127.0.0.1\n          ports: [{port}]\n"
        ),
    );
    let marker = dir.path("marker");
    let (_, out) = launch(&agent, &[bin.to_str().unwrap()], &[("GUARD_MARKER", marker.to_str().unwrap())]);
    assert!(out.status.success() && out.status.signal().is_none(), "{:?}", out.status);
    assert!(marker.exists(), "audit mode must not kill");
    let v = daemon.only_verdict(&agent, "the audited exec", |v| field(v, "/process/file/path") == bin.to_str().unwrap());
    assert_eq!(field(&v, "/unmapped/verdict"), "would-kill");
    assert_eq!(field(&v, "/action_id"), "3");

    let (code, pid, _) = net_call(Some(&agent), NET, &["127.0.0.1", &port.to_string()]);
    assert_eq!(code, 0, "audit mode must not refuse");
    assert_eq!(field(&daemon.only_verdict(&agent, "the audited connect", by_pid(&pid)), "/unmapped/verdict"), "would-deny");
    daemon.stop();
}

/// A deny written as an IPv4-mapped IPv6 address stops that IPv4 address in both families: the
/// kernel judges `::ffff:a.b.c.d` as `a.b.c.d` (by the IPv4 entries), and the policy stores the
/// rule there.
#[test]
fn a_v4_mapped_deny_stops_the_address_in_both_families() {
    let dir = TempDir::new("mapped");
    let agent = unique("mapped");
    let denied = TcpListener::bind("127.0.0.3:0").unwrap();
    let other = TcpListener::bind("127.0.0.4:0").unwrap();
    let (dp, op) = (denied.local_addr().unwrap().port().to_string(), other.local_addr().unwrap().port().to_string());
    let daemon = Daemon::start(&dir, &format!("agents:\n  - name: {agent}\n    network:\n      deny:\n        - cidr: ::ffff:127.0.0.3/128\n"));
    for addr in ["127.0.0.3", "::ffff:127.0.0.3"] {
        let (code, pid, errno) = net_call(Some(&agent), NET, &[addr, &dp]);
        assert_eq!((code, errno), (3, Some(libc::EPERM)), "connect to {addr} from the agent");
        let v = daemon.only_verdict(&agent, addr, by_pid(&pid));
        assert_eq!(field(&v, "/unmapped/verdict"), "denied", "{v:#}");
        assert_eq!(field(&v, "/unmapped/operation"), "connect");
        assert_eq!(field(&v, "/unmapped/rule/matcher"), "cidr: 127.0.0.3/32");
        assert_eq!(field(&v, "/dst_endpoint/ip"), "127.0.0.3");
        assert_eq!(field(&v, "/dst_endpoint/port"), dp);
    }
    // No broader than written: the next address connects in both families, and outside the
    // agent the denied one does too.
    for addr in ["127.0.0.4", "::ffff:127.0.0.4"] {
        assert_eq!(net_call(Some(&agent), NET, &[addr, &op]).0, 0, "connect to {addr} from the agent");
    }
    for addr in ["127.0.0.3", "::ffff:127.0.0.3"] {
        assert_eq!(net_call(None, NET, &[addr, &dp]).0, 0, "connect to {addr} outside agents");
    }
    daemon.stop();
}
