//! Runs test binaries one at a time, each under a deadline, timing each and adding up their
//! results. Cargo builds them (`cargo test --no-run`, whose JSON messages name every binary);
//! running them here instead of through `cargo test` is what lets a hanging one be killed
//! with the name of the test it was in, and the rest of the suite still run.
//!
//! A binary runs in its own process group: at its deadline (or the deadline of the one test it
//! is running, when it runs one at a time) the whole group is killed, and every descendant the
//! binary started, so daemons and workloads die with it.
use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// A test binary cargo built.
#[derive(Debug, Clone)]
pub struct Binary {
    /// `package target (source)`, e.g. `guard-tests audit (tests/audit.rs)`.
    pub name: String,
    pub path: PathBuf,
    /// Cargo runs a test binary in its package's directory; so do we.
    pub dir: PathBuf,
}

/// Builds the test binaries of `cargo test <args>` and names them, in cargo's order.
pub fn build(root: &Path, args: &[&str]) -> anyhow::Result<Vec<Binary>> {
    let out = Command::new("cargo")
        .current_dir(root)
        .args(["test", "--no-run", "--message-format=json-render-diagnostics"])
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("`cargo test --no-run {}` failed", args.join(" "));
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(b) = artifact(root, line) {
            bins.push(b);
        }
    }
    Ok(bins)
}

/// A test binary from one line of cargo's JSON messages.
fn artifact(root: &Path, line: &str) -> Option<Binary> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
        return None;
    }
    let path = PathBuf::from(v["executable"].as_str()?);
    let manifest = Path::new(v["manifest_path"].as_str()?);
    let dir = manifest.parent()?.to_path_buf();
    let package = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let src = Path::new(v["target"]["src_path"].as_str()?);
    let src = src.strip_prefix(&dir).or_else(|_| src.strip_prefix(root)).unwrap_or(src);
    let target = v["target"]["name"].as_str()?;
    Some(Binary { name: format!("{package} {target} ({})", src.display()), path, dir })
}

/// How long a binary, and one test of a binary run with `--test-threads=1`, may take.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub binary: Duration,
    pub test: Option<Duration>,
}

/// What running one binary gave.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    pub elapsed: Duration,
    /// Why it was killed, if it was.
    pub killed: Option<String>,
    /// It ended on a failure status, or without its `test result:` line.
    pub bad_exit: Option<String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.killed.is_none() && self.bad_exit.is_none()
    }
}

/// Set by SIGINT/SIGTERM: the binary running is killed like one past its deadline.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Test binaries run in their own process group, so a Ctrl-C at the terminal no longer reaches
/// them: this process catches it and kills the binary's group instead.
pub fn catch_interrupts() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_interrupt as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_interrupt as *const () as libc::sighandler_t);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// What the binary's output said so far.
#[derive(Default)]
struct Seen {
    /// From its `test result:` line (libtest prints one at the end).
    result: Option<(u64, u64, u64)>,
    /// Results of single tests (used when the binary never got to its `test result:`).
    passed: u64,
    failed: u64,
    ignored: u64,
    /// The test that printed `test NAME ... ` without a result yet, and since when.
    running: Option<(String, Instant)>,
    /// Tests libtest reported as running for over 60 seconds (parallel runs).
    slow: Vec<String>,
    /// The unfinished last line.
    partial: String,
}

impl Seen {
    fn feed(&mut self, chunk: &str) {
        self.partial.push_str(chunk);
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            self.line(line.trim_end_matches(['\n', '\r']));
        }
        // `test NAME ... ` stays unfinished while NAME runs alone (--test-threads=1).
        if let Some(name) = started(&self.partial)
            && self.running.as_ref().is_none_or(|(n, _)| n != name)
        {
            self.running = Some((name.to_owned(), Instant::now()));
        }
    }

    fn line(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("test result: ") {
            self.result = Some(tally_line(rest));
            return;
        }
        if let Some(name) = line.strip_prefix("test ").and_then(|r| r.strip_suffix(" has been running for over 60 seconds")) {
            self.slow.push(name.to_owned());
            return;
        }
        let result = line.rsplit_once(" ... ").map(|(_, r)| r).or_else(|| self.running.is_some().then_some(line.trim()));
        match result {
            Some("ok") => self.passed += 1,
            Some("FAILED") => self.failed += 1,
            Some(r) if r.starts_with("ignored") => self.ignored += 1,
            _ => return,
        }
        self.running = None;
    }
}

/// The name in an unfinished `test NAME ... ` line.
fn started(partial: &str) -> Option<&str> {
    partial.strip_prefix("test ")?.strip_suffix(" ... ")
}

/// (passed, failed, ignored) from what follows `test result: `.
pub fn tally_line(rest: &str) -> (u64, u64, u64) {
    let mut t = (0, 0, 0);
    for part in rest.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(what), Some(n)) = (words.next(), words.next()) else { continue };
        let n: u64 = n.parse().unwrap_or(0);
        match what {
            "passed" => t.0 += n,
            "failed" => t.1 += n,
            "ignored" => t.2 += n,
            _ => {}
        }
    }
    t
}

/// Runs `bin` with `args` and `envs`, passing its output through, until it ends or a deadline
/// passes.
pub fn run(bin: &Binary, args: &[String], envs: &[(&str, &std::ffi::OsStr)], deadlines: Deadlines) -> anyhow::Result<Outcome> {
    use std::os::unix::process::CommandExt as _;
    println!("\n[xtask] running {}", bin.name);
    let start = Instant::now();
    let mut child = Command::new(&bin.path)
        .current_dir(&bin.dir)
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("running {}", bin.path.display()))?;
    let pid = child.id();
    let mut stdout = child.stdout.take().context("test output")?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (eof_tx, eof_rx) = mpsc::channel::<()>();
    {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut out = std::io::stdout();
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let _ = out.write_all(&buf[..n]);
                        let _ = out.flush();
                        seen.lock().unwrap_or_else(|e| e.into_inner()).feed(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            }
            let _ = eof_tx.send(());
        });
    }
    let mut killed = None;
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait().context("waiting for the test binary")? {
            break status;
        }
        let why = {
            let s = seen.lock().unwrap_or_else(|e| e.into_inner());
            let test_over = deadlines.test.zip(s.running.as_ref()).filter(|(limit, (_, since))| since.elapsed() > *limit);
            if interrupted() {
                Some("interrupted".to_owned())
            } else if let Some((limit, (name, _))) = test_over {
                Some(format!("test `{name}` ran past its {}s deadline", limit.as_secs()))
            } else if start.elapsed() > deadlines.binary {
                Some(format!("the binary ran past its {}s deadline", deadlines.binary.as_secs()))
            } else {
                None
            }
        };
        if let Some(why) = why {
            kill_tree(pid);
            killed = Some(why);
            break child.wait().context("waiting for the killed test binary")?;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // A child of the test that outlived it may still hold the pipe: wait a little, not forever.
    if eof_rx.recv_timeout(Duration::from_secs(10)).is_err() {
        println!("[xtask] warning: something {} started still holds its output open", bin.name);
    }
    let s = seen.lock().unwrap_or_else(|e| e.into_inner());
    let mut outcome = Outcome { elapsed: start.elapsed(), ..Outcome::default() };
    (outcome.passed, outcome.failed, outcome.ignored) = s.result.unwrap_or((s.passed, s.failed, s.ignored));
    if let Some(why) = killed {
        // The test it was in never reported; it counts as failed.
        outcome.failed += 1;
        let running = match (&s.running, s.slow.is_empty()) {
            (Some((name, since)), _) => format!("it was running `{name}` (for {:.0}s)", since.elapsed().as_secs_f64()),
            (None, false) => format!("tests running for over 60 seconds: {}", s.slow.join(", ")),
            (None, true) => "no test had reported starting".to_owned(),
        };
        println!("\n[xtask] KILLED {} after {:.1}s: {why}; {running}", bin.name, outcome.elapsed.as_secs_f64());
        outcome.killed = Some(format!("{why}; {running}"));
    } else if s.result.is_none() || !status.success() {
        if s.result.is_none() {
            // Died without its summary (a signal, an abort): the test it was in failed.
            outcome.failed += 1;
        }
        let running = s.running.as_ref().map(|(n, _)| format!(" while running `{n}`")).unwrap_or_default();
        let why = format!("exited with {status}{running}");
        println!("\n[xtask] {} {why}", bin.name);
        outcome.bad_exit = Some(why);
    }
    println!(
        "[xtask] {}: {} passed, {} failed, {} ignored in {:.1}s",
        bin.name,
        outcome.passed,
        outcome.failed,
        outcome.ignored,
        outcome.elapsed.as_secs_f64()
    );
    Ok(outcome)
}

/// Kills the process group of `pid` and every descendant of `pid`, also those that moved to a
/// group or session of their own.
fn kill_tree(pid: u32) {
    let descendants = descendants(pid);
    // SAFETY: kill(2) with a negative pid signals the group `pid` leads (it was spawned with
    // process_group(0)); the pids below are this binary's descendants, read just now.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
        for d in descendants {
            libc::kill(d as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// Every live descendant of `root`, from the parent pids in /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            // The fields after the command name, which ends with the last `)`.
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out.remove(0);
    out
}

/// Results of many binaries, for the closing summary.
#[derive(Default)]
pub struct Report {
    pub runs: Vec<(String, Outcome)>,
}

impl Report {
    pub fn add(&mut self, name: &str, outcome: Outcome) {
        self.runs.push((name.to_owned(), outcome));
    }

    pub fn ok(&self) -> bool {
        self.runs.iter().all(|(_, o)| o.ok())
    }

    pub fn totals(&self) -> (u64, u64, u64) {
        self.runs.iter().fold((0, 0, 0), |t, (_, o)| (t.0 + o.passed, t.1 + o.failed, t.2 + o.ignored))
    }

    /// The wall time of every binary, slowest first, and what went wrong.
    pub fn print_times(&self) {
        println!("\n[xtask] time per test binary (slowest first):");
        let mut runs: Vec<&(String, Outcome)> = self.runs.iter().collect();
        runs.sort_by_key(|(_, o)| std::cmp::Reverse(o.elapsed));
        for (name, o) in runs {
            let state = match (&o.killed, &o.bad_exit) {
                (Some(why), _) => format!("KILLED: {why}"),
                (None, Some(why)) => format!("FAILED: {why}"),
                _ if o.failed > 0 => format!("{} failed", o.failed),
                _ => "ok".to_owned(),
            };
            println!("  {:>7.1}s  {name}: {state}", o.elapsed.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_running_alone_is_named_until_its_result() {
        let mut s = Seen::default();
        s.feed("\nrunning 2 tests\ntest a::one ... ok\ntest a::t");
        assert!(s.running.is_none());
        s.feed("wo ... ");
        assert_eq!(s.running.as_ref().map(|(n, _)| n.as_str()), Some("a::two"));
        s.feed("FAILED\n");
        assert!(s.running.is_none());
        assert_eq!((s.passed, s.failed), (1, 1));
        s.feed("test result: FAILED. 1 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.1s\n");
        assert_eq!(s.result, Some((1, 1, 2)));
    }

    #[test]
    fn parallel_runs_name_their_slow_tests() {
        let mut s = Seen::default();
        s.feed("test x::slow has been running for over 60 seconds\ntest x::quick ... ignored, needs root\n");
        assert_eq!(s.slow, ["x::slow"]);
        assert_eq!(s.ignored, 1);
    }

    #[test]
    fn cargo_artifacts_name_their_binaries() {
        let root = Path::new("/w");
        let line = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#guard-tests@0.1.0","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["test"],"name":"audit","src_path":"/w/tests/tests/audit.rs"},"profile":{"test":true},"executable":"/w/target/debug/deps/audit-1"}"#;
        let b = artifact(root, line).unwrap();
        assert_eq!(b.name, "tests audit (tests/audit.rs)");
        assert_eq!(b.dir, Path::new("/w/tests"));
        assert!(artifact(root, &line.replace(r#""test":true"#, r#""test":false"#)).is_none());
        assert!(artifact(root, r#"{"reason":"build-finished","success":true}"#).is_none());
    }

    #[test]
    fn a_hanging_binary_is_killed_with_its_children() {
        let dir = std::env::temp_dir();
        let bin = Binary { name: "sh".into(), path: "/bin/sh".into(), dir };
        // A "test" that starts, leaves a child that ignores the group, and hangs.
        let script = "printf 'running 1 test\\ntest hang::forever ... '; setsid sleep 600 & echo $! > \"$0\"; sleep 600";
        let pidfile = std::env::temp_dir().join(format!("xtask-kill-test-{}", std::process::id()));
        let args = ["-c".to_owned(), script.to_owned(), pidfile.display().to_string()];
        let o = run(&bin, &args, &[], Deadlines { binary: Duration::from_secs(60), test: Some(Duration::from_secs(1)) }).unwrap();
        assert!(o.killed.as_deref().is_some_and(|k| k.contains("hang::forever")), "{o:?}");
        assert_eq!(o.failed, 1);
        assert!(o.elapsed < Duration::from_secs(30), "{o:?}");
        let child: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        let _ = std::fs::remove_file(&pidfile);
        // Killed, then reaped by init: gone, or a zombie for a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
            assert!(Instant::now() < deadline, "the setsid child {child} survived");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
