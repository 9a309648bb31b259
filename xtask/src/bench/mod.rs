//! `cargo xtask bench`: guard's overhead, side by side with no agent, auditd and bpftrace, in
//! one run. Configurations are interleaved round by round (A B C D E F, A B C D E F, ...), each
//! workload's median over the rounds is compared with A's, and the table printed is the one
//! written to BENCHMARKS.md, with the machine, the command, and the reason for every target
//! missed (from per-program run times, the daemon's CPU time and a perf profile).
//!
//! Layout: `worker` (the workloads, re-executed from this binary), `agent` (the daemon, its
//! metrics, launching workers inside or outside an agent cgroup), `others` (auditd, bpftrace,
//! rsyslogd, the HEC stand-in, the shared lock), `phases` (storm, policy scale, hold latency,
//! live processes, profiles), `report` (the table and BENCHMARKS.md).
mod agent;
mod others;
mod phases;
mod report;
#[cfg(test)]
mod tests;
mod worker;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use agent::{Ctx, Daemon, Place, Sinks};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// A short run for development (under 2 minutes): fewer rounds, smaller workloads. Written
    /// to target/bench/BENCHMARKS.quick.md unless --out says otherwise.
    #[arg(long)]
    quick: bool,
    /// Rounds of A..F (default: 15, or 2 with --quick).
    #[arg(long, value_name = "N")]
    rounds: Option<usize>,
    /// Profile the daemon with perf in a --quick run too (a full run always does).
    #[arg(long)]
    perf: bool,
    /// Where the report goes (default: BENCHMARKS.md at the workspace root).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(subcommand)]
    internal: Option<Internal>,
}

#[derive(Debug, clap::Subcommand)]
enum Internal {
    /// A workload process (run by the bench itself).
    #[command(hide = true)]
    Worker {
        #[command(subcommand)]
        job: worker::Job,
    },
}

/// The configurations compared.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Cfg {
    A,
    B,
    C,
    D,
    E,
    F,
}

impl Cfg {
    pub const ALL: [Cfg; 6] = [Cfg::A, Cfg::B, Cfg::C, Cfg::D, Cfg::E, Cfg::F];

    pub fn title(self) -> &'static str {
        match self {
            Cfg::A => "A: no agent",
            Cfg::B => "B: guard, workload outside agent cgroups",
            Cfg::C => "C: workload in an agent cgroup, default policy, file sink",
            Cfg::D => "D: C + syslog (rsyslogd) + HTTP (HEC) sinks",
            Cfg::E => "E: auditd, execve+connect rules, no agent",
            Cfg::F => "F: bpftrace exec one-liner, no agent",
        }
    }

    pub fn letter(self) -> &'static str {
        &self.title()[..1]
    }
}

/// The timed workloads of every round.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Load {
    Exec,
    Connect,
    Stream,
}

impl Load {
    pub const ALL: [Load; 3] = [Load::Exec, Load::Connect, Load::Stream];
}

/// How much of everything a run does.
pub struct Plan {
    pub quick: bool,
    pub rounds: usize,
    pub exec_n: u64,
    pub connect_n: u64,
    pub stream_bytes: u64,
    pub storm_secs: f64,
    /// Fractions of the machine's maximum exec rate the storm steps through (then unpaced).
    pub storm_steps: Vec<f64>,
    pub scale_rounds: usize,
    pub hold_n: u64,
    pub live_n: u64,
    pub perf: bool,
    /// Seconds [`wait_quiet`] may wait for the machine to be quiet: per run, and in all.
    pub quiet_wait: (f64, f64),
}

impl Plan {
    fn new(quick: bool, rounds: Option<usize>) -> Self {
        if quick {
            Self {
                quick,
                rounds: rounds.unwrap_or(2),
                exec_n: 1_000,
                connect_n: 5_000,
                stream_bytes: 256 << 20,
                storm_secs: 1.0,
                storm_steps: vec![0.5, 0.9],
                scale_rounds: 1,
                hold_n: 300,
                live_n: 10_000,
                perf: false,
                quiet_wait: (10.0, 20.0),
            }
        } else {
            Self {
                quick,
                rounds: rounds.unwrap_or(15),
                exec_n: 5_000,
                connect_n: 20_000,
                stream_bytes: 1 << 30,
                storm_secs: 2.0,
                storm_steps: vec![0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 1.0],
                scale_rounds: 7,
                hold_n: 2_000,
                live_n: 10_000,
                perf: true,
                quiet_wait: (120.0, 240.0),
            }
        }
    }

    pub fn job(&self, ctx: &Ctx, load: Load) -> Vec<String> {
        match load {
            Load::Exec => args(&["exec-loop", "--bin", &ctx.tiny_true.display().to_string(), "--n", &self.exec_n.to_string()]),
            Load::Connect => args(&["connect-loop", "--n", &self.connect_n.to_string()]),
            Load::Stream => args(&["stream", "--bytes", &self.stream_bytes.to_string()]),
        }
    }
}

pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// Everything measured; the report is made from this alone.
#[derive(Default)]
pub struct Results {
    /// Seconds per run of each workload, one per round.
    pub samples: BTreeMap<(Cfg, Load), Vec<f64>>,
    /// CPU seconds the workload itself (its threads and waited-for children) used per run,
    /// one per round: guard's programs run in its context; the daemon is not in it.
    pub worker_cpu: BTreeMap<(Cfg, Load), Vec<f64>>,
    /// CPU seconds the observer (daemon, auditd + kauditd, bpftrace) used per run.
    pub observer_cpu: BTreeMap<(Cfg, Load), Vec<f64>>,
    /// Its peak RSS (VmHWM, KiB), the largest over the rounds.
    pub observer_hwm: BTreeMap<Cfg, u64>,
    pub storm: Option<phases::Storm>,
    pub scale: Option<phases::Scale>,
    pub hold: Option<phases::Hold>,
    pub live: Option<phases::Live>,
    /// Per-program (ns, runs) during one run of a workload, by profile label (B, C, D, F,
    /// scale-10, scale-10000).
    pub programs: BTreeMap<(String, Load), BTreeMap<String, (f64, f64)>>,
    /// ns per operation of the timed loop in each profile run.
    pub profile_ns: BTreeMap<(String, Load), f64>,
    /// The machine's CPU time during the rounds, in core-seconds: (wall × cores, busy, used
    /// by the bench's processes, steal).
    pub load: (f64, f64, f64, f64),
    /// Seconds spent waiting for other work on the machine to stop before a timed run, and
    /// the runs that started anyway (still busy after two minutes).
    pub waited: f64,
    pub busy_starts: u32,
    /// The daemon's perf profiles during C's and D's exec and connect loops.
    pub perf_top: BTreeMap<(Cfg, Load), phases::Profile>,
    /// What the D sinks delivered.
    pub sinks: Vec<String>,
    /// E used the machine's own auditd (already running) rather than one the bench started.
    pub system_auditd: bool,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Fails once SIGINT/SIGTERM/SIGHUP arrived, so everything started is stopped on the way out.
pub fn check_interrupt() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; stopped everything the bench started");
    }
    Ok(())
}

pub fn run(root: &Path, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(Internal::Worker { job }) = args.internal {
        worker::main(job)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.rounds == Some(0) {
        bail!("--rounds must be at least 1");
    }
    let mut command = vec!["cargo".to_owned(), "xtask".to_owned()];
    command.extend(std::env::args().skip(1));
    // A handler (not "ignore", which workers would inherit), installed before anything is
    // changed: Ctrl-C ends the current child (apt-get, cargo, a worker), and the bench undoes
    // what it did (policy-rc.d while installing; daemons, auditd, bpftrace, rsyslogd run in
    // their own process groups and are stopped here, in order).
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installs a handler that only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    crate::setup::ensure(&command[2..].iter().map(String::as_str).collect::<Vec<_>>())?;
    check_interrupt()?;
    others::apt_install(&["auditd", "bpftrace", "rsyslog"])?;
    check_interrupt()?;
    // Built before taking the lock: a build does not get in the way of the privileged tests.
    crate::cargo(root, &["build", "--release", "--package", "guard-agent"])?;
    check_interrupt()?;
    let lock = others::Lock::take()?;
    let command = match &lock.wrapper {
        Some(w) => w.clone(),
        None => command.join(" "),
    };
    // The bench's daemons use guard's default pin directory and cgroups, adopt pinned state
    // they find there and remove it on exit (--detach-on-exit): never someone else's. And the
    // cleanup check at the end must only find what this run left.
    if let Some(found) = phases::leftovers() {
        bail!(
            "found before starting: {found} (another guard's, or left by an earlier run). The bench would adopt and remove it; remove it first (`guard-agent detach`, `auditctl -D -k guard-bench`)"
        );
    }
    let started = Instant::now();
    let mut plan = Plan::new(args.quick, args.rounds);
    plan.perf |= args.perf;
    let scratch = Scratch::new()?;
    let result = bench(root, &plan, &scratch.0);
    let (res, ctx) = match result {
        Ok(r) => r,
        Err(e) => {
            drop(scratch);
            return Err(match phases::leftovers() {
                Some(l) => e.context(format!("left behind: {l}")),
                None => e,
            });
        }
    };
    let leftovers = phases::leftovers();
    let machine = report::Machine::describe(root);
    let text = report::render(&report::Input { plan: &plan, res: &res, machine: &machine, command: &command, elapsed: started.elapsed(), leftovers: &leftovers, ctx: &ctx });
    drop(scratch);
    drop(lock);
    print!("{text}");
    let out = args.out.unwrap_or_else(|| if plan.quick { root.join("target/bench/BENCHMARKS.quick.md") } else { root.join("BENCHMARKS.md") });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("\nbench: written to {} ({:.0} s)", out.display(), started.elapsed().as_secs_f64());
    if let Some(l) = leftovers {
        bail!("left behind: {l}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The scratch directory (settings, verdict files, logs, tiny binaries), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("guard-bench-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bin"))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bench(root: &Path, plan: &Plan, scratch: &Path) -> anyhow::Result<(Results, Ctx)> {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = scratch.join("bin");
    let (tiny_true, tiny_rm, tiny_sleep) = (bin.join("bench-true"), bin.join("rm"), bin.join("bench-sleep"));
    for (path, sleep) in [(&tiny_true, false), (&tiny_rm, false), (&tiny_sleep, true)] {
        std::fs::write(path, worker::tiny_elf(sleep)?)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    let _audit = others::AuditRestore::save();
    let rsyslog = others::Rsyslog::start(scratch)?;
    let hec = others::Hec::start()?;
    let ctx = Ctx {
        agent_bin: root.join("target/release/guard-agent"),
        self_exe: std::env::current_exe()?,
        scratch: scratch.to_owned(),
        tiny_true,
        tiny_rm,
        tiny_sleep,
        syslog_port: rsyslog.port,
        hec_port: hec.port,
    };
    let mut res = Results::default();
    println!("bench: {} rounds of A..F (exec {} x, connect {} x, stream {} MiB)", plan.rounds, plan.exec_n, plan.connect_n, plan.stream_bytes >> 20);
    rounds(&ctx, plan, &mut res)?;
    res.sinks.push(format!(
        "rsyslogd wrote {} lines; the HEC receiver took {} requests ({} KiB, gzip)",
        rsyslog.lines(),
        hec.requests.load(Ordering::Relaxed),
        hec.bytes.load(Ordering::Relaxed) >> 10
    ));
    type Phase = fn(&Ctx, &Plan, &mut Results) -> anyhow::Result<()>;
    let phases: [(&str, Phase); 5] = [
        ("exec storm", phases::storm),
        ("policy scale", phases::scale),
        ("hold latency", phases::hold),
        ("live processes", phases::live),
        ("profiles (bpf_stats_enabled)", phases::profile),
    ];
    for (name, phase) in phases {
        let t = Instant::now();
        phase(&ctx, plan, &mut res).with_context(|| name.to_owned())?;
        println!("bench: {name}: {:.0} s", t.elapsed().as_secs_f64());
    }
    Ok((res, ctx))
}

/// What runs during one configuration of a round.
pub enum Env {
    Nothing,
    Agent { daemon: Daemon, inside: bool },
    Audit(others::Auditd),
    Trace(others::Bpftrace),
}

impl Env {
    pub fn up(ctx: &Ctx, cfg: Cfg) -> anyhow::Result<Self> {
        Ok(match cfg {
            Cfg::A => Env::Nothing,
            Cfg::B => Env::Agent { daemon: Daemon::start(ctx, "B", Sinks::File, None)?, inside: false },
            Cfg::C => Env::Agent { daemon: Daemon::start(ctx, "C", Sinks::File, None)?, inside: true },
            Cfg::D => Env::Agent { daemon: Daemon::start(ctx, "D", Sinks::All, None)?, inside: true },
            Cfg::E => Env::Audit(others::Auditd::start(&ctx.scratch)?),
            Cfg::F => Env::Trace(others::Bpftrace::start(&ctx.scratch, &ctx.tiny_true)?),
        })
    }

    pub fn place(&self) -> Place<'_> {
        match self {
            Env::Agent { daemon, inside: true } => Place::Agent(daemon),
            _ => Place::Host,
        }
    }

    pub fn observer_cpu(&self) -> f64 {
        match self {
            Env::Nothing => 0.0,
            Env::Agent { daemon, .. } => agent::cpu_secs(daemon.pid),
            Env::Audit(a) => a.cpu_secs(),
            Env::Trace(t) => agent::cpu_secs(t.pid),
        }
    }

    pub fn observer_hwm(&self) -> u64 {
        match self {
            Env::Nothing => 0,
            Env::Agent { daemon, .. } => agent::status_kib(daemon.pid, "VmHWM"),
            Env::Audit(a) => agent::status_kib(a.pid, "VmHWM"),
            Env::Trace(t) => agent::status_kib(t.pid, "VmHWM"),
        }
    }

    /// Lets the observer finish what the workload gave it (events in flight, sink batches)
    /// before its CPU time is read and the next workload starts.
    pub fn settle(&self) -> anyhow::Result<()> {
        match self {
            Env::Agent { daemon, .. } => daemon.settle(),
            _ => {
                std::thread::sleep(SETTLE);
                Ok(())
            }
        }
    }

    pub fn down(self) -> anyhow::Result<()> {
        match self {
            Env::Agent { daemon, .. } => daemon.stop(),
            other => {
                drop(other);
                Ok(())
            }
        }
    }
}

/// How long auditd and bpftrace get to write out what a workload gave them.
pub const SETTLE: Duration = Duration::from_millis(300);

fn rounds(ctx: &Ctx, plan: &Plan, res: &mut Results) -> anyhow::Result<()> {
    // Warm-up, discarded: page cache, the binaries, the loopback path. auditd is brought up
    // once here: once the kernel's audit has been enabled, every process forked afterwards
    // carries an audit context (until reboot), so round 1 would otherwise be the only one
    // whose A-D run without it.
    drop(Env::up(ctx, Cfg::E).context("bringing up auditd for the warm-up")?);
    for load in Load::ALL {
        agent::run_worker(ctx, Place::Host, &plan.job(ctx, load))?;
    }
    let (t0, cpu0, own0) = (Instant::now(), cpu_times(), own_cpu());
    for round in 1..=plan.rounds {
        let t = Instant::now();
        for cfg in Cfg::ALL {
            check_interrupt()?;
            let up = Instant::now();
            let env = Env::up(ctx, cfg).with_context(|| format!("bringing up {}", cfg.title()))?;
            let up = up.elapsed().as_secs_f64();
            if let Env::Audit(a) = &env {
                res.system_auditd |= a.is_system();
            }
            let mut shown = Vec::new();
            for load in Load::ALL {
                wait_quiet(plan, res)?;
                let cpu = env.observer_cpu();
                let r = agent::run_worker(ctx, env.place(), &plan.job(ctx, load)).with_context(|| format!("{load:?} in {}", cfg.title()))?;
                env.settle()?;
                res.observer_cpu.entry((cfg, load)).or_default().push(env.observer_cpu() - cpu);
                res.samples.entry((cfg, load)).or_default().push(r["ns"] / 1e9);
                if let Some(cpu) = r.get("cpu_ns") {
                    res.worker_cpu.entry((cfg, load)).or_default().push(cpu / 1e9);
                }
                shown.push(match load {
                    Load::Stream => format!("stream {:.0} MiB/s", (plan.stream_bytes >> 20) as f64 / (r["ns"] / 1e9)),
                    _ => format!("{load:?} {:.1} ms", r["ns"] / 1e6).to_lowercase(),
                });
            }
            println!("bench:   {}: {} (up in {up:.1} s)", cfg.letter(), shown.join(", "));
            let hwm = env.observer_hwm();
            let e = res.observer_hwm.entry(cfg).or_default();
            *e = (*e).max(hwm);
            if cfg == Cfg::D
                && round == plan.rounds
                && let Env::Agent { daemon, .. } = &env
            {
                let m = daemon.metrics()?;
                for (sink, sent) in m.by("guard_sink_sent_total", "sink") {
                    let failed = m.sum("guard_sink_failed_total", &[("sink", &sink)]);
                    let backlog = m.sum("guard_sink_backlog", &[("sink", &sink)]);
                    res.sinks.push(format!("last D round, sink {sink}: {sent} sent, {failed} failed, backlog {backlog} at the end of the round"));
                }
            }
            env.down()?;
        }
        println!("bench: round {round}/{} done in {:.0} s", plan.rounds, t.elapsed().as_secs_f64());
    }
    let (cpu1, own1) = (cpu_times(), own_cpu());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    res.load = (t0.elapsed().as_secs_f64() * cores, cpu1.0 - cpu0.0, own1 - own0, cpu1.1 - cpu0.1);
    Ok(())
}

/// Before a timed run: waits until the machine is quiet (its CPUs less than 15% busy over a
/// quarter of a second; another developer's build would otherwise land in one configuration's
/// numbers), for at most [`Plan::quiet_wait`] per run and over the whole bench.
pub fn wait_quiet(plan: &Plan, res: &mut Results) -> anyhow::Result<()> {
    let (per_run, total) = plan.quiet_wait;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let start = Instant::now();
    let window = Duration::from_millis(250);
    loop {
        check_interrupt()?;
        let before = cpu_times().0;
        std::thread::sleep(window);
        let busy = (cpu_times().0 - before) / (window.as_secs_f64() * cores);
        if busy < 0.15 {
            break;
        }
        if start.elapsed().as_secs_f64() > per_run || res.waited + start.elapsed().as_secs_f64() > total {
            res.busy_starts += 1;
            break;
        }
    }
    res.waited += start.elapsed().saturating_sub(window).as_secs_f64();
    Ok(())
}

/// (busy, steal) core-seconds of the whole machine since boot, from /proc/stat.
fn cpu_times() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let get = |i: usize| f.get(i).copied().unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ((get(0) + get(1) + get(2) + get(5) + get(6)) / hz, get(7) / hz)
}

/// CPU seconds of this process and of its children that have been waited for (every worker,
/// daemon, auditd, bpftrace the bench ran and reaped).
fn own_cpu() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let secs = |who| unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut u);
        let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
        t(u.ru_utime) + t(u.ru_stime)
    };
    secs(libc::RUSAGE_SELF) + secs(libc::RUSAGE_CHILDREN)
}
