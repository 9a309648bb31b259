//! The first kernel-boundary slice, end to end: a denied binary is killed before it runs, a
//! denied connection is refused with EPERM, and each produces exactly one verdict.
//!
//! Run as root by `cargo xtask test` (one test at a time).
use std::{
    net::{TcpListener, UdpSocket},
    os::unix::process::ExitStatusExt as _,
    process::Command,
};

use guard_tests::{Daemon, TempDir, assert_no_sessions, assert_nothing_left, field, launch, net_call, unique};

const MARKER: &str = env!("CARGO_BIN_EXE_guard-test-marker");
const CONNECT: &str = env!("CARGO_BIN_EXE_guard-test-connect");

/// Copies the marker program to `dir/rel`, executable.
fn install_marker(dir: &TempDir, rel: &str) -> String {
    let dst = dir.path(rel);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(MARKER, &dst).unwrap();
    dst.to_str().unwrap().to_owned()
}

fn exec_policy(agent: &str, denied_path: &str, denied_name: &str) -> String {
    format!(
        "agents:\n  - name: {agent}\n    exec:\n      deny:\n        - path: {denied_path}\n          message: test binary\n        - basename: {denied_name}\n"
    )
}

fn is_exec_of(v: &serde_json::Value, path: &str) -> bool {
    v["class_uid"] == 1007 && field(v, "/process/file/path") == path
}

#[test]
fn denied_binary_is_killed_before_its_first_instruction() {
    let dir = TempDir::new("exec");
    let agent = unique("exec");
    let denied = install_marker(&dir, "denied/guard-marker");
    let copy = install_marker(&dir, "other/guard-marker-copy");
    let daemon = Daemon::start(&dir, &exec_policy(&agent, &denied, "guard-denied-name"));

    // Inside the agent: killed by SIGKILL, the constructor never wrote its marker.
    let marker = dir.path("marker-denied");
    let (launcher, out) = launch(&agent, &[&denied], &[("GUARD_MARKER", marker.to_str().unwrap())]);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "launch status {:?}, stderr {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(!marker.exists(), "the denied binary ran: its constructor wrote {}", marker.display());
    let v = daemon.only_verdict(&agent, "the killed exec", |v| is_exec_of(v, &denied) && field(v, "/process/parent_process/pid") == launcher.to_string());
    assert_eq!(field(&v, "/unmapped/verdict"), "killed");
    assert_eq!(field(&v, "/unmapped/agent"), agent);
    assert_eq!(field(&v, "/unmapped/rule/matcher"), format!("path: {denied}"));
    assert_eq!(field(&v, "/unmapped/rule/message"), "test binary");
    assert_eq!(field(&v, "/unmapped/tier"), "tracepoint");
    assert!(field(&v, "/unmapped/cgroup/path").starts_with(&format!("/guard/{agent}/")), "{v:#}");
    assert_ne!(field(&v, "/process/pid"), "0");
    assert!(v["time"].as_u64().unwrap() > 1_600_000_000_000, "{v:#}");

    // A copy of the same program under another (not denied) path and name runs.
    let marker_copy = dir.path("marker-copy");
    let (launcher, out) = launch(&agent, &[&copy], &[("GUARD_MARKER", marker_copy.to_str().unwrap())]);
    assert!(out.status.success(), "copy: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(marker_copy.exists(), "the allowed copy did not run");
    let v = daemon.only_verdict(&agent, "the allowed exec", |v| is_exec_of(v, &copy) && field(v, "/process/parent_process/pid") == launcher.to_string());
    assert_eq!(field(&v, "/unmapped/verdict"), "allowed");

    // Outside any agent the denied binary runs, and no verdict is printed for it.
    let marker_out = dir.path("marker-outside");
    let out = Command::new(&denied).env("GUARD_MARKER", &marker_out).output().unwrap();
    assert!(out.status.success() && marker_out.exists(), "the binary did not run outside the agent");
    // Once a later exec's verdict is out, one for the untagged exec would be too.
    daemon.barrier(&agent);
    let outside = daemon.verdicts(|v| is_exec_of(v, &denied));
    assert_eq!(outside.len(), 1, "an untagged exec produced a verdict: {outside:#?}");

    assert_no_sessions(&agent);
    daemon.stop();
}

#[test]
fn denied_basename_is_killed_wherever_it_lives() {
    let dir = TempDir::new("basename");
    let agent = unique("base");
    let named = install_marker(&dir, "somewhere/guard-denied-name");
    let daemon = Daemon::start(&dir, &exec_policy(&agent, "/nonexistent/x", "guard-denied-name"));

    let marker = dir.path("marker");
    let (_, out) = launch(&agent, &[&named], &[("GUARD_MARKER", marker.to_str().unwrap())]);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{:?}", out.status);
    assert!(!marker.exists());
    let v = daemon.only_verdict(&agent, "the killed exec", |v| is_exec_of(v, &named));
    assert_eq!(field(&v, "/unmapped/verdict"), "killed");
    assert_eq!(field(&v, "/unmapped/rule/matcher"), "basename: guard-denied-name");
    // Outside agents the same copy runs.
    let outside = dir.path("marker-outside");
    let out = Command::new(&named).env("GUARD_MARKER", &outside).output().unwrap();
    assert!(out.status.success() && outside.exists(), "the copy did not run outside agents");
    daemon.stop();
}

struct Listeners {
    denied: u16,
    allowed: u16,
    _sockets: Vec<TcpListener>,
}

/// One denied and one allowed listening port on `addr` (the kernel picks free ports).
fn listeners(addr: &str) -> Listeners {
    let a = TcpListener::bind((addr, 0)).unwrap();
    let b = TcpListener::bind((addr, 0)).unwrap();
    Listeners { denied: a.local_addr().unwrap().port(), allowed: b.local_addr().unwrap().port(), _sockets: vec![a, b] }
}

#[test]
fn denied_connect_is_refused_with_eperm_v4_and_v6() {
    let dir = TempDir::new("connect");
    let agent = unique("conn");
    let v4 = listeners("127.0.0.1");
    let v6 = listeners("::1");
    let policy = format!(
        "agents:\n  - name: {agent}\n    network:\n      default: allow\n      deny:\n        - cidr: 127.0.0.1/32\n          ports: [{}]\n        - cidr: ::1/128\n          ports: [{}]\n          message: no v6 here\n",
        v4.denied, v6.denied
    );
    let daemon = Daemon::start(&dir, &policy);

    for (addr, l, rule) in [("127.0.0.1", &v4, format!("cidr: 127.0.0.1/32 ports: {}", v4.denied)), ("::1", &v6, format!("cidr: ::1/128 ports: {}", v6.denied))] {
        // Inside the agent: the denied port gets EPERM...
        let (code, pid, errno) = net_call(Some(&agent), CONNECT, &[addr, &l.denied.to_string()]);
        assert_eq!((code, errno), (3, Some(libc::EPERM)), "denied connect to {addr}:{}", l.denied);
        let v = daemon.only_verdict(&agent, "the denied connect", |v| v["class_uid"] == 4001 && field(v, "/actor/process/pid") == pid);
        assert_eq!(field(&v, "/unmapped/verdict"), "denied");
        assert_eq!(field(&v, "/unmapped/agent"), agent);
        assert_eq!(field(&v, "/dst_endpoint/ip"), addr);
        assert_eq!(field(&v, "/dst_endpoint/port"), l.denied.to_string());
        assert_eq!(field(&v, "/unmapped/rule/matcher"), rule);
        assert_eq!(field(&v, "/connection_info/protocol_name"), "tcp");
        assert_eq!(field(&v, "/activity_name"), "Refuse");
        assert!(field(&v, "/actor/process/file/path").ends_with("guard-test-connect"), "{v:#}");

        // ...the allowed port connects...
        let (code, pid, _) = net_call(Some(&agent), CONNECT, &[addr, &l.allowed.to_string()]);
        assert_eq!(code, 0, "allowed connect to {addr}:{}", l.allowed);
        let v = daemon.only_verdict(&agent, "the allowed connect", |v| v["class_uid"] == 4001 && field(v, "/actor/process/pid") == pid);
        assert_eq!(field(&v, "/unmapped/verdict"), "allowed");
        assert_eq!(field(&v, "/unmapped/rule"), "");

        // ...and outside the agent the denied port connects too, with no verdict.
        let (code, pid, _) = net_call(None, CONNECT, &[addr, &l.denied.to_string()]);
        assert_eq!(code, 0, "untagged connect to {addr}:{}", l.denied);
        daemon.assert_no_verdict_by(&agent, "an untagged connect", |v| field(v, "/actor/process/pid") == pid);
    }
    assert_no_sessions(&agent);
    daemon.stop();
}

#[test]
fn v4_mapped_v6_is_judged_as_v4() {
    let dir = TempDir::new("mapped");
    let agent = unique("mapped");
    // A dual-stack listener so the mapped address is reachable.
    let sock = TcpListener::bind("[::]:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let policy = format!(
        "agents:\n  - name: {agent}\n    network:\n      deny:\n        - cidr: 127.0.0.0/8\n          ports: [{port}, {udp_port}]\n"
    );
    let daemon = Daemon::start(&dir, &policy);
    let (code, pid, errno) = net_call(Some(&agent), CONNECT, &["::ffff:127.0.0.1", &port.to_string()]);
    assert_eq!((code, errno), (3, Some(libc::EPERM)));
    let v = daemon.only_verdict(&agent, "the mapped connect", |v| field(v, "/actor/process/pid") == pid);
    assert_eq!(field(&v, "/dst_endpoint/ip"), "127.0.0.1");
    // UDP connect() goes through the same hook.
    let (code, _, errno) = net_call(Some(&agent), CONNECT, &["127.0.0.1", &udp_port.to_string(), "udp"]);
    assert_eq!((code, errno), (3, Some(libc::EPERM)));
    daemon.stop();
}

#[test]
fn bad_policy_is_rejected_with_its_position_and_nothing_is_attached() {
    let dir = TempDir::new("badpolicy");
    let agent = unique("bad");
    let path = dir.path("bad.yaml");
    std::fs::write(&path, format!("agents:\n  - name: {agent}\n    exec:\n      deny: [\n")).unwrap();
    let out = Command::new(guard_tests::agent_bin()).args(["daemon", "--policy"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.starts_with(&format!("{}:5:1: YAML syntax error", path.display())), "{stderr}");
    assert!(!guard_tests::cgroup2_root().join("guard").join(&agent).exists(), "an agent cgroup was created");
    assert_nothing_left();

    // A semantic error too.
    std::fs::write(&path, format!("agents:\n  - name: {agent}\n    network:\n      deny:\n        - cidr: 10.0.0.0/40\n")).unwrap();
    let out = Command::new(guard_tests::agent_bin()).args(["policy", "check"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), format!("{}:5:17: `10.0.0.0/40` is not a valid CIDR: bad prefix length", path.display()));
}

/// Rules that compile but cannot fire (or only in part) are warnings: printed with their
/// position on stderr, and the check still passes; the same warnings reach the daemon's log.
#[test]
fn policy_check_warns_about_rules_that_cannot_fire_and_passes() {
    let dir = TempDir::new("warnings");
    let agent = unique("warn");
    let path = dir.path("warn.yaml");
    let missing = dir.path("not-there");
    std::fs::write(
        &path,
        format!(
            "agents:\n  - name: {agent}\n    exec:\n      deny:\n        - path: {}\n        - basename: shred\n        - basename: shred\n    network:\n      deny:\n        - cidr: ::/0\n",
            missing.display()
        ),
    )
    .unwrap();
    let out = Command::new(guard_tests::agent_bin()).args(["policy", "check"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let p = path.display();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(lines[0].starts_with(&format!("{p}:5:11: warning: `{}` does not exist now", missing.display())), "{stderr}");
    assert!(lines[1].starts_with(&format!("{p}:7:11: warning: rule never decides: the `exec.deny` rule at line 6 repeats it")), "{stderr}");
    assert!(lines[2].starts_with(&format!("{p}:10:11: warning: `::/0` contains the IPv4-mapped addresses")), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok ("), "{}", String::from_utf8_lossy(&out.stdout));
    assert_nothing_left();
}

#[test]
fn launch_refuses_when_nothing_enforces() {
    let agent = unique("refuse");
    let (_, out) = launch(&agent, &["sh", "-c", "exit 0"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the guard daemon"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!guard_tests::cgroup2_root().join("guard").join(&agent).exists(), "a cgroup was made for a refused launch");
    // --allow-unguarded runs it anyway, untagged, and mirrors its status.
    let (_, out) = guard_tests::launch_with(&["--allow-unguarded"], &agent, &["sh", "-c", "exit 7"], &[]);
    assert_eq!(out.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&out.stderr).contains("UNGUARDED"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!guard_tests::cgroup2_root().join("guard").join(&agent).exists());
}

#[test]
fn launch_removes_its_cgroup_and_mirrors_the_exit_status() {
    let agent = unique("launch");
    let dir = TempDir::new("launch");
    let daemon = Daemon::start(&dir, &format!("agents:\n  - name: {agent}\n"));
    let (_, out) = launch(&agent, &["sh", "-c", "sleep 30 & exit 7"], &[]);
    assert_eq!(out.status.code(), Some(7));
    // The background sleep was ended with the session, and the session cgroup removed.
    assert_no_sessions(&agent);
    let (_, out) = launch(&agent, &["sh", "-c", "kill -TERM $$"], &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGTERM));
    let (_, out) = launch(&agent, &["/nonexistent/binary"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("running /nonexistent/binary"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_no_sessions(&agent);
    daemon.stop();
}

#[test]
fn a_policy_larger_than_the_maps_is_refused_before_loading_and_fits_when_raised() {
    let dir = TempDir::new("capacity");
    let agent = unique("cap");
    let rules: String = (0..40).map(|i| format!("        - basename: guard-cap-{i}\n")).collect();
    let policy = format!("agents:\n  - name: {agent}\n    exec:\n      deny:\n{rules}");
    let path = dir.path("policy.yaml");
    std::fs::write(&path, &policy).unwrap();
    let out = Command::new(guard_tests::agent_bin())
        .args(["daemon", "--detach-on-exit", "--map-entries", "32", "--policy"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the policy needs 40 entries in map EXEC_NAMES, which holds 32 (raise --map-entries)"), "{stderr}");
    assert_nothing_left();

    // Raised: it loads, and the last rule is enforced.
    let daemon = Daemon::start_with(&dir, &policy, &["--detach-on-exit", "--map-entries", "64"]);
    let last = install_marker(&dir, "bin/guard-cap-39");
    let marker = dir.path("marker");
    let (_, out) = launch(&agent, &[&last], &[("GUARD_MARKER", marker.to_str().unwrap())]);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL));
    assert!(!marker.exists());
    daemon.stop();
}

#[test]
fn observe_all_execs_reports_untagged_execs_without_enforcing() {
    let dir = TempDir::new("observe");
    let agent = unique("observe");
    let bin = install_marker(&dir, "bin/guard-observed");
    // The rule is the agent's: outside the agent it must not apply, only be reported.
    let policy = format!("agents:\n  - name: {agent}\n    exec:\n      deny:\n        - path: {bin}\n");
    let daemon = Daemon::start_with(&dir, &policy, &["--detach-on-exit", "--observe-all-execs"]);
    let marker = dir.path("marker");
    let out = Command::new(&bin).env("GUARD_MARKER", &marker).output().unwrap();
    assert!(out.status.success() && marker.exists(), "an untagged exec was enforced");
    let v = daemon.only_verdict(&agent, "the untagged exec", |v| is_exec_of(v, &bin));
    assert_eq!(field(&v, "/unmapped/verdict"), "allowed");
    assert_eq!(field(&v, "/unmapped/agent"), "", "no agent: {v:#}");
    daemon.stop();
}
