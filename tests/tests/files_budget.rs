//! The deletion budget (`files.delete_budget`) end to end: real `rm -rf`, Python's
//! `shutil.rmtree` and `find -delete`, each an agent workload started with `guard-agent launch`,
//! deleting 10,000 files under an unprotected temporary directory. Past the budget the kernel
//! kills the deleter (or stops it for approval); the files on disk show how many went, and the
//! verdict counts exactly those. Run as root by `cargo xtask test`.
use std::{os::unix::process::ExitStatusExt as _, path::Path, time::Duration};

use guard_tests::{Daemon, TempDir, agent_cmd, field, launch, spawn_launch, unique};
use serde_json::Value;

/// Files each deletion test starts with.
const FILES: usize = 10_000;
const BUDGET: u64 = 200;
/// Deletions the kernel cannot stop: the one that goes past the budget happened before its
/// system call returned. A single-threaded deleter makes exactly one.
const BATCH: u64 = 1;

/// `DIR/data` holding `n` empty files; returns its path.
fn fill(dir: &TempDir, name: &str, n: usize) -> String {
    let data = dir.path(name);
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..n {
        std::fs::write(data.join(format!("f{i:05}")), b"").unwrap();
    }
    data.to_str().unwrap().to_owned()
}

/// Entries left in `dir` (0 if it is gone).
fn left(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// The real program that deletes `dir` and everything in it.
fn deleter(tool: &str, dir: &str) -> Vec<String> {
    match tool {
        "rm" => vec!["/usr/bin/rm".into(), "-rf".into(), dir.into()],
        "python" => vec!["/usr/bin/python3".into(), "-c".into(), format!("import shutil; shutil.rmtree({dir:?})")],
        _ => vec!["/usr/bin/find".into(), dir.into(), "-delete".into()],
    }
}

fn budget_policy(agent: &str, mode: &str, spec: &str) -> String {
    format!("agents:\n  - name: {agent}\n    mode: {mode}\n    files:\n      delete_budget: {spec}\n")
}

/// A deletion-budget verdict about deletions in `dir`.
fn deletions_of(v: &Value, dir: &str) -> bool {
    v["class_uid"] == 1007 && field(v, "/unmapped/operation") == "delete_budget" && field(v, "/unmapped/deletions/where/0") == dir
}

#[test]
fn rm_python_and_find_are_killed_past_the_budget_and_the_verdict_counts_what_went() {
    let dir = TempDir::new("delbudget");
    let agent = unique("deleter");
    let daemon = Daemon::start(&dir, &budget_policy(&agent, "enforce", "{ count: 200, per: 10s, action: kill }"));
    for tool in ["rm", "python", "find"] {
        let data = fill(&dir, &format!("data-{tool}"), FILES);
        let argv = deleter(tool, &data);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let (_, out) = launch(&agent, &argv, &[]);
        assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{tool}: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
        let gone = (FILES - left(&data)) as u64;
        assert!(gone > BUDGET && gone <= BUDGET + BATCH, "{tool}: {gone} of {FILES} entries gone, budget {BUDGET}");
        let v = daemon.await_verdict(tool, 10, |v| deletions_of(v, &data) && field(v, "/unmapped/verdict") == "killed");
        let d = &v["unmapped"]["deletions"];
        assert_eq!(d["count"].as_u64(), Some(gone), "{tool}: the verdict's count is what is gone from disk: {v:#}");
        assert_eq!(d["budget"].as_u64(), Some(BUDGET));
        assert_eq!(d["per_s"].as_f64(), Some(10.0));
        assert_eq!(d["action"], "kill");
        assert!(field(&v, "/unmapped/deletions/last/path").starts_with(&format!("{data}/f")), "{v:#}");
        assert_eq!(field(&v, "/unmapped/rule/section"), "files.delete_budget");
        assert_eq!(field(&v, "/unmapped/session/launch_name"), agent);
        assert_eq!(field(&v, "/unmapped/error"), "", "{v:#}");
        // The rest is intact, still there a moment later (nothing of the workload lives on).
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!((FILES - left(&data)) as u64, gone, "{tool}: deletions went on after the kill");
        // Exactly one Detection Finding goes with it.
        let seq = field(&v, "/metadata/sequence");
        let findings = daemon.findings(|f| field(f, "/unmapped/activity_sequence") == seq);
        assert_eq!(findings.len(), 1, "{tool}: {findings:#?}");
        assert_eq!(field(&findings[0], "/unmapped/deletions/count"), gone.to_string());
    }
    let status: Value = serde_json::from_slice(&agent_cmd(&["status", "--json"]).stdout).expect("status --json");
    assert_eq!(status["deletions"]["budget_kills"], 3, "{status:#}");
    daemon.stop();
}

#[test]
fn deletions_under_the_budget_pass_untouched() {
    let dir = TempDir::new("delunder");
    let agent = unique("tidy");
    let daemon = Daemon::start(&dir, &budget_policy(&agent, "enforce", "{ count: 200, per: 10s, action: kill }"));
    let data = fill(&dir, "data", 50);
    let (_, out) = launch(&agent, &["/usr/bin/rm", "-rf", &data], &[]);
    assert!(out.status.success(), "{:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(!Path::new(&data).exists(), "rm -rf of 50 files did not finish");
    // The launch ends after its workload: a verdict would have come before the session ended.
    daemon.assert_no_verdict("deletions under the budget", |v| field(v, "/unmapped/operation") == "delete_budget");
    daemon.stop();
}

#[test]
fn audit_mode_reports_a_would_kill_and_stops_nothing() {
    let dir = TempDir::new("delaudit");
    let agent = unique("auditdel");
    let daemon = Daemon::start(&dir, &budget_policy(&agent, "audit", "{ count: 200, per: 10s, action: kill }"));
    let data = fill(&dir, "data", 300);
    let (_, out) = launch(&agent, &["/usr/bin/rm", "-rf", &data], &[]);
    assert!(out.status.success(), "{:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(!Path::new(&data).exists());
    let v = daemon.await_verdict("would-kill", 10, |v| deletions_of(v, &data) && field(v, "/unmapped/verdict") == "would-kill");
    assert_eq!(v["unmapped"]["deletions"]["count"].as_u64(), Some(BUDGET + 1), "{v:#}");
    // Reported once per window, not once per deletion past the budget.
    assert_eq!(daemon.verdicts(|v| deletions_of(v, &data)).len(), 1);
    daemon.stop();
}

#[test]
fn hold_stops_the_deleter_until_a_person_decides() {
    let dir = TempDir::new("delhold");
    let agent = unique("holddel");
    let daemon = Daemon::start(&dir, &budget_policy(&agent, "enforce", "{ count: 50, per: 60s, action: hold }"));
    let data = fill(&dir, "data", 1000);
    let child = spawn_launch(&[], &agent, &["/usr/bin/rm", "-rf", &data], &[]);
    let v = daemon.await_verdict("held deleter", 10, |v| deletions_of(v, &data) && field(v, "/unmapped/verdict") == "held");
    let pid: u32 = field(&v, "/process/pid").parse().expect("pid");
    guard_tests::process::await_stopped(pid);
    assert_eq!(v["unmapped"]["deletions"]["count"].as_u64(), Some(51), "{v:#}");
    assert_eq!(1000 - left(&data), 51);
    // It stays stopped: nothing more goes while nobody decides.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(guard_tests::process::state(pid), Some('T'));
    assert_eq!(1000 - left(&data), 51);

    // Approval: a fresh budget, and it stops again past it.
    let id = field(&v, "/unmapped/hold/id");
    let out = agent_cmd(&["approve", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let v2 = loop {
        let all = daemon.verdicts(|v| deletions_of(v, &data) && field(v, "/unmapped/verdict") == "held");
        if all.len() >= 2 {
            break all[1].clone();
        }
        assert!(std::time::Instant::now() < deadline, "not held again after approval: {:#?}", daemon.verdicts(|_| true));
        std::thread::sleep(Duration::from_millis(10));
    };
    guard_tests::process::await_stopped(pid);
    assert_eq!(v2["unmapped"]["deletions"]["count"].as_u64(), Some(51), "{v2:#}");
    assert_eq!(1000 - left(&data), 102);

    // Denial ends it: killed, the rest intact.
    let id2 = field(&v2, "/unmapped/hold/id");
    assert_ne!(id, id2);
    let out = agent_cmd(&["deny", &id2]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{:?}", out.status);
    let v = daemon.await_verdict("denied", 10, |v| deletions_of(v, &data) && field(v, "/unmapped/verdict") == "killed");
    assert_eq!(field(&v, "/unmapped/hold/decision"), "denied");
    assert_eq!(1000 - left(&data), 102);
    daemon.stop();
}

#[test]
fn the_rest_of_the_workload_is_killed_with_the_deleter() {
    let dir = TempDir::new("delrest");
    let agent = unique("delrest");
    let daemon = Daemon::start(&dir, &budget_policy(&agent, "enforce", "{ count: 20, per: 10s, action: kill }"));
    let data = fill(&dir, "data", 100);
    let pidfile = dir.path("sleeper.pid");
    // A shell that leaves a long sleep behind and waits for it after the deleter: only the
    // daemon's kill of the whole workload ends it before the sleep would.
    let script = format!("sleep 60 & echo $! > {}; /usr/bin/rm -rf {data}; wait", pidfile.display());
    let start = std::time::Instant::now();
    let (_, out) = launch(&agent, &["/bin/sh", "-c", &script], &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(start.elapsed() < Duration::from_secs(30), "the shell lived on for {:?}", start.elapsed());
    let sleeper: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(guard_tests::process::state(sleeper).is_none_or(|s| s == 'Z'), "the rest of the workload lives: {sleeper}");
    assert_eq!(100 - left(&data), 21);
    let v = daemon.await_verdict("killed", 10, |v| deletions_of(v, &data) && field(v, "/unmapped/verdict") == "killed");
    assert_eq!(v["unmapped"]["deletions"]["count"].as_u64(), Some(21));
    assert_eq!(field(&v, "/unmapped/error"), "", "{v:#}");
    daemon.stop();
}
