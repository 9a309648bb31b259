//! Enforcement outlives the daemon: programs, links and maps are pinned, a killed daemon leaves
//! enforcement in place, a restarted one adopts it without a gap, and a new policy replaces the
//! old generation only after its own is attached. Run as root by `cargo xtask test`.
use std::{os::unix::process::ExitStatusExt as _, path::Path, process::Command, thread, time::Duration};

use guard_tests::{Daemon, PIN_DIR, TempDir, agent_bin, assert_nothing_left, field, launch, unique};

const MARKER: &str = env!("CARGO_BIN_EXE_guard-test-marker");

fn pinned_generations() -> Vec<String> {
    std::fs::read_dir(PIN_DIR)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

fn killed(agent: &str, bin: &str, marker: &Path) -> bool {
    killed_by(agent, bin, marker).0
}

/// Runs `bin` in a cgroup of `agent` made by hand — `launch` needs a running daemon, and these
/// tests check what the kernel does without one: (killed before writing its marker, its
/// command line).
fn killed_by(agent: &str, bin: &str, marker: &Path) -> (bool, String) {
    let dir = guard_tests::cgroup2_root().join("guard").join(agent).join("by-hand");
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(bin);
    // The marker path as an argument too: it names this exec in the verdicts.
    cmd.arg(marker).env("GUARD_MARKER", marker);
    let out = guard_tests::run_in_cgroup(&dir, cmd);
    let _ = std::fs::remove_dir(&dir);
    (out.status.signal() == Some(libc::SIGKILL) && !marker.exists(), format!("{bin} {}", marker.display()))
}

/// A workload running in the background, ended (SIGTERM to its launcher, which forwards it)
/// when dropped, so a failing test never leaves it running.
struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        // SAFETY: signals the launcher process this test started.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// How many execs the loop has counted so far (0 before its first).
fn loop_count(count: &Path) -> u32 {
    std::fs::read_to_string(count).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
}

/// Waits (up to 20 s) until the loop has counted `n` execs.
fn wait_count(count: &Path, n: u32, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while loop_count(count) < n {
        assert!(std::time::Instant::now() < deadline, "waiting for {what}: only {} execs counted", loop_count(count));
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_killed_daemon_leaves_enforcement_and_a_restarted_one_adopts_it_without_a_gap() {
    let dir = TempDir::new("pin");
    let agent = unique("pin");
    let denied = dir.path("guard-denied");
    std::fs::copy(MARKER, &denied).unwrap();
    let denied = denied.to_str().unwrap().to_owned();
    let policy = format!("agents:\n  - name: {agent}\n    exec:\n      deny:\n        - path: {denied}\n");
    let first = Daemon::start_with(&dir, &policy, &[]);
    assert_eq!(pinned_generations().len(), 1, "{:?}", pinned_generations());

    // An exec loop in the agent, running right across the kill and the restart: every one of
    // its execs of the denied binary must die before writing the marker. (Paced, so the
    // restarted daemon's ring buffer does not overflow with its kills and drop the one exec
    // this test looks for below.)
    let (stop, count, loop_marker) = (dir.path("stop"), dir.path("count"), dir.path("loop-marker"));
    let script = format!(
        "i=0; while [ ! -e '{}' ]; do '{denied}'; i=$((i+1)); echo $i > '{}'; sleep 0.005; done",
        stop.display(),
        count.display()
    );
    let mut exec_loop = Background(
        Command::new(agent_bin())
            .args(["launch", "--agent", &agent, "--", "sh", "-c", &script])
            .env("GUARD_MARKER", &loop_marker)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_count(&count, 1, "the exec loop to start");

    first.kill_hard();
    assert_eq!(pinned_generations().len(), 1, "the pins survive the daemon");
    assert!(killed(&agent, &denied, &dir.path("m1")), "enforcement stopped with the daemon");
    // Execs of the loop with no daemon at all, only the pinned programs.
    let at = loop_count(&count);
    wait_count(&count, at + 10, "ten execs of the loop while no daemon runs");

    let second = Daemon::start(&dir, &policy);
    assert!(second.stderr_text().contains("adopted=true"), "{}", second.stderr_text());
    let (was_killed, cmd_line) = killed_by(&agent, &denied, &dir.path("m2"));
    assert!(was_killed);
    let v = second.only_verdict(&agent, "an exec after the restart", |v| field(v, "/process/cmd_line") == cmd_line);
    assert_eq!(field(&v, "/unmapped/verdict"), "killed");
    assert_eq!(field(&v, "/unmapped/agent"), agent);
    let at = loop_count(&count);
    wait_count(&count, at + 10, "ten execs of the loop under the restarted daemon");

    std::fs::write(&stop, b"").unwrap();
    let status = exec_loop.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let iterations: u32 = std::fs::read_to_string(&count).unwrap().trim().parse().unwrap();
    assert!(iterations >= 20, "the loop ran only {iterations} execs");
    assert!(!loop_marker.exists(), "an exec of the denied binary ran during the restart ({iterations} tried)");
    second.stop();
}

#[test]
fn a_new_policy_replaces_the_pinned_one_in_place() {
    let dir = TempDir::new("replace");
    let agent = unique("replace");
    let (a, b) = (dir.path("guard-a"), dir.path("guard-b"));
    std::fs::copy(MARKER, &a).unwrap();
    std::fs::copy(MARKER, &b).unwrap();
    let (a, b) = (a.to_str().unwrap().to_owned(), b.to_str().unwrap().to_owned());
    let deny = |bin: &str| format!("agents:\n  - name: {agent}\n    exec:\n      deny:\n        - path: {bin}\n");

    let first = Daemon::start_with(&dir, &deny(&a), &[]);
    first.stop_keeping_pins();
    let old = pinned_generations();
    assert_eq!(old.len(), 1);
    assert!(killed(&agent, &a, &dir.path("m1")), "pinned enforcement after a clean stop");

    // Same programs: the generation is adopted and the new policy swapped into its maps.
    let second = Daemon::start(&dir, &deny(&b));
    assert!(second.stderr_text().contains("adopted=true"), "{}", second.stderr_text());
    assert_eq!(pinned_generations(), old, "the programs stay; only the policy changes");
    assert!(killed(&agent, &b, &dir.path("m2")), "the new policy is in force");
    assert!(!killed(&agent, &a, &dir.path("m3")), "the old policy is gone");
    second.stop();
}

#[test]
fn detach_removes_pinned_enforcement() {
    let dir = TempDir::new("detach");
    let agent = unique("detach");
    let bin = dir.path("guard-denied");
    std::fs::copy(MARKER, &bin).unwrap();
    let bin = bin.to_str().unwrap().to_owned();
    let daemon = Daemon::start_with(&dir, &format!("agents:\n  - name: {agent}\n    exec:\n      deny:\n        - path: {bin}\n"), &[]);
    // `detach` refuses while a daemon runs.
    let out = Command::new(agent_bin()).arg("detach").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("daemon is running"), "{}", String::from_utf8_lossy(&out.stderr));
    daemon.stop_keeping_pins();
    let out = Command::new(agent_bin()).arg("detach").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed 1 pinned generation"));
    // Nothing enforces now: launch refuses unless told to run unguarded, and then the binary runs.
    let (_, out) = launch(&agent, &[&bin], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the guard daemon"));
    assert!(!killed(&agent, &bin, &dir.path("m0")), "still enforced after detach");
    let marker = dir.path("m");
    let (_, out) = guard_tests::launch_with(&["--allow-unguarded"], &agent, &[&bin], &[("GUARD_MARKER", marker.to_str().unwrap())]);
    assert!(out.status.success() && marker.exists(), "still enforced after detach: {:?}", out.status);
    let _ = std::fs::remove_dir(guard_tests::cgroup2_root().join("guard").join(&agent));
    let _ = std::fs::remove_dir(guard_tests::cgroup2_root().join("guard"));
    assert_nothing_left();
}
