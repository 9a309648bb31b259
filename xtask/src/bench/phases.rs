//! The phases after the interleaved rounds: exec storm, policy scale, hold latency, 10,000 live
//! processes, and the profiles (per-program run time with `kernel.bpf_stats_enabled`, perf on
//! the daemon) that explain what the rounds measured.
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    Cfg, Env, Load, Plan, Results,
    agent::{self, Ctx, Daemon, Place, Sinks},
    args, check_interrupt, others, wait_quiet,
};

/// One step of the storm: the rate asked for (0: as fast as the workload can), the rate
/// reached, and what the ring buffer and the daemon did meanwhile.
#[derive(Clone, Debug)]
pub struct StormStep {
    pub asked: f64,
    pub reached: f64,
    pub exec_drops: f64,
    pub all_drops: f64,
    /// Daemon CPU seconds per wall second during the step.
    pub daemon_cpu: f64,
    /// Exec events the daemon read per daemon-CPU second.
    pub events_per_cpu_sec: f64,
}

pub struct Storm {
    /// Execs/s with no agent, one thread per core (the machine's maximum exec rate).
    pub max_rate: f64,
    pub steps: Vec<(Cfg, Vec<StormStep>)>,
}

pub fn storm(ctx: &Ctx, plan: &Plan, res: &mut Results) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).to_string();
    let job = |rate: f64| {
        args(&["storm", "--bin", &ctx.tiny_true.display().to_string(), "--rate", &rate.to_string(), "--secs", &plan.storm_secs.to_string(), "--threads", &threads])
    };
    wait_quiet(plan, res)?;
    let r = agent::run_worker(ctx, Place::Host, &job(0.0))?;
    let max_rate = r["execs"] / r["secs"];
    let mut all = Vec::new();
    for cfg in [Cfg::C, Cfg::D] {
        let sinks = if cfg == Cfg::C { Sinks::File } else { Sinks::All };
        let daemon = Daemon::start(ctx, &format!("storm-{}", cfg.letter()), sinks, None)?;
        let mut steps = Vec::new();
        for fraction in plan.storm_steps.iter().copied().chain([0.0]) {
            wait_quiet(plan, res)?;
            let before = daemon.metrics()?;
            let cpu = agent::cpu_secs(daemon.pid);
            let r = agent::run_worker(ctx, Place::Agent(&daemon), &job(fraction * max_rate))?;
            daemon.settle()?;
            let after = daemon.metrics()?;
            // No drop counter is no evidence of no drop: the target must not pass on it.
            if !after.by("guard_ring_buffer_drops_total", "kind").contains_key("exec") {
                bail!("the daemon's metrics have no guard_ring_buffer_drops_total{{kind=\"exec\"}}");
            }
            let cpu = agent::cpu_secs(daemon.pid) - cpu;
            let d = |name: &str, with: &[(&str, &str)]| after.sum(name, with) - before.sum(name, with);
            let step = StormStep {
                asked: fraction * max_rate,
                reached: r["execs"] / r["secs"],
                exec_drops: d("guard_ring_buffer_drops_total", &[("kind", "exec")]),
                all_drops: d("guard_ring_buffer_drops_total", &[]),
                daemon_cpu: cpu / r["secs"],
                events_per_cpu_sec: d("guard_events_total", &[("kind", "exec")]) / cpu.max(0.01),
            };
            let dropped = step.all_drops > 0.0;
            steps.push(step);
            if dropped {
                break;
            }
        }
        daemon.stop()?;
        all.push((cfg, steps));
    }
    res.storm = Some(Storm { max_rate, steps: all });
    Ok(())
}

/// Exec-loop and connect-loop seconds with a policy of 10 and of 10,000 exec-deny entries and
/// network prefixes.
pub struct Scale {
    pub samples: BTreeMap<(usize, Load), Vec<f64>>,
}

pub const SCALE_SIZES: [usize; 2] = [10, 10_000];

/// A policy for agent `bench` with `n` exec-deny rules (a quarter each of path, path_prefix,
/// basename, basename_prefix) and `n` deny prefixes (/16 to /32, two fifths inside 127.0.0.0/8
/// beside the loopback address the workload connects to, so lookups walk deep into the trie).
pub fn scale_policy(n: usize) -> String {
    let mut p = String::from("mode: enforce\nagents:\n  - name: bench\n    exec:\n      deny:\n");
    for i in 0..n {
        let rule = match i % 4 {
            0 => format!("path: /opt/guard-bench/deny/tool-{i}"),
            1 => format!("path_prefix: /opt/guard-bench/dir-{i}/"),
            2 => format!("basename: bench-deny-{i}"),
            _ => format!("basename_prefix: bdp{i}-"),
        };
        p.push_str(&format!("        - {rule}\n"));
    }
    p.push_str("    network:\n      default: allow\n      allow:\n        - cidr: 127.0.0.1/32\n      deny:\n");
    for i in 0..n {
        let (a, b) = ((i >> 8) & 0xff, i & 0xff);
        let cidr = match i % 5 {
            0 => format!("127.{}.{a}.{b}/32", 1 + (i >> 16)),
            1 => format!("127.0.{}.{b}/32", 1 + a % 255),
            2 => format!("10.{a}.{b}.0/24"),
            3 => format!("172.{}.{b}.0/28", 16 + a % 16),
            _ => format!("{}.{b}.0.0/16", 20 + a % 100),
        };
        p.push_str(&format!("        - cidr: {cidr}\n"));
    }
    p
}

pub fn scale(ctx: &Ctx, plan: &Plan, res: &mut Results) -> anyhow::Result<()> {
    let mut s = Scale { samples: BTreeMap::new() };
    for n in SCALE_SIZES {
        std::fs::write(ctx.scratch.join(format!("scale-{n}.yaml")), scale_policy(n))?;
    }
    for _ in 0..plan.scale_rounds {
        for n in SCALE_SIZES {
            check_interrupt()?;
            let daemon = Daemon::start(ctx, &format!("scale-{n}"), Sinks::File, Some(&ctx.scratch.join(format!("scale-{n}.yaml"))))?;
            for load in [Load::Exec, Load::Connect] {
                wait_quiet(plan, res)?;
                let r = agent::run_worker(ctx, Place::Agent(&daemon), &plan.job(ctx, load))?;
                s.samples.entry((n, load)).or_default().push(r["ns"] / 1e9);
            }
            daemon.stop()?;
        }
    }
    res.scale = Some(s);
    Ok(())
}

/// Exec-to-exit of a binary the default policy holds for the daemon to judge its argv (the
/// tiny executable named `rm`, released because its argv is harmless), beside the same binary
/// under another name (not held), in the same agent cgroup; and the daemon's own histogram.
pub struct Hold {
    pub n: u64,
    /// ns: p50, p99, max of the held exec; p50, p99, max of the plain one.
    pub held: [f64; 3],
    pub plain: [f64; 3],
    /// The daemon's `guard_hold_decision_seconds{decision="policy"}`: count, mean (s), and
    /// (bucket bound, cumulative count).
    pub count: f64,
    pub mean: f64,
    pub buckets: Vec<(f64, f64)>,
}

pub fn hold(ctx: &Ctx, plan: &Plan, res: &mut Results) -> anyhow::Result<()> {
    let daemon = Daemon::start(ctx, "hold", Sinks::File, None)?;
    wait_quiet(plan, res)?;
    let job = args(&[
        "exec-times",
        "--bin",
        &ctx.tiny_rm.display().to_string(),
        "--base",
        &ctx.tiny_true.display().to_string(),
        "--n",
        &plan.hold_n.to_string(),
        "--",
        "-f",
        "/nonexistent/guard-bench",
    ]);
    let r = agent::run_worker(ctx, Place::Agent(&daemon), &job)?;
    daemon.settle()?;
    let m = daemon.metrics()?;
    let with = [("decision", "policy")];
    let count = m.sum("guard_hold_decision_seconds_count", &with);
    res.hold = Some(Hold {
        n: plan.hold_n,
        held: [r["bin_p50"], r["bin_p99"], r["bin_max"]],
        plain: [r["base_p50"], r["base_p99"], r["base_max"]],
        count,
        mean: m.sum("guard_hold_decision_seconds_sum", &with) / count.max(1.0),
        buckets: m.buckets("guard_hold_decision_seconds", &with),
    });
    daemon.stop()
}

/// The daemon with `n` live processes of an agent workload in its process table.
pub struct Live {
    pub n: u64,
    pub table: f64,
    pub drops: f64,
    pub rss_before_kib: u64,
    /// VmRSS with the processes live, and the peak (VmHWM) since the daemon started.
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn live(ctx: &Ctx, plan: &Plan, res: &mut Results) -> anyhow::Result<()> {
    let daemon = Daemon::start(ctx, "live", Sinks::File, None)?;
    daemon.settle()?;
    let rss_before_kib = agent::status_kib(daemon.pid, "VmRSS");
    let job = args(&["sleepers", "--bin", &ctx.tiny_sleep.display().to_string(), "--n", &plan.live_n.to_string(), "--rate", "4000"]);
    let mut child = agent::worker_cmd(ctx, Place::Agent(&daemon), &job).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let mut stdin = child.stdin.take().context("worker stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
    let measured = (|| -> anyhow::Result<Live> {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("ready") => {}
            other => bail!("the sleepers worker did not start its processes: {other:?}"),
        }
        // The table fills as the daemon reads the exec events; wait until it stops growing.
        let (mut table, mut last, deadline) = (0.0, -1.0, Instant::now() + Duration::from_secs(30));
        while Instant::now() < deadline {
            table = daemon.metrics()?.sum("guard_process_table_entries", &[]);
            if table >= plan.live_n as f64 && table == last {
                break;
            }
            last = table;
            thread::sleep(Duration::from_millis(250));
        }
        let m = daemon.metrics()?;
        Ok(Live {
            n: plan.live_n,
            table,
            drops: m.sum("guard_ring_buffer_drops_total", &[]),
            rss_before_kib,
            rss_kib: agent::status_kib(daemon.pid, "VmRSS"),
            hwm_kib: agent::status_kib(daemon.pid, "VmHWM"),
        })
    })();
    // Whatever happened: the worker kills and reaps exactly the processes it started.
    let _ = writeln!(stdin, "stop");
    drop(stdin);
    let status = child.wait()?;
    let l = measured?;
    if !status.success() {
        bail!("the sleepers worker failed: {status}");
    }
    res.live = Some(l);
    daemon.stop()
}

/// One run of each workload with `kernel.bpf_stats_enabled` on (only here: the statistics
/// cost a clock read per program run, so the timed rounds run without them), reading each
/// program's run time and count before and after; the same for C with the daemon stopped
/// (SIGSTOP) during the timed loop, so no event wakes it; and a perf profile of the daemon
/// during C's exec loop.
pub fn profile(ctx: &Ctx, plan: &Plan, res: &mut Results) -> anyhow::Result<()> {
    let _stats = others::BpfStats::enable()?;
    let mut targets: Vec<(String, Option<Cfg>)> = [Cfg::B, Cfg::C, Cfg::D, Cfg::F].iter().map(|c| (c.letter().to_owned(), Some(*c))).collect();
    targets.extend(SCALE_SIZES.iter().map(|n| (format!("scale-{n}"), None)));
    for (label, cfg) in targets {
        check_interrupt()?;
        let env = match cfg {
            Some(c) => Env::up(ctx, c)?,
            None => {
                let policy = ctx.scratch.join(format!("{label}.yaml"));
                Env::Agent { daemon: Daemon::start(ctx, &label, Sinks::File, Some(&policy))?, inside: true }
            }
        };
        let loads: &[Load] = if cfg.is_some() { &Load::ALL } else { &[Load::Exec, Load::Connect] };
        for &load in loads {
            wait_quiet(plan, res)?;
            let before = program_stats(&env)?;
            let perf = match &env {
                Env::Agent { daemon, .. } if plan.perf && matches!(cfg, Some(Cfg::C | Cfg::D)) && load != Load::Stream => Perf::start(&ctx.scratch, daemon.pid).ok(),
                _ => None,
            };
            let r = agent::run_worker(ctx, env.place(), &plan.job(ctx, load))?;
            env.settle()?;
            if let (Some(p), Some(c)) = (perf, cfg)
                && let Ok(profile) = p.finish()
            {
                res.perf_top.insert((c, load), profile);
            }
            let ops = match load {
                Load::Exec => warmed(plan.exec_n),
                Load::Connect => warmed(plan.connect_n),
                Load::Stream => (plan.stream_bytes >> 20) as f64,
            };
            let after = program_stats(&env)?;
            res.programs.insert((label.clone(), load), per_op(&before, &after, ops));
            res.profile_ns.insert((label.clone(), load), r["ns"] / timed_ops(plan, load));
        }
        env.down()?;
    }
    for load in [Load::Exec, Load::Connect] {
        check_interrupt()?;
        paused(ctx, plan, load, res)?;
    }
    Ok(())
}

/// Iterations of a loop worker: the untimed warm-up (n/20) and the timed n.
fn warmed(n: u64) -> f64 {
    (n + (n / 20).max(1)) as f64
}

fn timed_ops(plan: &Plan, load: Load) -> f64 {
    match load {
        Load::Exec => plan.exec_n as f64,
        Load::Connect => plan.connect_n as f64,
        Load::Stream => (plan.stream_bytes >> 20) as f64,
    }
}

fn program_stats(env: &Env) -> anyhow::Result<BTreeMap<String, (f64, f64)>> {
    Ok(match env {
        Env::Agent { daemon, .. } => daemon.metrics()?.programs(),
        Env::Trace(t) => BTreeMap::from([("bpftrace".to_owned(), t.program_stats())]),
        _ => BTreeMap::new(),
    })
}

/// (runs, ns) per operation of each program that ran, from two readings of (ns, runs).
fn per_op(before: &BTreeMap<String, (f64, f64)>, after: &BTreeMap<String, (f64, f64)>, ops: f64) -> BTreeMap<String, (f64, f64)> {
    after
        .iter()
        .filter_map(|(p, (ns, runs))| {
            let (ns0, runs0) = before.get(p).copied().unwrap_or_default();
            (runs - runs0 > 0.0).then(|| (p.clone(), ((runs - runs0) / ops, (ns - ns0) / ops)))
        })
        .collect()
}

/// Records, in bytes on the ring buffer, per exec of the tiny binary (exec, fork and exit
/// events, each with its 8-byte header, 8-aligned) and per connect.
pub fn record_bytes(ctx: &Ctx) -> (usize, usize) {
    use guard_common::{ARGV_LEN, ConnectEvent, ExecEvent, ProcEvent};
    let rec = |size: usize| (size + 8).div_ceil(8) * 8;
    let argv = ctx.tiny_true.as_os_str().len() + 1;
    (rec(size_of::<ExecEvent>() - ARGV_LEN + argv) + 2 * rec(size_of::<ProcEvent>()), rec(size_of::<ConnectEvent>()))
}

/// The default ring buffer (`ring_buffer_kib: 1024`).
pub const RING_BYTES: usize = 1024 * 1024;

/// The C loop with the daemon stopped for the timed part: events queue in the ring buffer (the
/// loop is sized to fit), so none wakes the daemon and it takes no CPU meanwhile.
fn paused(ctx: &Ctx, plan: &Plan, load: Load, res: &mut Results) -> anyhow::Result<()> {
    let (per_exec, per_connect) = record_bytes(ctx);
    let (n, job) = match load {
        Load::Exec => {
            let n = plan.exec_n.min((RING_BYTES * 6 / 10 / per_exec) as u64);
            (n, args(&["exec-loop", "--wait", "--bin", &ctx.tiny_true.display().to_string(), "--n", &n.to_string()]))
        }
        _ => {
            let n = plan.connect_n.min((RING_BYTES * 6 / 10 / per_connect) as u64);
            (n, args(&["connect-loop", "--wait", "--n", &n.to_string()]))
        }
    };
    let daemon = Daemon::start(ctx, "paused", Sinks::File, None)?;
    let mut child = agent::worker_cmd(ctx, Place::Agent(&daemon), &job).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let mut stdin = child.stdin.take().context("worker stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
    type Readings = (BTreeMap<String, (f64, f64)>, BTreeMap<String, f64>);
    let run = (|| -> anyhow::Result<Readings> {
        match lines.next() {
            Some(Ok(l)) if l == "waiting" => {}
            other => bail!("the paused-daemon worker did not get ready: {other:?}"),
        }
        daemon.settle()?;
        let before = daemon.metrics()?.programs();
        wait_quiet(plan, res)?;
        let result = {
            let _paused = daemon.pause();
            writeln!(stdin, "go")?;
            let line = lines.find_map(|l| l.ok().filter(|l| l.starts_with("bench-result ")));
            line.and_then(|l| agent::parse_result(&l)).context("the paused-daemon worker printed no result")?
        };
        daemon.settle()?;
        Ok((before, result))
    })();
    drop(stdin);
    let status = child.wait()?;
    let (before, result) = run?;
    if !status.success() {
        bail!("the paused-daemon worker failed: {status}");
    }
    let m = daemon.metrics()?;
    let drops = m.sum("guard_ring_buffer_drops_total", &[]);
    res.programs.insert(("C-paused".to_owned(), load), per_op(&before, &m.programs(), n as f64));
    res.profile_ns.insert(("C-paused".to_owned(), load), result["ns"] / n as f64);
    if drops > 0.0 {
        res.sinks.push(format!("note: the paused-daemon {load:?} run dropped {drops} records"));
    }
    daemon.stop()
}

/// A perf profile of the daemon: (percent of samples, what), largest first.
#[derive(Default)]
pub struct Profile {
    /// `OBJECT [.] SYMBOL`.
    pub symbols: Vec<(f64, String)>,
    /// Thread names (the event loop is `guard-agent`, network sinks' threads `sink-NAME`).
    pub threads: Vec<(f64, String)>,
}

/// `perf record` on one process; `finish` stops it and returns the top symbols.
struct Perf {
    child: Option<std::process::Child>,
    data: std::path::PathBuf,
}

impl Drop for Perf {
    /// On an error between start and finish: perf stops with the bench, not with the daemon.
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            agent::interrupt_and_wait(c, libc::SIGINT, Duration::from_secs(20));
        }
    }
}

impl Perf {
    fn start(scratch: &Path, pid: u32) -> anyhow::Result<Self> {
        let data = scratch.join("perf.data");
        let child = Command::new("perf")
            .args(["record", "-F", "1999", "-p", &pid.to_string(), "-o"])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        thread::sleep(Duration::from_millis(300));
        Ok(Self { child: Some(child), data })
    }

    /// Stops perf; the daemon's top symbols and its threads' shares.
    fn finish(mut self) -> anyhow::Result<Profile> {
        if let Some(c) = self.child.take() {
            agent::interrupt_and_wait(c, libc::SIGINT, Duration::from_secs(20));
        }
        Ok(Profile { symbols: self.report("dso,symbol")?, threads: self.report("comm")? })
    }

    fn report(&self, sort: &str) -> anyhow::Result<Vec<(f64, String)>> {
        let out = Command::new("perf")
            .args(["report", "--stdio", "--no-children", "--sort", sort, "--percent-limit", "0.05", "-i"])
            .arg(&self.data)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let l = l.trim();
                let (pct, rest) = l.split_once('%')?;
                let words: Vec<&str> = rest.split_whitespace().collect();
                // `OBJECT [.] SYMBOL - -`: the trailing columns are empty sort keys.
                let end = words.iter().rposition(|w| *w != "-").map_or(0, |i| i + 1);
                Some((pct.trim().parse().ok()?, words[..end].join(" ")))
            })
            .collect())
    }
}

/// What the bench's guard and auditd could leave behind (agent cgroups, pinned state, audit
/// rules), if anything.
pub fn leftovers() -> Option<String> {
    let mut left = Vec::new();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let cgroup2 = mountinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.iter().skip_while(|x| **x != "-").nth(1) == Some(&"cgroup2")).then(|| f.get(4).map(|m| (*m).to_owned())).flatten()
    });
    if let Some(cgroup2) = cgroup2
        && let Ok(entries) = std::fs::read_dir(Path::new(&cgroup2).join("guard").join(agent::AGENT))
    {
        let sessions: Vec<_> = entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path().display().to_string()).collect();
        if !sessions.is_empty() {
            left.push(format!("session cgroups {sessions:?}"));
        }
    }
    if Path::new("/sys/fs/bpf/guard").exists() {
        left.push("pinned state in /sys/fs/bpf/guard".to_owned());
    }
    if let Ok(out) = Command::new("auditctl").arg("-l").output() {
        let rules = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("key=guard-bench")).count();
        if rules > 0 {
            left.push(format!("{rules} audit rule(s) with key guard-bench"));
        }
    }
    (!left.is_empty()).then(|| left.join("; "))
}
