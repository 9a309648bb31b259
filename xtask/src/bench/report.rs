//! The report: tables of medians and ratios, the targets with met/missed and, for each miss, the
//! reason the profiles give; the machine and the exact command. Printed and written as is.
use std::{fmt::Write as _, path::Path, process::Command, time::Duration};

use super::{Cfg, Load, Plan, Results, agent::Ctx, phases};

pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub ram_gib: f64,
    pub kernel: String,
    pub os: String,
    pub commit: String,
    pub tools: String,
    pub date: String,
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd).args(args).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
}

impl Machine {
    pub fn describe(root: &Path) -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_owned())).unwrap_or_else(|| "unknown".into());
        let mem_kib: f64 = read("/proc/meminfo").lines().find_map(|l| l.strip_prefix("MemTotal:")?.split_whitespace().next()?.parse().ok()).unwrap_or(0.0);
        let os = read("/etc/os-release").lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned())).unwrap_or_default();
        let root_s = root.display().to_string();
        // The report itself is rewritten by every run: it does not make the tree dirty.
        let dirty = !sh("git", &["-C", &root_s, "status", "--porcelain", "--untracked-files=no", "--", ".", ":!BENCHMARKS.md"]).is_empty();
        let version = |p: &str| sh("dpkg-query", &["-W", "-f=${Version}", p]);
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            ram_gib: mem_kib / 1024.0 / 1024.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            os,
            commit: format!("{}{}", sh("git", &["-C", &root_s, "rev-parse", "--short=12", "HEAD"]), if dirty { " (with uncommitted changes)" } else { "" }),
            tools: format!("auditd {}, bpftrace {}, rsyslog {}, perf {}", version("auditd"), version("bpftrace"), version("rsyslog"), sh("perf", &["--version"]).trim_start_matches("perf version ")),
            date: sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        }
    }
}

pub struct Input<'a> {
    pub plan: &'a Plan,
    pub res: &'a Results,
    pub machine: &'a Machine,
    pub command: &'a str,
    pub elapsed: Duration,
    pub leftovers: &'a Option<String>,
    pub ctx: &'a Ctx,
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 { s[m] } else { (s[m - 1] + s[m]) / 2.0 }
}

/// The interquartile range (first and third quartiles, interpolated).
pub fn quartiles(v: &[f64]) -> (f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let x = p * (s.len().max(1) - 1) as f64;
        let (i, f) = (x.floor() as usize, x.fract());
        s.get(i).map_or(f64::NAN, |a| a + (s.get(i + 1).unwrap_or(a) - a) * f)
    };
    (q(0.25), q(0.75))
}

/// Interquartile range over the median, in percent.
fn spread(v: &[f64]) -> f64 {
    let (q1, q3) = quartiles(v);
    (q3 - q1) / median(v) * 100.0
}

/// Per-round ratios against A (the same round, so the two ran minutes apart at most): time
/// ratios for the loops, throughput ratios for the stream.
fn round_ratios(res: &Results, cfg: Cfg, load: Load) -> Vec<f64> {
    let (a, c) = (&res.samples[&(Cfg::A, load)], &res.samples[&(cfg, load)]);
    a.iter().zip(c).map(|(a, c)| if load == Load::Stream { a / c } else { c / a }).collect()
}

/// What a program that runs for every process on the host (not only agent workloads) is.
fn host_wide(program: &str) -> Option<&'static str> {
    Some(match program {
        "guard_gate" => "guard_gate (raw_tracepoint/sys_enter: every system call)",
        "guard_ingress" => "guard_ingress (cgroup_skb at the cgroup root: every packet received)",
        "guard_egress" => "guard_egress (cgroup_skb at the cgroup root: every packet sent)",
        "guard_openat" => "guard_openat (every openat)",
        _ => return None,
    })
}

fn unit(load: Load) -> &'static str {
    match load {
        Load::Exec => "exec",
        Load::Connect => "connect",
        Load::Stream => "MiB",
    }
}

struct Report<'a> {
    i: &'a Input<'a>,
    out: String,
    /// (target, measured, met, why).
    targets: Vec<(String, String, bool, String)>,
}

pub fn render(i: &Input<'_>) -> String {
    let mut r = Report { i, out: String::new(), targets: Vec::new() };
    r.evaluate();
    r.write();
    r.out
}

impl Report<'_> {
    /// Time ratio against A for the loops; throughput ratio (A's time / this time) for the stream.
    fn ratio(&self, cfg: Cfg, load: Load) -> f64 {
        self_ratio(self.i.res, cfg, load)
    }

    fn n(&self, load: Load) -> u64 {
        match load {
            Load::Exec => self.i.plan.exec_n,
            Load::Connect => self.i.plan.connect_n,
            Load::Stream => self.i.plan.stream_bytes >> 20,
        }
    }

    /// (program, runs per op, ns per op) in a profile pass, largest first.
    fn per_op(&self, label: &str, load: Load) -> Vec<(String, f64, f64)> {
        let Some(p) = self.i.res.programs.get(&(label.to_owned(), load)) else { return Vec::new() };
        let mut v: Vec<(String, f64, f64)> = p.iter().map(|(name, (runs, ns))| (name.clone(), *runs, *ns)).collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v
    }

    fn kernel_ns(&self, label: &str, load: Load) -> f64 {
        self.per_op(label, load).iter().map(|x| x.2).sum()
    }

    fn loop_reason(&self, cfg: Cfg, load: Load) -> String {
        let unit = unit(load);
        let res = &self.i.res;
        let n = self.n(load) as f64;
        let (a, c) = (&res.samples[&(Cfg::A, load)], &res.samples[&(cfg, load)]);
        let extra_ns = (median(c) - median(a)) / n * 1e9;
        let progs = self.per_op(cfg.letter(), load);
        let kernel = self.kernel_ns(cfg.letter(), load);
        let top: Vec<String> = progs.iter().take(3).map(|(name, runs, ns)| format!("{name} {runs:.2} runs × {:.0} ns", ns / runs.max(1e-9))).collect();
        let mut parts = vec![format!("{extra_ns:.0} ns more per {unit} than A"), format!("guard's programs take {kernel:.0} ns per {unit} ({})", top.join(", "))];
        if let Some(r) = cpu_ratios(res, cfg, load) {
            let (q1, q3) = quartiles(&r);
            parts.push(format!("the workload's own CPU time (user + system, where guard's programs run) was {:.3} of A's [{q1:.3}–{q3:.3}]", median(&r)));
        }
        let host: Vec<String> = progs
            .iter()
            .filter_map(|(name, runs, ns)| Some((host_wide(name)?, runs, ns)))
            .filter(|(_, _, ns)| **ns >= 0.1 * kernel)
            .map(|(what, runs, ns)| format!("{ns:.0} ns in {what}, {runs:.1} runs per {unit}"))
            .collect();
        if !host.is_empty() {
            parts.push(format!("programs that run for every process on the host account for {}", host.join(", ")));
        }
        let paused = self.kernel_ns("C-paused", load);
        if matches!(cfg, Cfg::C | Cfg::D) && load != Load::Stream && paused > 0.0 && kernel > 1.5 * paused {
            let t = |label: &str| res.profile_ns.get(&(label.to_owned(), load)).copied().unwrap_or(f64::NAN) / 1e3;
            parts.push(format!(
                "with the daemon stopped (SIGSTOP, so nothing wakes it) the same programs take {paused:.0} ns per {unit}: {:.0} ns per {unit} goes to waking the daemon (irq_work: an interrupt, then a cross-CPU wake-up; in a VM both trap to the hypervisor), which routine records should not do (they are submitted with BPF_RB_NO_WAKEUP; urgent records and a buffer an eighth full still wake it); the profiled loop took {:.1} µs per {unit} with the daemon stopped, {:.1} µs with it running",
                kernel - paused,
                t("C-paused"),
                t("C")
            ));
        }
        if let Some(cpu) = res.observer_cpu.get(&(cfg, load)) {
            parts.push(format!("the daemon used {:.0} ns of CPU per {unit}, on a {}-core machine where it competes with the workload", median(cpu) / n * 1e9, self.i.machine.cores));
        }
        parts.join("; ")
    }

    fn evaluate(&mut self) {
        let res = self.i.res;
        let limits = [
            (Load::Exec, "exec loop time", [(Cfg::B, 1.005), (Cfg::C, 1.03), (Cfg::D, 1.05)]),
            (Load::Connect, "connect loop time", [(Cfg::B, 1.01), (Cfg::C, 1.02), (Cfg::D, 1.03)]),
            (Load::Stream, "stream throughput", [(Cfg::B, 0.99), (Cfg::C, 0.98), (Cfg::D, 0.97)]),
        ];
        for (load, what, cfgs) in limits {
            for (cfg, limit) in cfgs {
                let r = self.ratio(cfg, load);
                let (met, sign) = if load == Load::Stream { (r >= limit, "≥") } else { (r <= limit, "≤") };
                let (q1, q3) = quartiles(&round_ratios(res, cfg, load));
                let noisy = if load == Load::Stream { q3 >= limit } else { q1 <= limit };
                let why = match (met, noisy) {
                    (true, _) => String::new(),
                    (false, true) => format!(
                        "within the noise: a quarter of the rounds or more met it (per-round ratios {q1:.3}–{q3:.3}, interquartile). {}",
                        self.loop_reason(cfg, load)
                    ),
                    (false, false) => format!("in at least three rounds of four (per-round ratios {q1:.3}–{q3:.3}, interquartile). {}", self.loop_reason(cfg, load)),
                };
                self.targets.push((format!("{what} {}/A {sign} {limit}", cfg.letter()), format!("{r:.3}"), met, why));
            }
        }
        // The daemon's own CPU per operation: on a small machine it is CPU the workload cannot use.
        for (load, cfg, limit_us) in [(Load::Exec, Cfg::C, 8.0), (Load::Exec, Cfg::D, 15.0), (Load::Connect, Cfg::C, 5.0)] {
            let Some(cpu) = res.observer_cpu.get(&(cfg, load)) else { continue };
            let us = median(cpu) / self.n(load) as f64 * 1e6;
            let met = us <= limit_us;
            let why = if met { String::new() } else { self.daemon_reason(cfg, load) };
            self.targets.push((format!("daemon CPU per agent {} in {} ≤ {limit_us} µs", unit(load), cfg.letter()), format!("{us:.1} µs"), met, why));
        }
        for load in [Load::Exec, Load::Connect] {
            let e = self.ratio(Cfg::E, load);
            for cfg in [Cfg::C, Cfg::D] {
                let r = self.ratio(cfg, load);
                let why = if r < e { String::new() } else { format!("auditd cost {:.3}, guard {r:.3}. {}", e, self.loop_reason(cfg, load)) };
                self.targets.push((format!("{:?} loop: {} below E (auditd)", load, cfg.letter()), format!("{r:.3} vs {e:.3}"), r < e, why));
            }
        }
        if let Some(s) = &res.storm {
            for (cfg, steps) in &s.steps {
                let first = steps.iter().find(|st| st.all_drops > 0.0);
                let best = steps.iter().map(|st| st.reached).fold(0.0, f64::max);
                let (measured, met, why) = match first {
                    None => (format!("no drop up to {best:.0} execs/s (machine max {:.0}/s)", s.max_rate), true, String::new()),
                    Some(st) => (format!("first drop at {:.0} execs/s ({:.0}% of max {:.0}/s)", st.reached, st.reached / s.max_rate * 100.0, s.max_rate), false, self.storm_reason(st)),
                };
                self.targets.push((format!("exec storm {}: no ring-buffer drop below the machine's max exec rate", cfg.letter()), measured, met, why));
            }
        }
        if let Some(s) = &res.scale {
            for load in [Load::Exec, Load::Connect] {
                let (small, big) = (median(&s.samples[&(10, load)]), median(&s.samples[&(10_000, load)]));
                let r = big / small;
                let pairs: Vec<f64> = s.samples[&(10, load)].iter().zip(&s.samples[&(10_000, load)]).map(|(a, b)| b / a).collect();
                let (q1, q3) = quartiles(&pairs);
                const LIMIT: f64 = 1.03;
                let why = match (r <= LIMIT, q1 <= LIMIT) {
                    (true, _) => String::new(),
                    (false, true) => format!("within the noise: per-round ratios {q1:.3}–{q3:.3} (interquartile); {}", self.scale_reason(load)),
                    (false, false) => format!("per-round ratios {q1:.3}–{q3:.3} (interquartile); {}", self.scale_reason(load)),
                };
                self.targets.push((format!("policy scale, {load:?} loop: 10,000 entries / 10 ≤ {LIMIT}"), format!("{r:.3}"), r <= LIMIT, why));
            }
        }
        if let Some(l) = &res.live {
            let mib = l.hwm_kib as f64 / 1024.0;
            let met = mib < 64.0 && l.table >= l.n as f64;
            let why = if met {
                String::new()
            } else if l.table < l.n as f64 {
                format!("only {:.0} of {} processes reached the process table ({:.0} ring-buffer drops)", l.table, l.n, l.drops)
            } else {
                format!("{:.0} bytes per process-table entry above the idle RSS of {:.1} MiB", (l.hwm_kib - l.rss_before_kib) as f64 * 1024.0 / l.table.max(1.0), l.rss_before_kib as f64 / 1024.0)
            };
            self.targets.push((format!("daemon peak RSS with {} live processes < 64 MiB", l.n), format!("{mib:.1} MiB ({:.0} in the table)", l.table), met, why));
        }
    }

    /// Why the daemon spends what it does per operation: its profile (taken in C's exec loop).
    fn daemon_reason(&self, cfg: Cfg, load: Load) -> String {
        let profile = self.i.res.perf_top.get(&(cfg, load));
        let top: Vec<String> = profile.map_or(&[][..], |p| &p.symbols[..]).iter().take(4).map(|(pct, sym)| format!("{pct:.1}% {}", sym.rsplit(" [.] ").next().unwrap_or(sym))).collect();
        let threads: Vec<String> = profile.map_or(&[][..], |p| &p.threads[..]).iter().take(4).map(|(pct, t)| format!("{pct:.0}% {t}")).collect();
        let mut why = if top.is_empty() {
            "no daemon profile in this run".to_owned()
        } else {
            format!("the daemon's top symbols (perf, this loop): {}; by thread: {}", top.join(", "), threads.join(", "))
        };
        if cfg == Cfg::D && let Some(c) = self.i.res.observer_cpu.get(&(Cfg::C, load)) {
            let _ = write!(why, "; C, the same without the syslog and HEC sinks, used {:.1} µs", median(c) / self.n(load) as f64 * 1e6);
        }
        why
    }

    fn storm_reason(&self, st: &phases::StormStep) -> String {
        let (per_exec, _) = phases::record_bytes(self.i.ctx);
        let fits = phases::RING_BYTES / per_exec;
        format!(
            "each exec puts exec, fork and exit records ({per_exec} B with this argv) on the ring buffer, so the default 1024 KiB holds about {fits} execs; \
             at {:.0} execs/s the daemon used {:.0}% of a CPU and read {:.0} exec events per CPU-second: a burst it falls {fits} execs behind on (it shares {} cores with a workload that keeps all of them busy) fills the buffer; {:.0} exec and {:.0} records in all were dropped",
            st.reached,
            st.daemon_cpu * 100.0,
            st.events_per_cpu_sec,
            self.i.machine.cores,
            st.exec_drops,
            st.all_drops
        )
    }

    fn scale_reason(&self, load: Load) -> String {
        let (small, big) = (self.per_op("scale-10", load), self.per_op("scale-10000", load));
        let find = |v: &[(String, f64, f64)], p: &str| v.iter().find(|x| x.0 == p).map_or(0.0, |x| x.2);
        let lookup = if load == Load::Exec { "guard_exec" } else { "guard_connect4" };
        let total = |v: &[(String, f64, f64)]| v.iter().map(|x| x.2).sum::<f64>();
        let (l0, l1) = (find(&small, lookup), find(&big, lookup));
        format!(
            "the program that looks the rules up, {lookup}, took {l0:.0} ns per {u} with 10 entries and {l1:.0} ns with 10,000 (one profiled run each, wake-ups included); the other programs, which do not read the rules, went from {:.0} to {:.0} ns per {u}",
            total(&small) - l0,
            total(&big) - l1,
            u = unit(load)
        )
    }

    fn write(&mut self) {
        let i = self.i;
        let (res, plan, m) = (i.res, i.plan, i.machine);
        let o = &mut self.out;
        let _ = writeln!(o, "# guard benchmarks\n");
        let _ = writeln!(o, "Written by `{}` on {} ({} mode, {:.1} min). Do not edit by hand: run the command again.\n", i.command, m.date, if plan.quick { "quick" } else { "full" }, i.elapsed.as_secs_f64() / 60.0);
        let _ = writeln!(o, "Machine: {} ({} cores), {:.1} GiB RAM, kernel {}, {}; guard {}; {}.\n", m.cpu, m.cores, m.ram_gib, m.kernel, m.os, m.commit, m.tools);
        let _ = writeln!(o, "Configurations, interleaved round by round (A B C D E F, A B C D E F, ...; {} rounds after a warm-up):\n", plan.rounds);
        for cfg in Cfg::ALL {
            let _ = writeln!(o, "- {}", cfg.title());
        }
        let loads = [
            (Load::Exec, format!("exec loop: {} × fork+exec+wait of a {}-byte static binary, ms", plan.exec_n, std::fs::metadata(&i.ctx.tiny_true).map_or(0, |m| m.len()))),
            (Load::Connect, format!("connect loop: {} × TCP connect+accept+close on loopback, ms", plan.connect_n)),
            (Load::Stream, format!("stream: {} MiB over one loopback TCP connection, MiB/s", plan.stream_bytes >> 20)),
        ];
        let header = |o: &mut String, first: &str| {
            let _ = writeln!(o, "\n| {first} | {} |\n|---|{}", Cfg::ALL.map(Cfg::letter).join(" | "), "---|".repeat(6));
        };
        let _ = writeln!(o, "\n## Results\n\nMedians over the rounds, ± half the interquartile range:");
        header(o, "workload");
        for (load, name) in &loads {
            let cells: Vec<String> = Cfg::ALL
                .iter()
                .map(|c| {
                    let v = &res.samples[&(*c, *load)];
                    let shown = if *load == Load::Stream { (plan.stream_bytes >> 20) as f64 / median(v) } else { median(v) * 1e3 };
                    format!("{shown:.1} ±{:.1}%", spread(v) / 2.0)
                })
                .collect();
            let _ = writeln!(o, "| {name} | {} |", cells.join(" | "));
        }
        let _ = writeln!(o, "\nRatios against A (median over median; time for the loops, throughput for the stream), and in brackets the interquartile range of the per-round ratios (each configuration against A of the same round):");
        header(o, "workload");
        for (load, name) in &loads {
            let cells: Vec<String> = Cfg::ALL
                .iter()
                .map(|c| {
                    let (q1, q3) = quartiles(&round_ratios(res, *c, *load));
                    if *c == Cfg::A { "1.000".into() } else { format!("{:.3} [{q1:.3}–{q3:.3}]", self_ratio(res, *c, *load)) }
                })
                .collect();
            let _ = writeln!(o, "| {} | {} |", name.split(':').next().unwrap_or_default(), cells.join(" | "));
        }
        if Cfg::ALL.iter().all(|c| res.worker_cpu.contains_key(&(*c, Load::Exec))) {
            let _ = writeln!(
                o,
                "\nThe workload's own CPU time (user + system of the worker's threads and the children it waited for), against A's in the same round, median and [interquartile range]: guard's programs run in the workload's context and are charged to it; the daemon, the other observers and the rest of the machine are not, so this is less noisy than the wall time above and shows what the programs cost the workload itself:"
            );
            header(o, "workload");
            for (load, name) in &loads {
                let cells: Vec<String> = Cfg::ALL
                    .iter()
                    .map(|c| match cpu_ratios(res, *c, *load) {
                        _ if *c == Cfg::A => "1.000".into(),
                        Some(r) => {
                            let (q1, q3) = quartiles(&r);
                            format!("{:.3} [{q1:.3}–{q3:.3}]", median(&r))
                        }
                        None => "–".into(),
                    })
                    .collect();
                let _ = writeln!(o, "| {} | {} |", name.split(':').next().unwrap_or_default(), cells.join(" | "));
            }
        }
        let _ = writeln!(o, "\nThe observer (B–D: the guard daemon; E: auditd + the kernel's kauditd thread; F: bpftrace): CPU time per run (median) and peak RSS (VmHWM, largest over the rounds):");
        header(o, "observer");
        for (load, name) in &loads {
            let cells: Vec<String> = Cfg::ALL.iter().map(|c| if *c == Cfg::A { "–".into() } else { format!("{:.1} ms", median(&res.observer_cpu[&(*c, *load)]) * 1e3) }).collect();
            let _ = writeln!(o, "| CPU, {} | {} |", name.split(':').next().unwrap_or_default(), cells.join(" | "));
        }
        let cells: Vec<String> = Cfg::ALL.iter().map(|c| if *c == Cfg::A { "–".into() } else { format!("{:.1} MiB", res.observer_hwm.get(c).copied().unwrap_or(0) as f64 / 1024.0) }).collect();
        let _ = writeln!(o, "| peak RSS | {} |", cells.join(" | "));

        let (capacity, busy, own, steal) = res.load;
        if capacity > 0.0 {
            let _ = writeln!(
                o,
                "\nLoad during the rounds: the CPUs were busy {:.0}% of the time; the bench's own processes (workers, daemons, auditd, bpftrace) account for {:.0}%, the rest of the machine {:.0}% (other processes, and kernel threads and interrupts working for the bench); steal {:.1}%. Before each timed run the bench waits for the machine to be quiet (under 15% busy): it waited {:.0} s in all, and {} run(s) started with the machine still busy (after {:.0} s, or with the bench's {:.0} s of waiting used up).",
                busy / capacity * 100.0,
                own / capacity * 100.0,
                (busy - own).max(0.0) / capacity * 100.0,
                steal / capacity * 100.0,
                res.waited,
                res.busy_starts,
                plan.quiet_wait.0,
                plan.quiet_wait.1
            );
        }
        let met = self.targets.iter().filter(|t| t.2).count();
        let _ = writeln!(o, "\n## Targets: {met} of {} met\n\n| target | measured | | why (for a miss, from the profiles below) |\n|---|---|---|---|", self.targets.len());
        for (t, measured, ok, why) in &self.targets {
            let _ = writeln!(o, "| {t} | {measured} | {} | {why} |", if *ok { "met" } else { "**missed**" });
        }
        self.findings();
        self.details();
    }

    /// What the profiles point at in guard itself, said only when this run's numbers show it.
    fn findings(&mut self) {
        let res = self.i.res;
        let mut f = Vec::new();
        let (c, paused) = (self.kernel_ns("C", Load::Exec), self.kernel_ns("C-paused", Load::Exec));
        if paused > 0.0 && c > 2.0 * paused {
            let (cc, pc) = (self.kernel_ns("C", Load::Connect), self.kernel_ns("C-paused", Load::Connect));
            f.push(format!(
                "**Ring-buffer wake-ups dominate the in-kernel cost for agent workloads.** guard's programs take {c:.0} ns per exec in C but {paused:.0} ns when the daemon is not waiting ({cc:.0} vs {pc:.0} ns per connect). \
                 A wake-up costs the producing CPU an interrupt (irq_work) whose handler wakes the daemon's thread on the other CPU; in a VM both trap to the hypervisor. \
                 Routine records (allowed exec, fork, exit, allowed connect) are submitted with `BPF_RB_NO_WAKEUP` and read on the daemon's 50 ms timer; urgent ones (denials, kills, holds, DNS, budgets, cgroups) and a buffer an eighth full force a wake-up. If this finding shows, something in the workload produces urgent records, or the buffer fills faster than the daemon reads it."
            ));
        }
        let host = |load| -> (f64, f64, Vec<String>) {
            let all = self.per_op("B", load);
            let total: f64 = all.iter().map(|p| p.2).sum();
            let mut host: Vec<(String, f64, f64)> = all.into_iter().filter(|p| host_wide(&p.0).is_some() && p.1 >= 0.05).collect();
            host.sort_by(|a, b| b.2.total_cmp(&a.2));
            let sum = host.iter().map(|p| p.2).sum();
            (total, sum, host.iter().map(|(n, runs, ns)| format!("{n} {runs:.1} × {:.0} ns", ns / runs.max(1e-9))).collect())
        };
        let (connect_total, connect_host, connect_list) = host(Load::Connect);
        let (_, stream_host, stream_list) = host(Load::Stream);
        if connect_total > 0.0 && connect_host >= 0.5 * connect_total {
            f.push(format!(
                "**Processes outside agent workloads pay for programs that run host-wide.** In B (nothing to enforce) guard's programs take {connect_total:.0} ns per connect iteration, {connect_host:.0} ns of it in programs that run for every process: {} per connect; and {stream_host:.0} ns per MiB streamed ({}). \
                 guard_gate runs on every system call (sys_enter) and stops at one counter read while nothing is held; the cgroup_skb programs run on every packet and return after one socket-storage read (`SOCK_OWNER`, BPF socket-local storage) for sockets no agent connected, before parsing anything; connect4 and the socket hooks walk the caller's cgroups. \
                 They are attached at the cgroup root on purpose: a tagged process that leaves its agent's cgroups stays enforced, and the sockets it makes after the move (charged to the cgroup it moved to) stay budgeted, which programs attached to the agent cgroups only would miss. \
                 What remains per run is mostly the cost of running a program at all (with `kernel.bpf_stats_enabled` each run also pays two clock reads): the gate's share would go only by not attaching it while no policy can hold.",
                connect_list.join(", "),
                stream_list.join(", ")
            ));
        }
        if let Some(cpu) = res.observer_cpu.get(&(Cfg::C, Load::Exec)) {
            let per = median(cpu) / self.i.plan.exec_n as f64 * 1e6;
            let symbols = res.perf_top.get(&(Cfg::C, Load::Exec)).map_or(&[][..], |p| &p.symbols[..]);
            let share = |pat: &[&str]| symbols.iter().filter(|(_, s)| pat.iter().any(|p| s.contains(p))).map(|(p, _)| p).sum::<f64>();
            let groups = [
                ("the kernel's context switches", share(&["finish_task_switch", "__schedule", "schedule"])),
                ("the allocator (malloc, free and their consolidation: per-event allocations)", share(&["malloc", "_int_free", "cfree", "unlink_chunk", "realloc", "__libc_free"])),
                ("building JSON trees (BTreeMap nodes)", share(&["btree"])),
                ("regex searches (masking secrets in every string of every verdict)", share(&["regex"])),
                ("copying (memmove/memcpy)", share(&["memmove", "memcpy"])),
                ("formatting (core::fmt)", share(&["core::fmt"])),
            ];
            let parts: Vec<String> = groups.iter().filter(|(_, p)| *p >= 1.0).map(|(what, p)| format!("{p:.0}% {what}")).collect();
            f.push(format!(
                "**The daemon's CPU per agent exec.** In C the daemon spends {per:.1} µs of CPU per exec (exec, fork and exit records, one verdict); on {} cores that is CPU the workload cannot use. {}",
                self.i.machine.cores,
                if parts.is_empty() {
                    String::new()
                } else {
                    format!("Its perf profile during C's exec loop: {}. Reads are batched (a timer, not a wake-up per record).", parts.join(", "))
                }
            ));
        }
        if !f.is_empty() {
            let o = &mut self.out;
            let _ = writeln!(o, "\n## Findings\n");
            for x in f {
                let _ = writeln!(o, "- {x}");
            }
        }
    }

    fn details(&mut self) {
        let i = self.i;
        let (res, plan) = (i.res, i.plan);
        let o = &mut self.out;
        let mut storm_note = String::new();
        if let Some(s) = &res.storm {
            let _ = writeln!(o, "\n## Exec storm\n\nThe tiny binary exec'd from {} threads, {} s per step, each step a higher rate (a fraction of the machine's maximum, {:.0} execs/s with no agent; the last step unpaced), until the first ring-buffer drop:\n", std::thread::available_parallelism().map_or(2, |n| n.get()), plan.storm_secs, s.max_rate);
            let _ = writeln!(o, "| config | asked, execs/s | reached, execs/s | exec drops | all drops | daemon CPU | exec events read per daemon CPU-second |\n|---|---|---|---|---|---|---|");
            let best: Vec<String> = s.steps.iter().map(|(c, st)| format!("{} {:.0}/s", c.letter(), st.iter().map(|x| x.reached).fold(0.0, f64::max))).collect();
            // Said only when it is so: no step of any configuration dropped a record.
            if s.steps.iter().all(|(_, st)| st.iter().all(|x| x.all_drops == 0.0)) {
                storm_note = format!(
                    "\nWith guard the workload reached at most {} ({:.0} execs/s without an agent), with no record dropped: the exec rate is capped by what each exec costs the workload with guard (see the exec loop), not by the ring buffer.\n",
                    best.join(", "),
                    s.max_rate
                );
            }
            for (cfg, steps) in &s.steps {
                for st in steps {
                    let asked = if st.asked > 0.0 { format!("{:.0}", st.asked) } else { "unpaced".into() };
                    let _ = writeln!(o, "| {} | {asked} | {:.0} | {:.0} | {:.0} | {:.0}% | {:.0} |", cfg.letter(), st.reached, st.exec_drops, st.all_drops, st.daemon_cpu * 100.0, st.events_per_cpu_sec);
                }
            }
        }
        let _ = write!(o, "{storm_note}");
        if let Some(s) = &res.scale {
            let _ = writeln!(o, "\n## Policy scale\n\nAgent `bench` with N exec-deny rules (path, path_prefix, basename, basename_prefix in turn) and N deny prefixes (/16 to /32, two fifths of them inside 127.0.0.0/8 beside the address connected to); workloads in its cgroup; {} rounds, interleaved; medians, ms:\n", plan.scale_rounds);
            let _ = writeln!(o, "| workload | 10 entries | 10,000 entries | ratio | per-round ratios (interquartile) |\n|---|---|---|---|---|");
            for load in [Load::Exec, Load::Connect] {
                let (a, b) = (median(&s.samples[&(10, load)]), median(&s.samples[&(10_000, load)]));
                let pairs: Vec<f64> = s.samples[&(10, load)].iter().zip(&s.samples[&(10_000, load)]).map(|(a, b)| b / a).collect();
                let (q1, q3) = quartiles(&pairs);
                let _ = writeln!(o, "| {load:?} loop | {:.1} | {:.1} | {:.3} | {q1:.3}–{q3:.3} |", a * 1e3, b * 1e3, b / a);
            }
        }
        if let Some(h) = &res.hold {
            let us = |v: f64| v / 1e3;
            let _ = writeln!(o, "\n## Hold decision latency\n\nIn C's setting (default policy), the tiny binary named `rm` with a harmless argv: stopped at exec, judged by the daemon from its argv, released. {} execs of it alternating with the same binary under another name (not held); exec-to-exit from the workload's side, µs:\n", h.n);
            let _ = writeln!(o, "| exec | p50 | p99 | max |\n|---|---|---|---|");
            let _ = writeln!(o, "| held, decided by the daemon | {:.0} | {:.0} | {:.0} |", us(h.held[0]), us(h.held[1]), us(h.held[2]));
            let _ = writeln!(o, "| not held | {:.0} | {:.0} | {:.0} |", us(h.plain[0]), us(h.plain[1]), us(h.plain[2]));
            let _ = writeln!(o, "| held − not held (the hold) | {:.0} | {:.0} | |", us(h.held[0] - h.plain[0]), us(h.held[1] - h.plain[1]));
            let top = h.buckets.iter().map(|b| b.0).filter(|b| b.is_finite()).fold(0.0, f64::max);
            let quant = |q: f64| {
                if h.count == 0.0 {
                    return "?".to_owned();
                }
                h.buckets.iter().find(|(_, c)| *c >= q * h.count).map_or("?".into(), |(b, _)| if b.is_infinite() { format!("> {top} s") } else { format!("≤ {:.1} ms", b * 1e3) })
            };
            let _ = writeln!(o, "\nThe daemon's own histogram (`guard_hold_decision_seconds{{decision=\"policy\"}}`, exec to release): {:.0} holds, mean {:.0} µs, p50 {}, p99 {} (bucket bounds).", h.count, h.mean * 1e6, quant(0.5), quant(0.99));
            if h.count < h.n as f64 {
                let _ = writeln!(o, "\n**Only {:.0} of the {} execs were held**: the rows above do not measure a hold (has the default policy's argv rule for `rm` changed?).", h.count, h.n);
            }
        }
        if let Some(l) = &res.live {
            let _ = writeln!(
                o,
                "\n## Live processes\n\n{} processes sleeping in an agent cgroup (started at 4,000/s, then killed, exactly those): the daemon's process table held {:.0} entries ({:.0} ring-buffer drops); its RSS was {:.1} MiB idle and {:.1} MiB with the processes live; its peak since start (VmHWM, which includes loading the programs) {:.1} MiB.",
                l.n,
                l.table,
                l.drops,
                l.rss_before_kib as f64 / 1024.0,
                l.rss_kib as f64 / 1024.0,
                l.hwm_kib as f64 / 1024.0
            );
        }
        if !res.programs.is_empty() {
            let _ = writeln!(o, "\n## Where the time goes: eBPF programs\n\nOne run of each workload per setting with `kernel.bpf_stats_enabled=1` (set for this pass only, then restored; the timed rounds run without it, and the statistics add a clock read to each run). Runs and run time per operation (per exec, per connect, per MiB streamed) from each program's `run_cnt`/`run_time_ns` (guard: its `/metrics`; bpftrace: `/proc/PID/fdinfo`). `C-paused` is C with the daemon stopped (SIGSTOP) during the timed loop, sized to fit the ring buffer: no record wakes the daemon, and it takes no CPU.\n");
            let _ = writeln!(o, "| setting | workload | loop, µs per op | program | runs per op | ns per run | ns per op |\n|---|---|---|---|---|---|---|");
            let r = Report { i, out: String::new(), targets: Vec::new() };
            for (label, load) in res.programs.keys() {
                let t = res.profile_ns.get(&(label.clone(), *load)).map_or(String::new(), |ns| format!("{:.2}", ns / 1e3));
                for (k, (name, runs, ns)) in r.per_op(label, *load).into_iter().filter(|p| p.2 >= 1.0).enumerate() {
                    let (l, w, t) = if k == 0 { (label.as_str(), format!("{load:?}"), t.as_str()) } else { ("", String::new(), "") };
                    let _ = writeln!(o, "| {l} | {w} | {t} | {name} | {runs:.2} | {:.0} | {ns:.0} |", ns / runs.max(1e-9));
                }
            }
        }
        if !res.perf_top.is_empty() {
            let _ = writeln!(o, "\n## Where the time goes: the daemon\n\n`perf record -F 1999 -p DAEMON` during one profiled loop (the pass above): its threads' shares of the samples (the event loop is `guard-agent`, tokio's workers `tokio-runtime-w`, network sinks' threads `sink-NAME`), then the twelve symbols with the most samples.");
            for ((cfg, load), p) in &res.perf_top {
                let threads: Vec<String> = p.threads.iter().take(6).map(|(pct, t)| format!("{pct:.1}% `{t}`")).collect();
                let _ = writeln!(o, "\n{} {:?} loop, by thread: {}.\n\n| % | object and symbol |\n|---|---|", cfg.letter(), load, threads.join(", "));
                for (pct, sym) in p.symbols.iter().take(12) {
                    let _ = writeln!(o, "| {pct:.1} | `{sym}` |");
                }
            }
        }
        let _ = writeln!(o, "\n## Sinks in D\n");
        for s in &res.sinks {
            let _ = writeln!(o, "- {s}");
        }
        let _ = writeln!(
            o,
            "\n## Method\n\n- Each workload is this repository's xtask binary re-run as a worker (`xtask bench worker ...`), started directly (A, B, E, F) or by `guard-agent launch --agent bench` (C, D); it warms up (n/20 untimed iterations) and times itself, so start-up is outside the measurement.\n\
             - The daemon is the release build, started per configuration per round with `--detach-on-exit`, its own sockets and state, metrics on loopback, verdicts to a file (D: also RFC 5424 over TCP to a local rsyslogd and Splunk HEC to a local HTTP receiver).\n\
             - E: auditd with `-a always,exit -F arch=b64 -S execve,execveat` and `-S connect`, {}; F: `bpftrace -B none -e '{}' > FILE` (unbuffered, a line per exec as on a terminal).\n\
             - auditd is also started and stopped once before the warm-up: once the kernel's audit has been enabled, every process forked afterwards carries an audit context until reboot, so every round (not only the first) runs with that.\n\
             - Afterwards the rules are removed, auditd, bpftrace, rsyslogd and the daemons stopped, `kernel.bpf_stats_enabled` and the kernel's audit `enabled` flag restored. Cleanup check: {}.",
            if res.system_auditd { "the machine's own auditd (already running), with its configuration and log" } else { "Debian's auditd started by the bench, logging to a scratch file" },
            super::others::BPFTRACE_PROGRAM.replace('|', "\\|"),
            i.leftovers.as_deref().unwrap_or("nothing left")
        );
    }
}

/// Per-round ratios of the workload's own CPU time against A's (CPU per byte for the stream
/// too: more is worse in every row), if the workers reported it.
fn cpu_ratios(res: &Results, cfg: Cfg, load: Load) -> Option<Vec<f64>> {
    let (a, c) = (res.worker_cpu.get(&(Cfg::A, load))?, res.worker_cpu.get(&(cfg, load))?);
    (a.len() == c.len() && !a.is_empty()).then(|| a.iter().zip(c).map(|(a, c)| c / a).collect())
}

fn self_ratio(res: &Results, cfg: Cfg, load: Load) -> f64 {
    let med = |c: Cfg| median(&res.samples[&(c, load)]);
    match load {
        Load::Stream => med(Cfg::A) / med(cfg),
        _ => med(cfg) / med(Cfg::A),
    }
}
