//! The enforcement tier, chosen by probing: on a kernel with BPF LSM active (`lsm=...,bpf`) the
//! `lsm` tier fails a denied exec with `EPERM` and the caller lives; elsewhere the daemon falls
//! back, visibly, to the `tracepoint` tier and kills the new image instead.
//!
//! `cargo xtask vmtest` boots stock Debian kernels with and without `bpf` in `lsm=` and sets
//! `GUARD_EXPECT_TIER` to the tier that boot must give; on the host the tests check that the
//! behaviour matches whichever tier the daemon reports.
use std::os::unix::process::ExitStatusExt as _;

use guard_tests::{Daemon, TempDir, agent_cmd, field, launch, unique};
use serde_json::Value;

const MARKER: &str = env!("CARGO_BIN_EXE_guard-test-marker");
const NET: &str = env!("CARGO_BIN_EXE_guard-test-connect");

fn install_marker(dir: &TempDir, rel: &str) -> String {
    let dst = dir.path(rel);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(MARKER, &dst).unwrap();
    dst.to_str().unwrap().to_owned()
}

/// The tier the daemon says it enforces with, checked against `GUARD_EXPECT_TIER` when set.
fn tier_of(daemon: &Daemon) -> (String, Value) {
    let out = agent_cmd(&["status", "--json"]);
    assert!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).expect("status --json");
    let tier = field(&status, "/tier");
    if let Ok(expected) = std::env::var("GUARD_EXPECT_TIER") {
        assert_eq!(tier, expected, "the daemon chose the wrong tier: {status:#}\nstderr:\n{}", daemon.stderr_text());
    }
    assert!(["lsm", "tracepoint"].contains(&tier.as_str()), "{status:#}");
    (tier, status)
}

/// Runs `path` from a Python caller in the agent: prints the errno execve failed with, or is
/// replaced by it.
const EXEC_CALLER: &str = "import os,sys\nprint('caller', os.getpid(), flush=True)\ntry:\n    os.execv(sys.argv[1], [sys.argv[1]])\nexcept OSError as e:\n    print('errno', e.errno, flush=True)\n";

#[test]
fn a_denied_exec_fails_with_eperm_on_the_lsm_tier_and_is_killed_on_the_tracepoint_tier() {
    let dir = TempDir::new("lsm-exec");
    let agent = unique("lsmexec");
    let denied = install_marker(&dir, "bin/guard-lsm-denied");
    let daemon = Daemon::start(
        &dir,
        &format!("agents:\n  - name: {agent}\n    exec:\n      deny:\n        - path: {denied}\n          message: lsm test\n"),
    );
    let (tier, status) = tier_of(&daemon);
    // The start-up log and status say the tier and why.
    assert!(daemon.stderr_text().contains(&format!("tier=\"{tier}\"")), "{}", daemon.stderr_text());
    assert!(!field(&status, "/tier_reason").is_empty(), "{status:#}");
    let exec_row = status["capabilities"].as_array().expect("capabilities").iter().find(|c| c["capability"] == "exec deny").cloned().expect("exec deny row");

    let marker = dir.path("marker");
    let (_, out) = launch(&agent, &["/usr/bin/python3", "-c", EXEC_CALLER, &denied], &[("GUARD_MARKER", marker.to_str().unwrap())]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let caller = stdout.lines().find_map(|l| l.strip_prefix("caller ")).expect("caller pid").to_owned();
    assert!(!marker.exists(), "the denied binary ran");
    let v = daemon.one_verdict("the denied exec", |v| v["class_uid"] == 1007 && field(v, "/process/file/path") == denied);
    assert_eq!(field(&v, "/unmapped/tier"), tier, "{v:#}");
    assert_eq!(field(&v, "/process/pid"), caller, "{v:#}");
    assert_eq!(field(&v, "/unmapped/rule/message"), "lsm test");
    if tier == "lsm" {
        // execve returned EPERM to a caller that lives on and exits by itself.
        assert!(stdout.contains(&format!("errno {}", libc::EPERM)), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "the caller did not live: {:?}", out.status);
        assert_eq!(field(&v, "/unmapped/verdict"), "denied", "{v:#}");
        assert!(field(&exec_row, "/mechanism").contains("bprm_check_security"), "{exec_row:#}");
        // `cargo xtask vmtest` prints it: the lsm tier's verdict, seen in a real guest.
        if let Ok(path) = std::env::var("GUARD_VM_EVIDENCE") {
            std::fs::write(path, format!("{v}\n")).unwrap();
        }
    } else {
        // The new image was killed before its first instruction.
        assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{:?} {stdout}", out.status);
        assert!(!stdout.contains("errno"), "{stdout}");
        assert_eq!(field(&v, "/unmapped/verdict"), "killed", "{v:#}");
        assert!(field(&exec_row, "/mechanism").contains("SIGKILL"), "{exec_row:#}");
        assert!(!field(&status, "/tier_reason").is_empty());
    }

    // An allowed binary still runs, and is reported by sched_process_exec.
    let allowed = install_marker(&dir, "bin/guard-lsm-allowed");
    let marker = dir.path("marker-allowed");
    let (_, out) = launch(&agent, &[&allowed], &[("GUARD_MARKER", marker.to_str().unwrap())]);
    assert!(out.status.success() && marker.exists(), "{:?}", out.status);
    let v = daemon.one_verdict("the allowed exec", |v| v["class_uid"] == 1007 && field(v, "/process/file/path") == allowed);
    assert_eq!(field(&v, "/unmapped/verdict"), "allowed");
    daemon.stop();
}

#[test]
fn hold_at_exec_and_connect_deny_work_on_either_tier() {
    let dir = TempDir::new("lsm-hold");
    let agent = unique("lsmhold");
    let held = install_marker(&dir, "bin/guard-lsm-held");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let daemon = Daemon::start(
        &dir,
        &format!(
            "agents:\n  - name: {agent}\n    exec:\n      hold:\n        - path: {held}\n          approve_timeout: 120s\n    network:\n      deny:\n        - cidr: 127.0.0.1/32\n          ports: [{port}]\n"
        ),
    );
    let (tier, _) = tier_of(&daemon);
    let marker = dir.path("marker-held");
    let child = guard_tests::spawn_launch(&[], &agent, &[&held], &[("GUARD_MARKER", marker.to_str().unwrap())]);
    let v = daemon.await_verdict("held", 30, |v| field(v, "/process/file/path") == held && field(v, "/unmapped/verdict") == "held");
    assert_eq!(field(&v, "/unmapped/tier"), tier);
    guard_tests::process::await_stopped(field(&v, "/process/pid").parse().expect("pid"));
    assert!(!marker.exists(), "ran while held");
    let out = agent_cmd(&["approve", &field(&v, "/unmapped/hold/id")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success() && marker.exists(), "approved but did not run: {:?}", out.status);

    let (code, _, errno) = guard_tests::net_call(Some(&agent), NET, &["127.0.0.1", &port.to_string()]);
    assert_eq!((code, errno), (3, Some(libc::EPERM)), "connect in {agent}");
    daemon.stop();
}

#[test]
fn a_packet_socket_is_refused_with_eperm_on_the_lsm_tier_and_killed_on_the_tracepoint_tier() {
    let dir = TempDir::new("lsm-sock");
    let agent = unique("lsmsock");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path("guard.yaml");
    std::fs::write(&config, format!("state_dir: {}\nmetrics:\n  listen: 127.0.0.1:{port}\n", dir.path("state").display())).unwrap();
    let daemon = Daemon::start_with(&dir, &format!("agents:\n  - name: {agent}\n"), &["--detach-on-exit", "--config", config.to_str().unwrap()]);
    let (tier, _) = tier_of(&daemon);
    // The metrics say the tier too.
    let other = if tier == "lsm" { "tracepoint" } else { "lsm" };
    assert_eq!(guard_tests::metric(port, &format!("guard_enforcement_tier{{tier=\"{tier}\"}}")), 1.0);
    assert_eq!(guard_tests::metric(port, &format!("guard_enforcement_tier{{tier=\"{other}\"}}")), 0.0);
    let (_, out) = launch(&agent, &[NET, "packet"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let pid = stdout.lines().find_map(|l| l.strip_prefix("pid ")).expect("pid line").to_owned();
    let v = daemon.one_verdict("the packet socket", |v| field(v, "/actor/process/pid") == pid && field(v, "/unmapped/operation") == "socket");
    assert_eq!(field(&v, "/unmapped/socket/family"), "packet");
    assert_eq!(field(&v, "/unmapped/tier"), tier);
    assert!(!stdout.contains("ok"), "the packet socket was created: {stdout}");
    if tier == "lsm" {
        // socket() failed with EPERM; the caller reported it and exited by itself.
        assert_eq!(out.status.code(), Some(3), "{:?} {stdout}", out.status);
        assert!(stdout.contains(&format!("errno {}", libc::EPERM)), "{stdout}");
        assert_eq!(field(&v, "/unmapped/verdict"), "denied");
    } else {
        assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{:?}", out.status);
        assert_eq!(field(&v, "/unmapped/verdict"), "killed");
    }
    daemon.stop();
}

#[test]
fn probe_prints_the_capability_table_and_agrees_with_the_daemon() {
    let out = agent_cmd(&["probe", "--json"]);
    assert!(out.status.success(), "probe: {}", String::from_utf8_lossy(&out.stderr));
    let p: Value = serde_json::from_slice(&out.stdout).expect("probe --json");
    let hooks = p["hooks"].as_array().expect("hooks");
    assert_eq!(hooks.len(), 2, "{p:#}");
    let all_ok = hooks.iter().all(|h| h["ok"] == true);
    let bpf_listed = p["lsms"].as_array().is_some_and(|l| l.iter().any(|m| m == "bpf"));
    // Independent of guard: securityfs's list of active LSMs.
    let listed_here = std::fs::read_to_string("/sys/kernel/security/lsm").map(|t| t.trim().split(',').any(|m| m == "bpf"));
    if let Ok(listed_here) = listed_here {
        assert_eq!(bpf_listed, listed_here, "{p:#}");
    }
    let expected = if bpf_listed && all_ok { "lsm" } else { "tracepoint" };
    assert_eq!(field(&p, "/tier"), expected, "{p:#}");
    if let Ok(t) = std::env::var("GUARD_EXPECT_TIER") {
        assert_eq!(field(&p, "/tier"), t, "{p:#}");
    }
    if !bpf_listed {
        assert!(field(&p, "/reason").contains("not active"), "{p:#}");
    }
    let text = String::from_utf8_lossy(&agent_cmd(&["probe"]).stdout).into_owned();
    assert!(text.contains("lsm/bprm_check_security") && text.contains(&format!("tier:        {expected}")), "{text}");
    assert!(text.contains("exec deny"), "{text}");
}

#[test]
fn audit_mode_stops_nothing_and_gives_one_verdict_on_either_tier() {
    let dir = TempDir::new("lsm-audit");
    let agent = unique("lsmaudit");
    let denied = install_marker(&dir, "bin/guard-lsm-audited");
    let daemon = Daemon::start(&dir, &format!("mode: audit\nagents:\n  - name: {agent}\n    exec:\n      deny:\n        - path: {denied}\n"));
    tier_of(&daemon);
    let marker = dir.path("marker-audited");
    let (_, out) = launch(&agent, &[&denied], &[("GUARD_MARKER", marker.to_str().unwrap())]);
    assert!(out.status.success() && marker.exists(), "audit mode stopped the exec: {:?}", out.status);
    let v = daemon.one_verdict("the audited exec", |v| v["class_uid"] == 1007 && field(v, "/process/file/path") == denied);
    assert_eq!(field(&v, "/unmapped/verdict"), "would-kill", "{v:#}");
    let (_, out) = launch(&agent, &[NET, "packet"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && stdout.contains("ok"), "audit mode stopped the packet socket: {:?} {stdout}", out.status);
    let pid = stdout.lines().find_map(|l| l.strip_prefix("pid ")).expect("pid line").to_owned();
    let v = daemon.one_verdict("the audited packet socket", |v| field(v, "/actor/process/pid") == pid && field(v, "/unmapped/operation") == "socket");
    assert!(field(&v, "/unmapped/verdict").starts_with("would-"), "{v:#}");
    daemon.stop();
}
