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
    // One shell forking and exec'ing /bin/true EXECS times: EXECS + 1 execs in the workload
    // (the shell itself, then each /bin/true). It waits on a FIFO with a shell builtin (no
    // exec) until the test says go.
    let done = dir.path("done");
    let go = dir.path("go");
    let fifo = std::ffi::CString::new(go.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a NUL-terminated path in the test's own directory.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo: {}", std::io::Error::last_os_error());
    let script = format!(
        "read _ < {}; i=0; while [ $i -lt {execs} ]; do /bin/true; i=$((i+1)); done; : > {}",
        go.display(),
        done.display()
    );
    let child = guard_tests::spawn_launch(&[], &agent, &["/bin/sh", "-c", &script], &[]);
    // The session is set up through the daemon (and the shell runs) before any stall.
    daemon.await_verdict("the storm's shell", 10, |v| field(v, "/process/file/path") == "/bin/sh" && field(v, "/unmapped/agent") == agent);
    if stall {
        daemon.signal(libc::SIGSTOP);
    }
    release(&go);
    if stall {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !done.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        daemon.signal(libc::SIGCONT);
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let in_workload = |v: &serde_json::Value| v["class_uid"] == 1007 && field(v, "/unmapped/cgroup/path").starts_with(&format!("/guard/{agent}/"));
    // The daemon has drained what the ring buffer held once a later exec's verdict is out; a
    // barrier exec the kernel dropped is tried again, and counts among the execs.
    let barriers = daemon.barrier(&agent);
    let verdicts = daemon.verdicts(in_workload);
    let trues = verdicts.iter().filter(|v| field(v, "/process/file/path") == "/bin/true").count();
    let stderr = daemon.stop_and_stderr();
    let drops = exec_drops(&stderr);
    let expected = execs as u64 + 1 + u64::from(barriers);
    assert_eq!(verdicts.len() as u64 + drops, expected, "{} verdicts ({trues} of /bin/true, {barriers} barriers) + {drops} drops", verdicts.len());
    assert!(trues <= execs + barriers as usize);
    println!("exec storm: {execs} execs, {} verdicts, {drops} counted drops", verdicts.len());
    drops
}

/// Opens the FIFO the storm's shell reads (up to 10 s for it to open its end) and closes it:
/// the shell's `read` returns at end of file.
fn release(fifo: &std::path::Path) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        // ENXIO until the reader has opened it; never blocks.
        match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(fifo) {
            Ok(_) => return,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("cannot release the storm: {e}"),
        }
    }
}

/// The exec drop count from the daemon's stop line: `drops=[(Exec, N), ...]`.
fn exec_drops(stderr: &str) -> u64 {
    let line = stderr.lines().rev().find(|l| l.contains("drops=[")).unwrap_or_else(|| panic!("no drops line in:\n{stderr}"));
    let at = line.find("(Exec, ").expect("exec drops") + "(Exec, ".len();
    line[at..].split(')').next().unwrap().trim().parse().expect("a number")
}
