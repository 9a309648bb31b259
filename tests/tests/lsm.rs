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

/// `cargo xtask vmtest` prints these: the lsm tier's verdicts, seen in a real guest.
fn evidence(v: &Value) {
    if let Ok(path) = std::env::var("GUARD_VM_EVIDENCE") {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        writeln!(f, "{v}").unwrap();
    }
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
        evidence(&v);
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
    assert_eq!(hooks.len(), 3, "{p:#}");
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
    assert!(text.contains("exec deny") && text.contains("lsm/file_open"), "{text}");
}

/// Opens `argv[1]` from a Python caller in the agent: prints what it read, or the errno the
/// open failed with.
const OPEN_CALLER: &str = "import os,sys\nprint('caller', os.getpid(), flush=True)\ntry:\n    with open(sys.argv[1]) as f:\n        print('read', f.read(), flush=True)\nexcept OSError as e:\n    print('errno', e.errno, flush=True)\n";

/// Runs OPEN_CALLER on `path` in `agent`: (stdout, status, caller pid).
fn open_in(agent: &str, path: &str) -> (String, std::process::ExitStatus, String) {
    let (_, out) = launch(agent, &["/usr/bin/python3", "-c", OPEN_CALLER, path], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let caller = stdout.lines().find_map(|l| l.strip_prefix("caller ")).unwrap_or_else(|| panic!("no caller pid: {stdout} {}", String::from_utf8_lossy(&out.stderr))).to_owned();
    (stdout, out.status, caller)
}

#[test]
fn a_denied_sensitive_open_fails_with_eperm_on_the_lsm_tier_and_is_killed_on_the_tracepoint_tier() {
    let dir = TempDir::new("lsm-open");
    let agent = unique("lsmopen");
    let keys = dir.path("home/.guardkeys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("id_test"), "s3cret-key\n").unwrap();
    std::fs::write(keys.join("known_hosts"), "not-a-secret\n").unwrap();
    let secret = keys.join("id_test").to_str().unwrap().to_owned();
    let daemon = Daemon::start(
        &dir,
        &format!("agents:\n  - name: {agent}\n    exfil:\n      sensitive_paths: [{{ path: \"**/.guardkeys/id_*\", action: deny }}]\n"),
    );
    let (tier, status) = tier_of(&daemon);
    let row = status["capabilities"].as_array().expect("capabilities").iter().find(|c| c["capability"] == "sensitive paths with action: deny").cloned().expect("deny row");

    let (stdout, st, caller) = open_in(&agent, &secret);
    assert!(!stdout.contains("s3cret"), "the denied file was read: {stdout}");
    let v = daemon.one_verdict("the denied open", |v| v["class_uid"] == 1001 && field(v, "/unmapped/file_op/op") == "open");
    assert_eq!(field(&v, "/actor/process/pid"), caller, "{v:#}");
    assert_eq!(field(&v, "/unmapped/tier"), tier, "{v:#}");
    assert!(field(&v, "/unmapped/rule/matcher").contains("**/.guardkeys/id_*"), "{v:#}");
    assert!(field(&v, "/file/path").ends_with(".guardkeys/id_test"), "{v:#}");
    if tier == "lsm" {
        // open() failed with EPERM; the caller lived and said so.
        assert!(stdout.contains(&format!("errno {}", libc::EPERM)), "{stdout}");
        assert!(st.success(), "the caller did not live: {st:?}");
        assert_eq!(field(&v, "/unmapped/verdict"), "denied", "{v:#}");
        assert!(field(&row, "/mechanism").contains("lsm/file_open"), "{row:#}");
        evidence(&v);
        // Judged on the opened file itself: a symlink with an innocent name is refused too.
        let link = dir.path("innocent");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let (stdout, st, caller) = open_in(&agent, link.to_str().unwrap());
        assert!(stdout.contains(&format!("errno {}", libc::EPERM)) && st.success(), "through a symlink: {st:?} {stdout}");
        let v = daemon.one_verdict("the open through a symlink", |v| field(v, "/actor/process/pid") == caller && field(v, "/unmapped/file_op/op") == "open");
        assert_eq!((field(&v, "/unmapped/file_op/raw_path"), field(&v, "/unmapped/verdict")), (".guardkeys/id_test".to_owned(), "denied".to_owned()), "{v:#}");
    } else {
        // Killed at the call: it never printed what it read, nor an errno.
        assert_eq!(st.signal(), Some(libc::SIGKILL), "{st:?} {stdout}");
        assert!(!stdout.contains("errno"), "{stdout}");
        assert_eq!(field(&v, "/unmapped/verdict"), "killed", "{v:#}");
        assert_eq!(field(&v, "/file/path"), secret, "{v:#}");
        assert!(field(&row, "/mechanism").contains("SIGKILL"), "{row:#}");
    }
    // Only what the glob names: another file in the same directory opens and reads.
    let (stdout, st, _) = open_in(&agent, keys.join("known_hosts").to_str().unwrap());
    assert!(st.success() && stdout.contains("read not-a-secret"), "{st:?} {stdout}");
    // And outside the agent nothing is refused.
    let out = std::process::Command::new("/usr/bin/python3").args(["-c", OPEN_CALLER, &secret]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("read s3cret-key"), "{out:?}");
    daemon.stop();
}

#[test]
fn audit_mode_stops_nothing_and_gives_one_verdict_on_either_tier() {
    let dir = TempDir::new("lsm-audit");
    let agent = unique("lsmaudit");
    let denied = install_marker(&dir, "bin/guard-lsm-audited");
    std::fs::create_dir_all(dir.path(".guardkeys")).unwrap();
    std::fs::write(dir.path(".guardkeys/id_audit"), "audited-key\n").unwrap();
    let daemon = Daemon::start(
        &dir,
        &format!("mode: audit\nagents:\n  - name: {agent}\n    exec:\n      deny:\n        - path: {denied}\n    exfil:\n      sensitive_paths: [{{ path: \"**/.guardkeys/id_*\", action: deny }}]\n"),
    );
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
    // A deny sensitive path is read, reported once as what would have happened.
    let (stdout, st, caller) = open_in(&agent, dir.path(".guardkeys/id_audit").to_str().unwrap());
    assert!(st.success() && stdout.contains("read audited-key"), "audit mode refused the open: {st:?} {stdout}");
    let v = daemon.one_verdict("the audited open", |v| field(v, "/actor/process/pid") == caller && field(v, "/unmapped/file_op/op") == "open");
    assert!(field(&v, "/unmapped/verdict").starts_with("would-"), "{v:#}");
    daemon.stop();
}
