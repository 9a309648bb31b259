//! Harness for the privileged end-to-end tests: runs the real `guard-agent` binary as root,
//! collects the verdicts it prints, and checks that nothing is left behind.
//!
//! Every line the daemon prints is validated against the JSON Schema of its OCSF class
//! (`schemas/ocsf/` at the repository root) as it is read. A line that is not JSON, has a class
//! guard does not emit, or fails its schema makes the test fail: at the next
//! [`Daemon::verdicts`] / [`Daemon::findings`] call, at [`Daemon::stop`], or when the daemon is
//! dropped.
//!
//! Tests panic on failure (they do not return `Result`); every guard here cleans up on drop.
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::Value;

pub use barrier::{BARRIER_LABEL, is_barrier};
use ocsf::ocsf_validators;
pub use ocsf::{kind, ocsf_errors};

pub mod barrier;
pub mod dns_server;
pub mod http_receiver;
pub mod netns;
mod ocsf;
pub mod process;
pub mod rsyslog;

/// The guard-agent binary under test: `$GUARD_AGENT_BIN` (set by `cargo xtask test`), else the
/// debug build next to this test's target directory.
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GUARD_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> -> target/debug/guard-agent
    exe.parent().and_then(Path::parent).expect("target dir").join("guard-agent")
}

/// The cgroup v2 mount point, from /proc/self/mountinfo.
pub fn cgroup2_root() -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    text.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let ty = f.iter().skip_while(|x| **x != "-").nth(1)?;
            (*ty == "cgroup2").then(|| PathBuf::from(f[4]))
        })
        .expect("a cgroup2 mount")
}

/// A name no other test (or test run) uses: agents, cgroups and files are named from it.
/// `n` seconds, times `GUARD_TEST_TIME_SCALE` (default 1): `cargo xtask vmtest` runs these
/// tests in an emulated VM, where every deadline needs to be longer by the same factor.
pub fn secs(n: u64) -> Duration {
    let scale = std::env::var("GUARD_TEST_TIME_SCALE").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(1).max(1);
    Duration::from_secs(n * scale)
}

pub fn unique(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("t-{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A scratch directory removed (with its contents) on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("guard-{}", unique(name)));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `guard-agent daemon`, stopped with SIGINT on [`Daemon::stop`] (or killed on drop).
pub struct Daemon {
    child: Option<Child>,
    /// Every object the daemon printed, in order: activities and findings.
    lines: Arc<Mutex<Vec<Value>>>,
    /// Lines that were not JSON or failed their schema.
    schema_errors: Arc<Mutex<Vec<String>>>,
    /// How many objects of each [`kind`] validated.
    validated: Arc<Mutex<BTreeMap<String, usize>>>,
    stdout_reader: Option<JoinHandle<()>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Ends once the daemon's stderr closes, with every line stored.
    stderr_reader: Option<JoinHandle<()>>,
    /// Held by a test to stop reading the daemon's stdout (see [`Daemon::pause_stdout`]).
    stdout_gate: Arc<Mutex<()>>,
}

impl Daemon {
    /// Starts the daemon with `policy` (YAML text), detaching everything when it stops, and
    /// waits until it says it is enforcing.
    pub fn start(dir: &TempDir, policy: &str) -> Self {
        Self::start_with(dir, policy, &["--detach-on-exit"])
    }

    /// Like [`Daemon::start`], with `extra` daemon arguments instead of `--detach-on-exit`.
    pub fn start_with(dir: &TempDir, policy: &str, extra: &[&str]) -> Self {
        Self::start_env(dir, policy, extra, &[])
    }

    /// Like [`Daemon::start_with`], with extra environment variables.
    pub fn start_env(dir: &TempDir, policy: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::watch(Self::spawn(&[], dir, policy, extra, env))
    }

    /// `[WRAPPER...] guard-agent daemon --policy <dir>/policy.yaml EXTRA...`, output piped.
    fn spawn(wrapper: &[&str], dir: &TempDir, policy: &str, extra: &[&str], env: &[(&str, &str)]) -> Child {
        let policy_path = dir.path("policy.yaml");
        std::fs::write(&policy_path, policy).expect("write policy");
        let bin = agent_bin();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(["daemon", "--policy"])
            .arg(&policy_path)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {wrapper:?} guard-agent daemon: {e}"))
    }

    /// Stops reading the daemon's stdout until the guard is dropped: once the pipe fills, the
    /// daemon's event loop blocks writing verdicts (a stalled consumer).
    pub fn pause_stdout(&self) -> std::sync::MutexGuard<'_, ()> {
        self.stdout_gate.lock().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// All verdicts (activity objects: Process Activity, Network Activity, Application
    /// Lifecycle) so far that satisfy `pred`. Detection Findings are [`Daemon::findings`].
    /// Fails the test if any line so far failed its schema.
    pub fn verdicts(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.assert_schema_valid();
        self.lines.lock().unwrap().iter().filter(|v| v["class_uid"] != 2004 && pred(v)).cloned().collect()
    }

    /// All Detection Findings (class 2004) so far that satisfy `pred`.
    pub fn findings(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.assert_schema_valid();
        self.lines.lock().unwrap().iter().filter(|v| v["class_uid"] == 2004 && pred(v)).cloned().collect()
    }

    /// Everything the daemon printed so far, activities and findings, in order.
    pub fn emitted(&self) -> Vec<Value> {
        self.assert_schema_valid();
        self.lines.lock().unwrap().clone()
    }

    /// How many objects of each [`kind`] were printed and validated against their schema.
    pub fn validated_kinds(&self) -> BTreeMap<String, usize> {
        self.assert_schema_valid();
        self.validated.lock().unwrap().clone()
    }

    /// Fails the test if a line the daemon printed was not JSON or failed its schema.
    pub fn assert_schema_valid(&self) {
        let errors = self.schema_errors.lock().unwrap();
        assert!(errors.is_empty(), "the daemon printed {} line(s) that fail the OCSF schemas:\n{}", errors.len(), errors.join("\n"));
    }

    /// Waits (up to 5 s) until the stdout reader has read everything the stopped daemon wrote.
    fn drain_stdout(&mut self) {
        let Some(reader) = self.stdout_reader.take() else { return };
        let deadline = Instant::now() + secs(5);
        while !reader.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        if reader.is_finished() {
            let _ = reader.join();
        }
    }

    /// Waits for verdicts matching `pred`, then a little longer so a duplicate would show, and
    /// returns all of them.
    pub fn wait_verdicts(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + secs(10);
        while self.verdicts(&pred).is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        thread::sleep(Duration::from_millis(300));
        self.verdicts(pred)
    }

    /// Gives a verdict time to arrive (the ring buffer is read within milliseconds), then checks
    /// that none matching `pred` did.
    pub fn assert_no_verdict(&self, what: &str, pred: impl Fn(&Value) -> bool) {
        thread::sleep(Duration::from_millis(500));
        let found = self.verdicts(pred);
        assert!(found.is_empty(), "expected no verdict for {what}, got {found:#?}");
    }

    /// Waits for exactly one verdict matching `pred` and returns it.
    pub fn one_verdict(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let found = self.wait_verdicts(pred);
        assert_eq!(found.len(), 1, "expected exactly one verdict for {what}, got {found:#?}\nall: {:#?}", self.verdicts(|_| true));
        found.into_iter().next().unwrap()
    }

    /// Like [`Daemon::stop`], returning everything the daemon wrote on stderr.
    pub fn stop_and_stderr(mut self) -> String {
        let stderr = Arc::clone(&self.stderr);
        let reader = self.stderr_reader.take();
        self.stop();
        // The reader thread has stored the daemon's last line once it ends (its pipe closed).
        if let Some(reader) = reader {
            let deadline = Instant::now() + secs(5);
            while !reader.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            assert!(reader.is_finished(), "the daemon's stderr did not close within 5 s of its exit");
            let _ = reader.join();
        }
        stderr.lock().unwrap().join("\n")
    }

    /// SIGINT, wait for a clean exit, then check that nothing guard made is left and that
    /// every line the daemon printed validated.
    pub fn stop(mut self) {
        let child = self.child.take().expect("running");
        match interrupt_and_wait(child) {
            Some(status) => assert!(status.success(), "daemon exited with {status}; stderr:\n{}", self.stderr_text()),
            None => panic!("daemon did not stop within 15 s of SIGINT; stderr:\n{}", self.stderr_text()),
        }
        self.drain_stdout();
        self.assert_schema_valid();
        assert_nothing_left();
    }
}

/// Sends SIGINT (the daemon then detaches and removes its cgroups) and waits up to 15 s;
/// SIGKILL after that. `None` if it had to be killed.
fn interrupt_and_wait(mut child: Child) -> Option<std::process::ExitStatus> {
    // SAFETY: signals the daemon process this harness started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

impl Daemon {
    /// Stops (SIGSTOP) or continues (SIGCONT) the daemon: a stalled event consumer.
    pub fn signal(&self, sig: i32) {
        // SAFETY: signals the daemon process this harness started.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// SIGKILL, as an OOM killer or a crash would: nothing is cleaned up.
    pub fn kill_hard(mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
        self.drain_stdout();
        self.assert_schema_valid();
    }

    /// SIGINT and wait for a clean exit, without checking what is left (a daemon started
    /// without --detach-on-exit leaves enforcement pinned on purpose).
    pub fn stop_keeping_pins(mut self) {
        let child = self.child.take().expect("running");
        let status = interrupt_and_wait(child);
        assert!(status.is_some_and(|s| s.success()), "daemon exit {status:?}; stderr:\n{}", self.stderr_text());
        self.drain_stdout();
        self.assert_schema_valid();
    }
}

impl Drop for Daemon {
    /// A failed test still stops its daemon cleanly, so it leaves nothing for the next test. A
    /// test that never looked at the verdicts still fails if a line failed its schema.
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = interrupt_and_wait(child);
            self.drain_stdout();
        }
        if !thread::panicking() {
            self.assert_schema_valid();
        }
    }
}

/// No agent cgroups, no pinned state, no guard programs or links remain. The kernel frees
/// programs after an RCU grace period (tracing programs a little later still), so this polls
/// for a few seconds before it fails.
pub fn assert_nothing_left() {
    let deadline = Instant::now() + secs(5);
    loop {
        match leftovers() {
            None => return,
            Some(what) if Instant::now() > deadline => panic!("{what}"),
            Some(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// What guard left behind, if anything.
pub fn leftovers() -> Option<String> {
    let guard_dir = cgroup2_root().join("guard");
    if guard_dir.exists() {
        let children: Vec<_> = std::fs::read_dir(&guard_dir)
            .expect("read guard cgroup")
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        if !children.is_empty() {
            return Some(format!("cgroups left under {}: {children:?}", guard_dir.display()));
        }
    }
    if Path::new(PIN_DIR).exists() {
        return Some(format!("pinned state left in {PIN_DIR}"));
    }
    let programs: Vec<(u32, String)> = aya::programs::loaded_programs()
        .flatten()
        .filter_map(|p| Some((p.id(), p.name_as_str()?.to_owned())))
        .filter(|(_, name)| name.starts_with("guard_"))
        .collect();
    if !programs.is_empty() {
        return Some(format!("guard programs still loaded: {programs:?}"));
    }
    None
}

/// Where the daemon pins its programs, links and maps.
pub const PIN_DIR: &str = "/sys/fs/bpf/guard";

/// Runs `guard-agent launch --agent AGENT -- CMD...` with extra environment and waits for it.
pub fn launch(agent: &str, cmd: &[&str], env: &[(&str, &str)]) -> (u32, Output) {
    launch_with(&[], agent, cmd, env)
}

/// Like [`launch`], with extra `launch` flags (e.g. `--allow-unguarded`).
pub fn launch_with(flags: &[&str], agent: &str, cmd: &[&str], env: &[(&str, &str)]) -> (u32, Output) {
    let mut c = Command::new(agent_bin());
    c.arg("launch").args(flags).args(["--agent", agent, "--"]).args(cmd);
    for (k, v) in env {
        c.env(k, v);
    }
    let child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn launch");
    let pid = child.id();
    (pid, child.wait_with_output().expect("wait for launch"))
}

/// Runs `cmd` in the cgroup `dir` (made by the test, as systemd or a by-hand setup would),
/// moved there between fork and exec, and waits for it.
pub fn run_in_cgroup(dir: &Path, mut cmd: Command) -> Output {
    use std::os::unix::process::CommandExt as _;
    let procs = dir.join("cgroup.procs");
    // SAFETY: the closure only calls std::fs::write (open/write/close) between fork and exec.
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, "0"));
    }
    cmd.output().expect("run in cgroup")
}

/// Runs `guard-agent ARGS...` and waits for it.
pub fn agent_cmd(args: &[&str]) -> Output {
    Command::new(agent_bin()).args(args).output().expect("run guard-agent")
}

/// Starts `guard-agent launch [FLAGS] --agent AGENT -- CMD...` without waiting (stdout and
/// stderr piped).
pub fn spawn_launch(flags: &[&str], agent: &str, cmd: &[&str], env: &[(&str, &str)]) -> Child {
    let mut c = Command::new(agent_bin());
    c.arg("launch").args(flags).args(["--agent", agent, "--"]).args(cmd);
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn launch")
}

/// Waits for a verdict matching `pred` (up to `secs`), returning the first.
impl Daemon {
    pub fn await_verdict(&self, what: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + crate::secs(secs);
        loop {
            if let Some(v) = self.verdicts(&pred).into_iter().next() {
                return v;
            }
            assert!(Instant::now() < deadline, "no verdict for {what} within {secs}s; all: {:#?}\nstderr:\n{}", self.verdicts(|_| true), self.stderr_text());
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One sample (`series` with its labels, as printed) of the daemon's Prometheus metrics served
/// at 127.0.0.1:`port`.
pub fn metric(port: u16, series: &str) -> f64 {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics address");
    s.set_read_timeout(Some(secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// The agent's cgroup directory holds no session cgroups (launch removed its own).
pub fn assert_no_sessions(agent: &str) {
    let dir = cgroup2_root().join("guard").join(agent);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let sessions: Vec<_> = entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect();
        assert!(sessions.is_empty(), "session cgroups left: {sessions:?}");
    }
}

/// A verdict field by JSON pointer, as a string ("" if absent).
pub fn field(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Runs a network test helper (inside `agent`, if given) that prints `pid N` and, on failure,
/// `errno N` and exits 3. Returns (exit code, its pid, errno).
pub fn net_call(agent: Option<&str>, helper: &str, args: &[&str]) -> (i32, String, Option<i32>) {
    let mut cmd = vec![helper];
    cmd.extend_from_slice(args);
    let out = match agent {
        Some(agent) => launch(agent, &cmd, &[]).1,
        None => Command::new(helper).args(args).output().expect("run helper"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let pid = stdout.lines().find_map(|l| l.strip_prefix("pid ")).unwrap_or_default().to_owned();
    let errno = stdout.lines().find_map(|l| l.strip_prefix("errno ")).and_then(|e| e.parse().ok());
    (out.status.code().unwrap_or(-1), pid, errno)
}

impl Daemon {
    /// Like [`Daemon::start_with`], run through `wrapper` (a command that ends by exec'ing its
    /// arguments, e.g. `setpriv --bounding-set=... --`): the daemon as a service manager would
    /// start it. `pid()` is the daemon's, since the wrapper execs it.
    pub fn start_under(dir: &TempDir, policy: &str, wrapper: &[&str], extra: &[&str]) -> Self {
        assert!(!wrapper.is_empty(), "a wrapper command");
        Self::watch(Self::spawn(wrapper, dir, policy, extra, &[]))
    }

    /// Collects a spawned daemon's verdicts and stderr, and waits until it says it is enforcing.
    /// A ready line is stored before the ready signal, so a test reading stderr right after
    /// start sees it.
    fn watch(mut child: Child) -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let schema_errors = Arc::new(Mutex::new(Vec::new()));
        let validated = Arc::new(Mutex::new(BTreeMap::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout_gate = Arc::new(Mutex::new(()));
        let out = child.stdout.take().expect("stdout");
        let (gate, l, errors, kinds) = (Arc::clone(&stdout_gate), Arc::clone(&lines), Arc::clone(&schema_errors), Arc::clone(&validated));
        // Compiled before the first line arrives (and a broken schema fails here, loudly).
        ocsf_validators();
        let stdout_reader = thread::spawn(move || {
            let mut reader = BufReader::new(out);
            let mut buf = Vec::new();
            for n in 1.. {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                drop(gate.lock());
                // A last line cut short (a daemon killed mid-write) is not the daemon's output.
                if buf.last() != Some(&b'\n') {
                    break;
                }
                let line = String::from_utf8_lossy(&buf);
                let value: Value = match serde_json::from_str(line.trim_end()) {
                    Ok(v) => v,
                    Err(e) => {
                        errors.lock().unwrap().push(format!("line {n} is not JSON ({e}): {line}"));
                        continue;
                    }
                };
                let problems = ocsf_errors(&value);
                if problems.is_empty() {
                    *kinds.lock().unwrap().entry(kind(&value)).or_insert(0) += 1;
                } else {
                    errors.lock().unwrap().push(format!("line {n} ({}):\n  {}\n  {line}", kind(&value), problems.join("\n  ")));
                }
                l.lock().unwrap().push(value);
            }
        });
        let (err, s) = (child.stderr.take().expect("stderr"), Arc::clone(&stderr));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr_reader = thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let ready = line.contains("ready: enforcing");
                s.lock().unwrap().push(line);
                if ready {
                    let _ = ready_tx.send(());
                }
            }
        });
        let mut daemon = Self { child: Some(child), lines, schema_errors, validated, stdout_reader: Some(stdout_reader), stderr, stderr_reader: Some(stderr_reader), stdout_gate };
        if ready_rx.recv_timeout(secs(30)).is_err() {
            let status = daemon.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            panic!("daemon not ready within 30 s (exit: {status:?}); stderr:\n{}", daemon.stderr_text());
        }
        daemon
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_schemas_compile_and_reject_what_is_not_guard_output() {
        assert_eq!(ocsf_validators().keys().copied().collect::<Vec<_>>(), [1001, 1007, 2004, 4001, 6002]);
        assert_eq!(ocsf_errors(&json!({})), ["no numeric class_uid"]);
        assert_eq!(ocsf_errors(&json!({ "class_uid": 1002 })), ["class_uid 1002 is not a class guard emits"]);
        for class in [1001, 1007, 4001, 6002, 2004] {
            let errors = ocsf_errors(&json!({ "class_uid": class }));
            assert!(errors.iter().any(|e| e.contains("metadata")), "class {class}: {errors:?}");
        }
    }

    #[test]
    fn kinds_name_the_operation_and_the_verdict() {
        assert_eq!(kind(&json!({ "class_uid": 1007, "unmapped": { "verdict": "killed" } })), "exec/killed");
        assert_eq!(kind(&json!({ "class_uid": 4001, "unmapped": { "verdict": "denied", "operation": "sendmsg" } })), "sendmsg/denied");
        assert_eq!(kind(&json!({ "class_uid": 2004, "unmapped": { "verdict": "held" } })), "finding/exec/held");
    }
}
