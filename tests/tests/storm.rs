//! An exec storm in an agent workload: the daemon survives, and the verdicts it printed plus
//! the drops the kernel counted account for every exec (nothing is lost silently).
//! Run as root by `cargo xtask test`.
use guard_tests::{Daemon, TempDir, field, unique};

const EXECS: usize = 20_000;

#[test]
fn every_exec_of_a_20000_exec_storm_is_a_verdict_or_a_counted_drop() {
    let drops = storm(EXECS, &[], false);
    println!("default ring buffer: {drops} drops");
}

/// A stalled consumer (the daemon stopped with SIGSTOP) and an 8 KiB ring buffer (about twenty
/// exec events): drops are certain. Enforcement does not wait for the consumer, and every exec
/// is still accounted for.
#[test]
fn a_stalled_consumer_drops_and_counts_every_drop() {
    let drops = storm(2_000, &["--ring-buffer-kib", "8"], true);
    assert!(drops > 0, "nothing was dropped while the consumer was stopped");
}

/// Runs a storm of `execs` with extra daemon arguments, the daemon stopped meanwhile if
/// `stall`; returns the exec drops the kernel counted.
fn storm(execs: usize, args: &[&str], stall: bool) -> u64 {
    let dir = TempDir::new("storm");
    let agent = unique("storm");
    let mut all = vec!["--detach-on-exit"];
    all.extend_from_slice(args);
    let daemon = Daemon::start_with(&dir, &format!("agents:\n  - name: {agent}\n"), &all);
    // One shell forking and exec'ing /bin/true EXECS times: EXECS + 2 execs in the workload
    // (the shell itself, its sleep, then each /bin/true).
    let done = dir.path("done");
    // The session is set up through the daemon before it is stalled; the storm starts after.
    let script = format!(
        "sleep 0.5; i=0; while [ $i -lt {execs} ]; do /bin/true; i=$((i+1)); done; : > {}",
        done.display()
    );
    let child = guard_tests::spawn_launch(&[], &agent, &["/bin/sh", "-c", &script], &[]);
    if stall {
        std::thread::sleep(std::time::Duration::from_millis(200));
        daemon.signal(libc::SIGSTOP);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !done.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        daemon.signal(libc::SIGCONT);
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let in_workload = |v: &serde_json::Value| v["class_uid"] == 1007 && field(v, "/unmapped/cgroup/path").starts_with(&format!("/guard/{agent}/"));
    // Let the daemon drain what the ring buffer holds.
    let mut seen = 0;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = daemon.verdicts(in_workload).len();
        if now == seen && now > 0 {
            break;
        }
        seen = now;
    }
    let verdicts = daemon.verdicts(in_workload);
    let trues = verdicts.iter().filter(|v| field(v, "/process/file/path") == "/bin/true").count();
    let stderr = daemon.stop_and_stderr();
    let drops = exec_drops(&stderr);
    assert_eq!(verdicts.len() as u64 + drops, execs as u64 + 2, "{} verdicts ({trues} of /bin/true) + {drops} drops", verdicts.len());
    assert!(trues <= execs);
    println!("exec storm: {execs} execs, {} verdicts, {drops} counted drops", verdicts.len());
    drops
}

/// The exec drop count from the daemon's stop line: `drops=[(Exec, N), ...]`.
fn exec_drops(stderr: &str) -> u64 {
    let line = stderr.lines().rev().find(|l| l.contains("drops=[")).unwrap_or_else(|| panic!("no drops line in:\n{stderr}"));
    let at = line.find("(Exec, ").expect("exec drops") + "(Exec, ".len();
    line[at..].split(')').next().unwrap().trim().parse().expect("a number")
}
