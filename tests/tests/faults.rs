//! Faults, through the real binary and kernel: a daemon killed while it holds processes, and a
//! ring buffer left full while nobody reads it (the daemon stopped, or killed and restarted).
//! What the kernel decided is still enforced, and what the daemon could not see is reported.
//! Run as root by `cargo xtask test`.
use std::{
    os::unix::process::ExitStatusExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use guard_tests::{Daemon, PIN_DIR, TempDir, agent_bin, agent_cmd, field, spawn_launch, unique};
use serde_json::Value;

const MARKER: &str = env!("CARGO_BIN_EXE_guard-test-marker");
/// How long nobody reads the ring buffer in the ring-buffer tests.
const OUTAGE: Duration = Duration::from_secs(10);

fn install_marker(dir: &TempDir, rel: &str) -> String {
    let dst = dir.path(rel);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(MARKER, &dst).unwrap();
    dst.to_str().unwrap().to_owned()
}

/// Waits up to `secs` for `what` to hold.
fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {secs}s");
        thread::sleep(Duration::from_millis(20));
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn status() -> Value {
    let out = agent_cmd(&["status", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status --json: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The kernel's drop counters from `status`: (kind, dropped, reported) for each kind.
fn drops() -> Vec<(String, u64, u64)> {
    let s = status();
    let list = s["counters"]["ring_buffer_drops"].as_array().unwrap_or_else(|| panic!("no ring_buffer_drops in {s:#}")).clone();
    list.iter()
        .map(|d| (field(d, "/kind"), d["dropped"].as_u64().unwrap(), d["reported"].as_u64().unwrap()))
        .collect()
}

fn is_lost(v: &Value) -> bool {
    v["class_uid"] == 6002 && field(v, "/unmapped/operation") == "events_lost"
}

/// Adds the per-kind counts of `lost` verdicts' `unmapped.lost.events` into `sums`.
fn add_lost(sums: &mut std::collections::BTreeMap<String, u64>, lost: &[Value]) {
    for v in lost {
        let events = v.pointer("/unmapped/lost/events").and_then(Value::as_object).unwrap_or_else(|| panic!("no lost.events: {v:#}"));
        for (kind, n) in events {
            *sums.entry(kind.clone()).or_default() += n.as_u64().unwrap();
        }
    }
}

/// The kernel's counters of the kinds that dropped anything.
fn dropped_kinds(drops: &[(String, u64, u64)]) -> std::collections::BTreeMap<String, u64> {
    drops.iter().filter(|(_, n, _)| *n > 0).map(|(k, n, _)| (k.clone(), *n)).collect()
}

#[test]
fn five_held_processes_stay_stopped_without_a_daemon_and_the_next_one_kills_each_with_a_verdict() {
    let dir = TempDir::new("held5");
    let agent = unique("held5");
    let held = install_marker(&dir, "bin/guard-held");
    let denied = install_marker(&dir, "bin/guard-denied");
    let policy = format!(
        "agents:\n  - name: {agent}\n    exec:\n      hold:\n        - basename: guard-held\n          approve_timeout: 600s\n      deny:\n        - path: {denied}\n"
    );
    let first = Daemon::start_with(&dir, &policy, &[]);
    let markers: Vec<String> = (0..5).map(|i| dir.path(&format!("marker-{i}")).to_str().unwrap().to_owned()).collect();
    // The marker path as an argument too: it names each exec in the verdicts.
    let launchers: Vec<Child> = markers.iter().map(|m| spawn_launch(&[], &agent, &[&held, m], &[("GUARD_MARKER", m)])).collect();
    let pids: Vec<u32> = markers
        .iter()
        .map(|m| {
            let v = first.await_verdict("a held exec", 15, |v| field(v, "/process/cmd_line") == format!("{held} {m}") && field(v, "/unmapped/verdict") == "held");
            v["process"]["pid"].as_u64().unwrap() as u32
        })
        .collect();
    first.kill_hard();
    assert!(Path::new(PIN_DIR).exists(), "the pins went with the daemon");

    // No daemon: each stays stopped (the pinned gate would kill it if anyone continued it) ...
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        for pid in &pids {
            assert_eq!(guard_tests::process::state(*pid), Some('T'), "held process {pid} is not stopped while no daemon runs");
        }
        thread::sleep(Duration::from_millis(100));
    }
    // ... and an exec the kernel kills meanwhile is queued for the next daemon.
    let by_hand = guard_tests::cgroup2_root().join("guard").join(&agent).join("by-hand");
    std::fs::create_dir_all(&by_hand).unwrap();
    let lone_marker = dir.path("marker-lone");
    let mut cmd = Command::new(&denied);
    cmd.arg(&lone_marker).env("GUARD_MARKER", &lone_marker);
    let out = guard_tests::run_in_cgroup(&by_hand, cmd);
    let _ = std::fs::remove_dir(&by_hand);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "a denied exec ran while no daemon did: {:?}", out.status);
    assert!(!lone_marker.exists());

    let second = Daemon::start(&dir, &policy);
    assert!(second.stderr_text().contains("adopted=true"), "{}", second.stderr_text());
    for (launcher, marker) in launchers.into_iter().zip(&markers) {
        let out = launcher.wait_with_output().unwrap();
        assert_eq!(out.status.signal(), Some(libc::SIGKILL), "the held process of {marker} was not killed: {:?}", out.status);
        assert!(!Path::new(marker).exists(), "the held process of {marker} ran");
    }
    for (pid, marker) in pids.iter().zip(&markers) {
        let pid_is = |v: &Value| v["process"]["pid"].as_u64() == Some(u64::from(*pid));
        let v = second.one_verdict("a leftover hold killed at start", |v| v["class_uid"] == 1007 && pid_is(v) && field(v, "/unmapped/hold/decision") == "daemon-restart");
        assert_eq!(field(&v, "/unmapped/verdict"), "killed", "{v:#}");
        assert_eq!(field(&v, "/process/file/path"), held, "the binary, read from /proc before the kill: {v:#}");
        assert_eq!(field(&v, "/process/cmd_line"), format!("{held} {marker}"));
        assert_eq!(field(&v, "/unmapped/agent"), agent, "{v:#}");
        assert!(field(&v, "/unmapped/cgroup/path").starts_with(&format!("/guard/{agent}/")), "{v:#}");
        assert!(field(&v, "/unmapped/reason").contains("killed at start (fail closed)"), "{v:#}");
        assert!(v.pointer("/unmapped/hold/held_since_ms").and_then(Value::as_u64).is_some(), "{v:#}");
        let findings = second.findings(|f| {
            f.pointer("/evidences/0/process/pid").and_then(Value::as_u64) == Some(u64::from(*pid))
                && field(f, "/unmapped/hold/decision") == "daemon-restart"
        });
        assert_eq!(findings.len(), 1, "one Detection Finding per leftover kill: {findings:#?}");
        assert_eq!(field(&findings[0], "/unmapped/activity_sequence"), field(&v, "/metadata/sequence"));
    }
    // Nothing else lost: the exec killed while no daemon ran has its verdict from this one.
    let v = second.one_verdict("the exec killed while no daemon ran", |v| field(v, "/process/cmd_line") == format!("{denied} {}", lone_marker.display()));
    assert_eq!(field(&v, "/unmapped/verdict"), "killed");
    assert!(drops().iter().all(|(_, n, _)| *n == 0), "{:?}", drops());
    second.assert_no_verdict("events lost", is_lost);
    second.stop();
}

/// A workload in `agent` looping until `stop` exists over an allowed exec and an exec of
/// `denied`, writing each exit status to `exits` (`t STATUS` for /bin/true, `d STATUS` for the
/// denied one), paced so a running daemon keeps up with it; touches `done` at the end.
struct Workload {
    /// `None` once waited for.
    launcher: Option<Child>,
    stop: std::path::PathBuf,
    exits: std::path::PathBuf,
    done: std::path::PathBuf,
    marker: std::path::PathBuf,
}

impl Workload {
    fn start(dir: &TempDir, agent: &str, denied: &str) -> Self {
        let (stop, exits, done, marker) = (dir.path("stop"), dir.path("exits"), dir.path("done"), dir.path("loop-marker"));
        let script = format!(
            "sleep 0.3; while [ ! -e '{stop}' ]; do /bin/true; echo t $? >> '{exits}'; '{denied}'; echo d $? >> '{exits}'; sleep 0.02; done; : > '{done}'",
            stop = stop.display(),
            exits = exits.display(),
            done = done.display(),
        );
        let launcher = Command::new(agent_bin())
            .args(["launch", "--agent", agent, "--", "sh", "-c", &script])
            .env("GUARD_MARKER", &marker)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { launcher: Some(launcher), stop, exits, done, marker }
    }

    /// (allowed execs that exited 0, denied execs, of which killed by SIGKILL), so far.
    fn counts(&self) -> (usize, usize, usize) {
        let text = std::fs::read_to_string(&self.exits).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let allowed = lines.iter().filter(|l| **l == "t 0").count();
        let denied = lines.iter().filter(|l| l.starts_with("d ")).count();
        // The shell reports death by signal N as 128 + N.
        let killed = lines.iter().filter(|l| **l == format!("d {}", 128 + libc::SIGKILL)).count();
        (allowed, denied, killed)
    }

    /// Asks the loop to stop and waits until it has.
    fn finish(&self) {
        std::fs::write(&self.stop, b"").unwrap();
        wait_for("the workload loop to end", 30, || self.done.exists());
    }

    /// Waits for the launcher and checks every denied exec died by SIGKILL before its marker.
    fn check(mut self, at_least: usize) {
        let status = self.launcher.take().unwrap().wait().unwrap();
        assert!(status.success(), "workload: {status:?}");
        let (allowed, denied, killed) = self.counts();
        assert!(denied >= at_least, "only {denied} denied execs ran (at least {at_least} expected)");
        assert_eq!(killed, denied, "{} denied execs were not killed by SIGKILL", denied - killed);
        assert!(allowed + 1 >= denied, "allowed execs failed: {allowed} ran, {denied} denied");
        assert!(!self.marker.exists(), "a denied exec ran");
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.stop, b"");
        if let Some(mut launcher) = self.launcher.take() {
            // SAFETY: signals the launcher this test started and has not waited for (it
            // forwards SIGTERM to the workload).
            unsafe { libc::kill(launcher.id() as i32, libc::SIGTERM) };
            let _ = launcher.wait();
        }
    }
}

/// Small enough to overflow in a fraction of a second with nobody reading (about twenty exec
/// events), big enough for a running daemon to keep up with the paced workload.
const SMALL_RING: [&str; 2] = ["--ring-buffer-kib", "8"];

fn loop_policy(agent: &str, denied: &str) -> String {
    format!("agents:\n  - name: {agent}\n    exec:\n      deny:\n        - path: {denied}\n")
}

/// Waits until every drop the kernel counted is reported, and returns the counters.
fn all_reported(daemon: &Daemon) -> Vec<(String, u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = drops();
        if d.iter().all(|(_, n, r)| n == r) {
            return d;
        }
        assert!(Instant::now() < deadline, "drops not reported within 20 s: {d:?}\nstderr:\n{}", daemon.stderr_text());
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `daemon`'s "events lost" verdicts, with those in `earlier`, add up to `want` per
/// kind, and returns them. The kernel's `reported` counter is written right after the verdict,
/// but the harness reads (and schema-checks) the daemon's output behind it, by seconds under load.
fn await_lost(daemon: &Daemon, earlier: &[Value], want: &std::collections::BTreeMap<String, u64>) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lost = daemon.verdicts(is_lost);
        let mut sums = Default::default();
        add_lost(&mut sums, earlier);
        add_lost(&mut sums, &lost);
        if sums == *want {
            return lost;
        }
        assert!(Instant::now() < deadline, "the \"events lost\" verdicts count {sums:?}, not {want:?}: {lost:#?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// What the kernel says was reported, per kind that dropped anything.
fn reported_kinds(drops: &[(String, u64, u64)]) -> std::collections::BTreeMap<String, u64> {
    drops.iter().filter(|(_, _, r)| *r > 0).map(|(k, _, r)| (k.clone(), *r)).collect()
}

#[test]
fn a_stopped_daemon_reports_what_the_full_ring_buffer_lost_once_it_resumes() {
    let dir = TempDir::new("lost-stop");
    let agent = unique("lost-stop");
    let denied = install_marker(&dir, "bin/guard-denied");
    let mut args = vec!["--detach-on-exit"];
    args.extend(SMALL_RING);
    let daemon = Daemon::start_with(&dir, &loop_policy(&agent, &denied), &args);
    let workload = Workload::start(&dir, &agent, &denied);
    daemon.await_verdict("a denied exec of the loop", 15, |v| field(v, "/process/file/path") == denied && field(v, "/unmapped/verdict") == "killed");

    daemon.signal(libc::SIGSTOP);
    let (_, before, _) = workload.counts();
    thread::sleep(OUTAGE);
    workload.finish();
    let (_, during, _) = workload.counts();
    let reports_before = daemon.verdicts(is_lost).len();
    daemon.signal(libc::SIGCONT);
    let resumed_at = now_ms();

    let d = all_reported(&daemon);
    let kernel = dropped_kinds(&d);
    assert!(kernel.get("exec").is_some_and(|n| *n > 0), "no exec dropped while the daemon was stopped: {d:?}");
    await_lost(&daemon, &[], &kernel);
    // Give a second report (there must be none) time to show.
    thread::sleep(Duration::from_millis(2500));
    let lost = daemon.verdicts(is_lost);
    let after: Vec<&Value> = lost.iter().skip(reports_before).collect();
    assert_eq!(after.len(), 1, "one \"events lost\" verdict for the stop: {after:#?}");
    assert!(after[0]["time"].as_u64().unwrap() >= resumed_at, "reported before the resume: {:#}", after[0]);
    let mut sums = Default::default();
    add_lost(&mut sums, &lost);
    assert_eq!(sums, kernel, "the verdicts' counts are the kernel's");
    assert_eq!(status()["counters"]["events_lost_reports"].as_u64(), Some(lost.len() as u64));
    assert!(during - before >= 50, "the workload made only {} denied execs while the daemon was stopped", during - before);
    workload.check(during);
    daemon.stop();
}

#[test]
fn a_restarted_daemon_reports_the_drops_nobody_reported_and_no_others() {
    let dir = TempDir::new("lost-restart");
    let agent = unique("lost-restart");
    let denied = install_marker(&dir, "bin/guard-denied");
    let policy = loop_policy(&agent, &denied);
    let first = Daemon::start_with(&dir, &policy, &SMALL_RING);
    let workload = Workload::start(&dir, &agent, &denied);
    first.await_verdict("a denied exec of the loop", 15, |v| field(v, "/process/file/path") == denied && field(v, "/unmapped/verdict") == "killed");
    // The first daemon stalls, reports what that lost, and is killed: what it reported must
    // not be reported again.
    first.signal(libc::SIGSTOP);
    thread::sleep(Duration::from_secs(2));
    first.signal(libc::SIGCONT);
    let d = all_reported(&first);
    assert!(d.iter().any(|(kind, n, _)| kind == "exec" && *n > 0), "no exec dropped while the first daemon was stopped: {d:?}");
    let reported_by_first = await_lost(&first, &[], &reported_kinds(&d));
    let (_, before, _) = workload.counts();
    first.kill_hard();
    thread::sleep(OUTAGE);
    workload.finish();
    let (_, during, _) = workload.counts();

    let second = Daemon::start_with(&dir, &policy, &SMALL_RING);
    assert!(second.stderr_text().contains("adopted=true"), "{}", second.stderr_text());
    let d = all_reported(&second);
    let kernel = dropped_kinds(&d);
    assert!(kernel.get("exec").is_some_and(|n| *n > 0), "no exec dropped while no daemon ran: {d:?}");
    await_lost(&second, &reported_by_first, &kernel);
    // Give a second report (there must be none) time to show.
    thread::sleep(Duration::from_millis(2500));
    let lost = second.verdicts(is_lost);
    assert_eq!(lost.len(), 1, "one \"events lost\" verdict for the outage: {lost:#?}");
    let mut sums = Default::default();
    add_lost(&mut sums, &reported_by_first);
    add_lost(&mut sums, &lost);
    assert_eq!(sums, kernel, "the two daemons' verdicts together count what the kernel did, each drop once");
    assert!(during - before >= 50, "the workload made only {} denied execs while no daemon ran", during - before);
    workload.check(during);
    second.stop_keeping_pins();

    // A third daemon has nothing left to report.
    let mut args = vec!["--detach-on-exit"];
    args.extend(SMALL_RING);
    let third = Daemon::start_with(&dir, &policy, &args);
    third.assert_no_verdict("drops already reported", is_lost);
    thread::sleep(Duration::from_millis(2000));
    assert!(third.verdicts(is_lost).is_empty(), "{:#?}", third.verdicts(is_lost));
    assert_eq!(dropped_kinds(&drops()), kernel, "the kernel's counters carried over");
    third.stop();
}
