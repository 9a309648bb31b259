//! The guard daemon as the bench runs it (release build, own sockets, settings and state in the
//! scratch directory, `--detach-on-exit`), its metrics, and the workers run inside or outside
//! an agent cgroup.
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Names and paths every part of the bench shares.
pub struct Ctx {
    /// The release guard-agent.
    pub agent_bin: PathBuf,
    /// This xtask binary (the workers).
    pub self_exe: PathBuf,
    pub scratch: PathBuf,
    /// A tiny static executable that exits 0 (`bench-true`), the same bytes named `rm` (held
    /// by the default policy's argv rule for `rm`), and one that sleeps until killed.
    pub tiny_true: PathBuf,
    pub tiny_rm: PathBuf,
    pub tiny_sleep: PathBuf,
    /// Where the D configuration's network sinks send (rsyslogd's port, the HEC receiver's).
    pub syslog_port: u16,
    pub hec_port: u16,
}

/// Which verdict sinks a daemon gets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sinks {
    File,
    All,
}

/// The agent name workloads are launched as: `guard/bench/<session>`, covered by the default
/// policy's `guard/*` and by the scale policies' agent `bench`.
pub const AGENT: &str = "bench";

pub struct Daemon {
    child: Option<Child>,
    agent_bin: PathBuf,
    pub pid: u32,
    pub launch_socket: PathBuf,
    metrics_port: u16,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `guard-agent daemon` and waits until it says it is enforcing.
    pub fn start(ctx: &Ctx, tag: &str, sinks: Sinks, policy: Option<&Path>) -> anyhow::Result<Self> {
        let dir = ctx.scratch.join("daemon");
        std::fs::create_dir_all(&dir)?;
        let metrics_port = free_port()?;
        let launch_socket = dir.join("launch.sock");
        let mut settings = format!(
            "admin_socket: {d}/guard.sock\nlaunch_socket: {l}\nstate_dir: {d}/state\n\
             metrics:\n  listen: 127.0.0.1:{metrics_port}\nsinks:\n  - type: file\n    path: {d}/verdicts-{tag}.jsonl\n",
            d = dir.display(),
            l = launch_socket.display()
        );
        if sinks == Sinks::All {
            settings.push_str(&format!(
                "  - type: syslog\n    url: tcp://127.0.0.1:{}\n  - type: splunk_hec\n    url: http://127.0.0.1:{}\n    token: guard-bench\n",
                ctx.syslog_port, ctx.hec_port
            ));
        }
        let config = dir.join(format!("guard-{tag}.yaml"));
        std::fs::write(&config, settings)?;
        let mut cmd = Command::new(&ctx.agent_bin);
        cmd.args(["daemon", "--detach-on-exit", "--config"]).arg(&config);
        if let Some(p) = policy {
            cmd.arg("--policy").arg(p);
        }
        // SIGINT should the bench die without stopping it: it detaches and removes its cgroups.
        let mut child = super::others::own_child(cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()), libc::SIGINT)
            .spawn()
            .with_context(|| format!("starting {}", ctx.agent_bin.display()))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (err, lines) = (child.stderr.take().context("daemon stderr")?, Arc::clone(&stderr));
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let ready = line.contains("ready: enforcing");
                lines.lock().unwrap().push(line);
                if ready {
                    let _ = ready_tx.send(());
                }
            }
        });
        let pid = child.id();
        let mut d = Self { child: Some(child), agent_bin: ctx.agent_bin.clone(), pid, launch_socket, metrics_port, stderr };
        if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let exit = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            bail!("guard-agent daemon not ready within 60 s (exit: {exit:?}); stderr:\n{}", d.stderr_text());
        }
        Ok(d)
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn metrics(&self) -> anyhow::Result<Metrics> {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics_port)).context("connecting to the daemon's metrics")?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).context("a metrics answer without a body")?;
        Ok(Metrics::parse(body))
    }

    /// SIGINT (the daemon detaches everything and removes its cgroups), up to 20 s, then SIGKILL.
    /// Waits (up to 10 s) until the daemon has caught up: no events arriving, nothing waiting in
    /// a network sink's spool. Then what it still does is not charged to the next workload.
    pub fn settle(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = -1.0;
        loop {
            thread::sleep(Duration::from_millis(100));
            let m = self.metrics()?;
            let events = m.sum("guard_events_total", &[]);
            if (events == last && m.sum("guard_sink_backlog", &[]) == 0.0) || Instant::now() > deadline {
                return Ok(());
            }
            last = events;
        }
    }

    /// SIGSTOP until the returned guard is dropped (SIGCONT).
    pub fn pause(&self) -> Paused {
        // SAFETY: signals the daemon this bench started.
        unsafe { libc::kill(self.pid as i32, libc::SIGSTOP) };
        Paused(self.pid)
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        let child = self.child.take().context("daemon already stopped")?;
        match self.interrupt(child) {
            Some(s) if s.success() => Ok(()),
            other => bail!("guard-agent daemon stopped with {other:?}; stderr:\n{}", self.stderr_text()),
        }
    }

    /// SIGINT, then SIGKILL after 20 s; a killed daemon did not detach, so its pinned programs
    /// are removed here (`guard-agent detach`), which detaches them.
    fn interrupt(&self, child: Child) -> Option<std::process::ExitStatus> {
        let status = interrupt_and_wait(child, libc::SIGINT, Duration::from_secs(20));
        if status.is_none() {
            let _ = Command::new(&self.agent_bin).arg("detach").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = self.interrupt(child);
        }
    }
}

pub struct Paused(u32);

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: continues the daemon this bench started and stopped.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

/// Sends `sig` to a child this bench started and waits up to `within`; SIGKILL after that.
/// `None` if it had to be killed.
pub fn interrupt_and_wait(mut child: Child, sig: i32, within: Duration) -> Option<std::process::ExitStatus> {
    // SAFETY: signals a child process this bench started and has not reaped.
    unsafe { libc::kill(child.id() as i32, sig) };
    let deadline = Instant::now() + within;
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

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Prometheus text, parsed: (name, labels, value) per sample.
pub struct Metrics(Vec<(String, BTreeMap<String, String>, f64)>);

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let Some((head, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let (name, labels) = match head.split_once('{') {
                Some((n, rest)) => {
                    let mut labels = BTreeMap::new();
                    for pair in rest.trim_end_matches('}').split("\",") {
                        if let Some((k, v)) = pair.split_once("=\"") {
                            labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                        }
                    }
                    (n.to_owned(), labels)
                }
                None => (head.to_owned(), BTreeMap::new()),
            };
            out.push((name, labels, value));
        }
        Self(out)
    }

    /// Sum of the samples of `name` whose labels include `with`.
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(n, l, _)| n == name && with.iter().all(|(k, v)| l.get(*k).is_some_and(|x| x == v)))
            .map(|(_, _, v)| v)
            .sum()
    }

    /// The value of label `key` on each sample of `name`, with the sample's value.
    pub fn by(&self, name: &str, key: &str) -> BTreeMap<String, f64> {
        self.0.iter().filter(|(n, _, _)| n == name).filter_map(|(_, l, v)| Some((l.get(key)?.clone(), *v))).collect()
    }

    /// (upper bound, cumulative count) of a histogram's buckets with the given labels.
    pub fn buckets(&self, name: &str, with: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let mut b: Vec<(f64, f64)> = self
            .0
            .iter()
            .filter(|(n, l, _)| *n == format!("{name}_bucket") && with.iter().all(|(k, v)| l.get(*k).is_some_and(|x| x == v)))
            .filter_map(|(_, l, v)| Some((l.get("le")?.replace("+Inf", "inf").parse().ok()?, *v)))
            .collect();
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        b
    }

    /// Per-program (run seconds, runs) while `kernel.bpf_stats_enabled` is 1.
    pub fn programs(&self) -> BTreeMap<String, (f64, f64)> {
        let secs = self.by("guard_bpf_program_run_seconds_total", "program");
        let runs = self.by("guard_bpf_program_runs_total", "program");
        secs.into_iter().map(|(p, s)| (p.clone(), (s * 1e9, runs.get(&p).copied().unwrap_or(0.0)))).collect()
    }
}

/// Where a worker runs: on the host (outside agent cgroups), or as an agent workload of `d`.
#[derive(Clone, Copy)]
pub enum Place<'a> {
    Host,
    Agent(&'a Daemon),
}

/// The worker command line: `xtask bench worker JOB ARGS...`, through `guard-agent launch` for
/// an agent workload.
pub fn worker_cmd(ctx: &Ctx, place: Place<'_>, job: &[String]) -> Command {
    let mut cmd = match place {
        Place::Host => Command::new(&ctx.self_exe),
        Place::Agent(d) => {
            let mut c = Command::new(&ctx.agent_bin);
            c.arg("launch").arg("--socket").arg(&d.launch_socket).args(["--agent", AGENT, "--"]).arg(&ctx.self_exe);
            c
        }
    };
    cmd.args(["bench", "worker"]).args(job).current_dir(&ctx.scratch);
    cmd
}

/// Runs a worker to the end and returns its `bench-result` values.
pub fn run_worker(ctx: &Ctx, place: Place<'_>, job: &[String]) -> anyhow::Result<BTreeMap<String, f64>> {
    let out = worker_cmd(ctx, place, job).stdin(Stdio::null()).output().context("running a bench worker")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("worker {job:?} failed ({}): {}{}", out.status, stdout, String::from_utf8_lossy(&out.stderr));
    }
    parse_result(&stdout).with_context(|| format!("worker {job:?} printed no result: {stdout}"))
}

pub fn parse_result(stdout: &str) -> Option<BTreeMap<String, f64>> {
    let line = stdout.lines().rev().find_map(|l| l.strip_prefix("bench-result "))?;
    Some(line.split_whitespace().filter_map(|kv| kv.split_once('=')).filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?))).collect())
}

/// CPU time of a process's live threads, in seconds: the sum of their scheduler run times
/// (`/proc/PID/task/*/schedstat`, nanoseconds), or utime + stime (clock ticks) without them.
pub fn cpu_secs(pid: u32) -> f64 {
    let mut ns = 0u64;
    let mut seen = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Some(v) = std::fs::read_to_string(t.path().join("schedstat")).ok().and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok()) {
                ns += v;
                seen = true;
            }
        }
    }
    if seen {
        return ns as f64 / 1e9;
    }
    ticks_secs(pid)
}

/// Utime + stime of a process, in seconds (clock-tick resolution).
fn ticks_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based over the whole line).
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// A `/proc/PID/status` field in KiB (VmHWM, VmRSS).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok()))
        .unwrap_or(0)
}
