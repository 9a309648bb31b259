//! The daemon: load and attach, then one event loop that owns all state — ring-buffer events,
//! control-socket requests, hold timeouts, policy reloads (SIGHUP or a changed policy file) —
//! until SIGINT or SIGTERM. Kernel-decided enforcement never waits for this loop; holds and
//! argv rules do, which is why it never blocks on anything but its own work.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use guard_common::{CGROUP_OP_MKDIR, Decision};
use serde_json::json;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind, sync::mpsc};

mod containers;
mod deletions;
mod exfil;
mod files;
#[cfg(test)]
pub(crate) use files::files_path_text;
mod hold;
mod lost;
mod metrics;
mod output;
mod reader;
mod requests;
mod sql;
mod status;

#[cfg(test)]
pub(crate) use output::samples;

use crate::{
    cgroup,
    config::Settings,
    control::{self, ControlMsg},
    correlate::{Correlator, nul_terminated},
    events::Event,
    holds::Holds,
    loader::{self, Loaded},
    lock,
    metrics::Histogram,
    notify::Notifier,
    paths,
    policy::{self, Policy},
    seq::Sequence,
    sessions::{self, Sessions},
    sinks::{self, Feed, Sinks},
    verdict::{Subject, Verdict},
};

/// Batches of events (up to `reader::BATCH` each) buffered between the ring-buffer reader and
/// the event loop. When full, the reader waits, and the kernel's ring buffer (which counts its
/// drops) absorbs the burst.
const CHANNEL_DEPTH: usize = 16;
/// How often hold deadlines and ended sessions are checked.
const TICK: Duration = Duration::from_millis(100);
/// How often the policy file is checked for changes (in ticks).
const POLICY_POLL_TICKS: u32 = 10;

pub async fn run(model: Policy, args: &Settings) -> anyhow::Result<()> {
    let notifier = Notifier::from_env();
    let _lock = lock::acquire()?;
    // Settings first: one that cannot work (a verdict file that cannot be opened, an unknown
    // launch group, a metrics address in use) stops the start before anything loads.
    let sinks = Sinks::open(&args.sinks, args.state_dir.as_deref()).context("opening the verdict sinks").map_err(BadSettings)?;
    let seq = Sequence::open(args.state_dir.as_deref()).map_err(BadSettings)?;
    let masker = crate::mask::Masker::new(&args.mask_patterns).map_err(|e| BadSettings(anyhow::anyhow!("mask.patterns: {e}")))?;
    let audit = match &args.audit_log {
        Some(a) => Some(output::open_audit_log(a).map_err(BadSettings)?),
        None => None,
    };
    let launch_gid = match &args.launch_group {
        Some(g) => Some(group_id(g).with_context(|| format!("launch group {g}")).map_err(BadSettings)?),
        None => None,
    };
    let metrics = match args.metrics {
        Some(addr) => Some(crate::metrics::bind(addr).await.with_context(|| format!("binding the metrics address {addr}")).map_err(BadSettings)?),
        None => None,
    };
    crate::container::set_roots(args.containers.clone());
    let cgroup_root = paths::cgroup2_root()?;
    let (mut loaded, compiled) = loader::load(&cgroup_root, &args.load_options(), &model).context("starting enforcement")?;
    for w in &compiled.warnings {
        tracing::warn!("{w}");
    }
    // Said now; their verdicts follow once the correlator can name their agents (below).
    let leftovers = std::mem::take(&mut loaded.leftovers);
    for l in &leftovers {
        tracing::warn!(pid = l.pid, "killed a process held by a previous daemon that never decided it (fail closed)");
    }
    let lost = lost::LostEvents::new(std::mem::take(&mut loaded.replaced_drops));
    let ring = loaded.events()?;
    // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged, for as long as the
    // AsyncFd owns the ring buffer.
    let ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| e.into_parts().1)
        .context("polling the event ring buffer")?;

    let admin = control::bind(&args.admin_socket, 0o600, None).with_context(|| format!("binding {}", args.admin_socket.display()))?;
    let launch = control::bind(&args.launch_socket, if launch_gid.is_some() { 0o660 } else { 0o600 }, launch_gid)
        .with_context(|| format!("binding {}", args.launch_socket.display()))?;
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<ControlMsg>(256);
    let tail = sinks::feed();
    let admin_task = tokio::spawn(control::serve(admin, control::Kind::Admin, ctl_tx.clone(), tail.clone()));
    let launch_task = tokio::spawn(control::serve(launch, control::Kind::Launch, ctl_tx.clone(), tail.clone()));
    let metrics_task = metrics.map(|l| tokio::spawn(crate::metrics::serve(l, ctl_tx)));

    // Signal handlers before READY: a SIGHUP (`systemctl reload`) or SIGTERM right after it
    // must be handled, not kill the daemon with the default action.
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sighup = tokio::signal::unix::signal(SignalKind::hangup())?;
    let compiled = Arc::new(compiled);
    let correlator = Correlator::new(Arc::clone(&compiled), cgroup_root.clone(), &loaded.registrations);
    tracing::info!(
        tier = loaded.tier.name(),
        tier_reason = %loaded.probe.reason,
        pinned = %loaded.generation.dir.display(),
        adopted = loaded.adopted,
        replaced_generations = loaded.replaced,
        programs = ?loader::programs(loaded.tier),
        cgroups = ?loaded.registrations.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        policy = %compiled.source,
        policy_hash = %compiled.hash,
        admin_socket = %args.admin_socket.display(),
        launch_socket = %args.launch_socket.display(),
        metrics = ?args.metrics,
        sinks = ?args.sinks.iter().map(|s| s.name()).collect::<Vec<_>>(),
        systemd_notify = notifier.enabled(),
        watchdog = ?notifier.watchdog_interval(),
        "ready: enforcing"
    );
    notifier.ready(&ready_status(&compiled.hash));

    let (tx, mut rx) = mpsc::channel::<reader::Batch>(CHANNEL_DEPTH);
    // Records that were not events (never expected from our own programs): counted, reported.
    let undecodable = Arc::new(AtomicU64::new(0));
    let reader = reader::spawn(ring, tx, Arc::clone(&undecodable));

    let mut engine = Engine {
        fingerprint: args.policy.as_deref().map(fingerprint),
        changing: None,
        policy_is_dir: args.policy.as_deref().is_some_and(Path::is_dir),
        policy_path: args.policy.clone(),
        loaded,
        root: cgroup_root.clone(),
        correlator,
        sessions: Sessions::new(cgroup_root.clone()),
        holds: Holds::default(),
        sql_waits: Vec::new(),
        sinks,
        tail,
        notifier,
        settings: args.clone(),
        seq,
        masker,
        audit,
        flushed: Instant::now(),
        counters: Counters { undecodable, ..Counters::default() },
        exfil: exfil::ExfilState::default(),
        lost,
        delete_counters: deletions::DeleteCounters::default(),
        containers: crate::container::Cache::default(),
        pending_containers: Vec::new(),
    };
    engine.killed_leftovers(leftovers);
    // Drops made while no daemon was reading.
    engine.check_lost(false);
    engine.flush_now();
    let mut tick = tokio::time::interval(TICK);
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            Some(batch) = rx.recv() => {
                engine.events(batch);
                // Drain what is already there before flushing: one write per burst.
                for _ in 0..15 {
                    match rx.try_recv() {
                        Ok(batch) => engine.events(batch),
                        Err(_) => break,
                    }
                }
            }
            Some(msg) = ctl_rx.recv() => engine.control(msg),
            _ = tick.tick() => {
                ticks = ticks.wrapping_add(1);
                engine.notifier.tick();
                engine.tick(ticks % POLICY_POLL_TICKS == 0);
            }
            _ = sighup.recv() => engine.reload("SIGHUP"),
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); break; }
        }
        engine.flush();
    }
    engine.notifier.stopping();
    // What the programs queued before the stop is read and reported, not left behind.
    reader.stop(Duration::from_secs(1)).await;
    while let Ok(batch) = rx.try_recv() {
        engine.events(batch);
    }
    admin_task.abort();
    launch_task.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    for path in [&args.admin_socket, &args.launch_socket] {
        let _ = std::fs::remove_file(path);
    }
    // Nobody will decide these holds: kill them now rather than leave them stopped.
    engine.end_sql_waits();
    let pending: Vec<u64> = engine.holds.iter().map(|p| p.id).collect();
    for id in pending {
        if let Some(p) = engine.holds.take(id) {
            engine.finish_hold(p, Outcome::Kill, json!({ "decision": "daemon-stopped" }), Some("the daemon stopped before anyone decided".into()));
        }
    }
    // Drops not reported yet (also those of the last moments).
    engine.check_lost(true);
    engine.flush_now();
    engine.seal_audit_log();
    // Network sinks get a few seconds to deliver their backlog; the rest stays spooled.
    engine.sinks.shutdown(Duration::from_secs(3));
    let drops = engine.loaded.drops()?;
    let undecodable = engine.counters.undecodable.load(Ordering::Relaxed);
    let process_table = engine.correlator.process_table_len();
    let write_errors: Vec<(String, u64)> = engine.sinks.list.iter().map(|s| (s.name.clone(), s.failed)).collect();
    if args.detach_on_exit {
        tracing::info!(?drops, undecodable, sink_failures = ?write_errors, process_table, "stopped; detaching programs");
        engine.sessions.drain(Duration::from_secs(5));
        engine.loaded.detach(&args.pin_dir, &cgroup_root)?;
    } else {
        tracing::info!(
            ?drops,
            undecodable,
            sink_failures = ?write_errors,
            process_table,
            pinned = %engine.loaded.generation.dir.display(),
            "stopped; enforcement stays attached (`guard-agent detach` removes it)"
        );
    }
    Ok(())
}

/// A setting that cannot work (a verdict file that cannot be opened, a metrics address that
/// cannot be bound, an unknown launch group): exit status 2, like a bad policy, so a service
/// manager does not restart into the same error.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct BadSettings(anyhow::Error);

/// What the daemon does with a held process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Release,
    Kill,
}

struct Engine {
    loaded: Loaded,
    root: PathBuf,
    policy_path: Option<PathBuf>,
    /// The policy path was a directory at start: a reload insists it still is (and a file
    /// that it is still a file).
    policy_is_dir: bool,
    /// What the policy file(s) looked like at the last (re)load.
    fingerprint: Option<Vec<(PathBuf, u64, i128)>>,
    /// A change seen at the last poll: reloaded once it holds still for one more poll, so a
    /// file caught half-written is not compiled.
    changing: Option<Vec<(PathBuf, u64, i128)>>,
    correlator: Correlator,
    sessions: Sessions,
    holds: Holds,
    /// Held database clients waiting for the writers of their stdin (see sql.rs).
    sql_waits: Vec<sql::SqlWait>,
    sinks: Sinks,
    /// The live feed `guard-agent tail` reads.
    tail: Feed,
    notifier: Notifier,
    settings: Settings,
    /// `metadata.sequence` of the next verdict.
    seq: Sequence,
    /// Secrets are masked before any sink (or the audit log) sees a verdict.
    masker: crate::mask::Masker,
    /// The tamper-evident local log, when configured, written by a thread of its own.
    audit: Option<crate::audit::Queued>,
    /// When the loop last handed verdicts on (see `Engine::flush`).
    flushed: Instant,
    counters: Counters,
    /// Sensitive-read taints, learned DNS addresses, tunnel detection.
    exfil: exfil::ExfilState,
    /// Ring-buffer drops reported as "events lost" verdicts.
    lost: lost::LostEvents,
    /// Deletion budgets exceeded.
    delete_counters: deletions::DeleteCounters,
    /// The container identities verdicts carry.
    containers: crate::container::Cache,
    /// New container cgroups whose runtime data was not on disk yet: tried again each tick
    /// until a deadline (cgroup id, path).
    pending_containers: Vec<(u64, String, Instant)>,
}

/// What `status` and `/metrics` count.
#[derive(Default)]
struct Counters {
    events: BTreeMap<&'static str, u64>,
    /// Records that were not events (never expected from our own programs).
    undecodable: Arc<AtomicU64>,
    verdicts: BTreeMap<&'static str, u64>,
    reloads: u64,
    reload_failures: u64,
    /// From exec to the end of a hold, by who decided.
    hold_latency: BTreeMap<String, Histogram>,
    /// File calls refused under protected paths (verdicts), and refusals no protect rule
    /// explains (file permissions, another LSM: not reported).
    files_denied: u64,
    files_unattributed: u64,
}

impl Engine {
    /// A batch from the reader, in order, except that DNS and budget records go first: the
    /// daemon acts on them at once (learn an answer, cut off a tunnel, kill an over-budget
    /// sender), they need nothing the execs, forks and exits queued before them set up, and
    /// a backlog of those routine records must not delay them.
    fn events(&mut self, batch: reader::Batch) {
        let reader::Batch { events: mut batch, drained } = batch;
        // Allocates only for a batch that has such records; the rest stay in place.
        let first: Vec<Event> = batch.extract_if(.., |e| matches!(e, Event::Dns(_) | Event::Budget(_))).collect();
        for ev in first.into_iter().chain(batch) {
            self.event(ev);
        }
        // Every record read before that pass began is handled: policy generations replaced
        // well before it can name no record still to come.
        if let Some(began) = drained {
            self.correlator.policies.retire(began);
        }
    }

    /// Writes a verdict's activity object and, for what the policy stopped or held (or would
    /// have, in audit mode), its Detection Finding right after it, each numbered. Only the
    /// verdict is counted (`counters.verdicts`), not its finding.
    fn event(&mut self, ev: Event) {
        *self.counters.events.entry(ev.kind_name()).or_default() += 1;
        match &ev {
            Event::Cgroup(c) => return self.cgroup_event(c.op, c.id, nul_terminated(&c.path)),
            Event::Move(m) => return self.moved(m),
            Event::Gate(g) => return self.gate(g.header.tgid, &ev),
            Event::Open(o) => return self.sensitive_open(o),
            Event::Budget(b) => return self.budget(b),
            Event::Dns(d) => return self.dns(d),
            Event::File(f) => return self.file_denied(f),
            Event::Deletions(d) => return self.deletions(d),
            Event::Exit(e) => {
                // A held process that ended (killed by someone): its hold is moot.
                self.holds.take_pid(e.header.tgid);
                self.exfil.exit(e.header.tgid);
            }
            Event::Fork(f) => self.exfil.fork(f.header.tgid, f.child),
            _ => {}
        }
        let Some(mut v) = self.correlator.handle(&ev) else { return };
        if let Some(path) = &v.cgroup_path {
            v.session = self.sessions.of_cgroup(path).map(sessions::Session::identity);
        }
        if let Event::Connect(c) = &ev {
            self.annotate_connect(c, &mut v);
        }
        match (&ev, v.decision) {
            (Event::Exec(e), Decision::Held) => self.held(e, v),
            (Event::Exec(e), Decision::Evaluate) => self.evaluate_audit(e, v),
            _ => self.emit(&v),
        }
    }

    fn cgroup_event(&mut self, op: u32, id: u64, path: String) {
        if op != CGROUP_OP_MKDIR {
            self.loaded.forget(id);
            self.forget_workload(id);
            return;
        }
        self.correlator.know_cgroup(id, path.clone());
        let current = Arc::clone(&self.correlator.policies.current);
        match self.loaded.register_new(&current, id, &path) {
            Ok(Some(policy_id)) => {
                let agent = current.agent(policy_id).map(|a| a.name.as_str()).unwrap_or("?");
                tracing::info!(cgroup = %path, agent, "new cgroup matches an agent: registered");
            }
            Ok(None) => self.container_data_pending(&current, id, path),
            Err(e) => tracing::error!(cgroup = %path, error = %e, "cannot register a new agent cgroup"),
        }
    }

    /// A tagged process was moved to another cgroup. Within its agent's cgroups that is
    /// nothing; out of them it is reported (the kernel keeps it under its policy).
    fn moved(&mut self, m: &guard_common::MoveEvent) {
        let to = nul_terminated(&m.dst_path);
        let covered = self.loaded.registrations.iter().any(|r| cgroup::is_within(&to, &r.path));
        if covered || self.sessions.live().any(|s| s.launcher == m.pid) {
            return;
        }
        let (ppid, exe) = self.correlator.identify(m.pid);
        let mut h = m.header;
        h.policy_id = m.policy_id;
        let mut v = self.correlator.verdict(&h, Subject::Moved { pid: m.pid, to: to.clone(), exe }, ppid);
        v.decision = Decision::Audited;
        v.reason = Some(format!(
            "process {} was moved out of its agent's cgroups to {to} by process {}; it stays under its agent's policy",
            m.pid, h.tgid
        ));
        self.emit(&v);
    }

    /// A held process ran (someone continued it) and the gate killed it.
    fn gate(&mut self, pid: u32, ev: &Event) {
        let reason = "continued while held: killed at its first system call".to_owned();
        match self.holds.take_pid(pid) {
            Some(p) => {
                self.counters.hold_latency.entry("gate".into()).or_default().observe(p.since.elapsed());
                let mut v = p.verdict;
                v.decision = Decision::Killed;
                v.time_ms = sessions::now_ms();
                v.hold = Some(json!({ "id": p.id, "decision": "gate" }));
                v.reason = Some(reason);
                self.emit(&v);
            }
            None => {
                let Some(h) = ev.header() else { return };
                let (ppid, exe) = self.correlator.identify(pid);
                let info = crate::verdict::ExecInfo { filename: exe.unwrap_or_default(), ..Default::default() };
                let mut v = self.correlator.verdict(h, Subject::Exec(info), ppid);
                v.decision = Decision::Killed;
                v.reason = Some(reason);
                if let Some(path) = &v.cgroup_path {
                    v.session = self.sessions.of_cgroup(path).map(sessions::Session::identity);
                }
                self.emit(&v);
            }
        }
    }

    fn tick(&mut self, poll_policy: bool) {
        self.retry_sql_waits();
        for p in self.holds.expired(Instant::now()) {
            let reason = format!("no approval within {}s", p.timeout.as_secs());
            self.finish_hold(p, Outcome::Kill, json!({ "decision": "timeout" }), Some(reason));
        }
        self.sessions.reap();
        self.retry_containers();
        self.expire_learned();
        self.check_lost(false);
        if poll_policy {
            if let Some(path) = &self.policy_path {
                let now = fingerprint(path);
                if self.fingerprint.as_ref() == Some(&now) {
                    self.changing = None;
                } else if self.changing.as_ref() == Some(&now) {
                    self.reload("policy file changed");
                } else {
                    self.changing = Some(now);
                }
            }
        }
    }

    /// Compiles the policy again and swaps it in; a policy that fails keeps the old one and
    /// produces an error verdict.
    ///
    /// SIGHUPs are coalesced: the signal stream holds at most one pending SIGHUP, so a storm of
    /// them costs one reload for the signals before the loop got to it, and one more for all
    /// that arrived while that reload ran. The last reload starts after the last signal, so
    /// the policy in force is the file as it was then.
    fn reload(&mut self, trigger: &str) {
        self.notifier.reloading();
        // logrotate's postrotate sends SIGHUP too: start new verdict files.
        self.sinks.reopen();
        if let Some(path) = &self.policy_path {
            self.fingerprint = Some(fingerprint(path));
        }
        self.changing = None;
        let previous = self.correlator.policies.current.hash.clone();
        let model = match &self.policy_path {
            Some(p) => policy::reload(p, self.policy_is_dir),
            None => Ok(policy::default_policy()),
        };
        let result = model.map_err(loader::LoadError::Policy).and_then(|m| self.loaded.apply(&self.root, &m));
        let source = self.policy_path.as_ref().map_or_else(|| policy::DEFAULT_POLICY_NAME.to_owned(), |p| p.display().to_string());
        let v = match result {
            Ok(compiled) => {
                self.counters.reloads += 1;
                for w in &compiled.warnings {
                    tracing::warn!("{w}");
                }
                tracing::info!(trigger, policy_hash = %compiled.hash, previous = %previous, "policy reloaded");
                let warnings = compiled.warnings.clone();
                let compiled = Arc::new(compiled);
                self.correlator.set_policy(Arc::clone(&compiled), &self.loaded.registrations);
                let subject = Subject::Policy { source, error: None, previous_hash: Some(previous), warnings };
                let mut v = self.daemon_verdict(subject, &compiled.hash, Some(format!("policy reloaded ({trigger})")));
                v.policy_generation = Some(compiled.generation());
                v
            }
            Err(e) => {
                self.counters.reload_failures += 1;
                let error = match &e {
                    loader::LoadError::Policy(p) => p.to_string(),
                    other => format!("{other:#}"),
                };
                tracing::error!(trigger, error = %error, "policy reload failed; the previous policy stays in force");
                let subject = Subject::Policy { source, error: Some(error), previous_hash: None, warnings: Vec::new() };
                self.daemon_verdict(subject, &previous, Some(format!("policy reload failed ({trigger}); the previous policy stays in force")))
            }
        };
        self.emit(&v);
        self.notifier.ready(&ready_status(&self.correlator.policies.current.hash));
    }

    fn daemon_verdict(&self, subject: Subject, hash: &str, reason: Option<String>) -> Verdict {
        let failed = matches!(&subject, Subject::Policy { error: Some(_), .. });
        Verdict {
            time_ms: sessions::now_ms(),
            decision: if failed { Decision::Denied } else { Decision::Allowed },
            agent: None,
            rule: None,
            policy_hash: hash.to_owned(),
            policy_generation: None,
            pid: std::process::id(),
            ppid: 0,
            uid: 0,
            gid: 0,
            cgroup_id: 0,
            cgroup_path: None,
            subject,
            ancestry: Vec::new(),
            error: None,
            session: None,
            hold: None,
            reason,
            exfil: None,
            sql: None,
        }
    }

}

/// The STATUS= systemd shows next to READY.
fn ready_status(policy_hash: &str) -> String {
    format!("enforcing policy {}", policy_hash.get(..12).unwrap_or(policy_hash))
}

/// Nanoseconds of CLOCK_BOOTTIME (the clock of `bpf_ktime_get_boot_ns`).
fn boot_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into memory we own.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// (path, size, mtime ns) of the policy file, or of each `*.yaml` in the policy directory.
fn fingerprint(path: &Path) -> Vec<(PathBuf, u64, i128)> {
    use std::os::unix::fs::MetadataExt as _;
    let stat = |p: &Path| std::fs::metadata(p).ok().map(|m| (p.to_path_buf(), m.len(), i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())));
    if path.is_dir() {
        let mut out: Vec<_> = std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .filter_map(|p| stat(&p))
            .collect();
        out.sort();
        out
    } else {
        stat(path).into_iter().collect()
    }
}

/// The gid of a group name (or a number).
fn group_id(name: &str) -> anyhow::Result<u32> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    let text = std::fs::read_to_string("/etc/group").context("reading /etc/group")?;
    text.lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next()? == name).then(|| f.nth(1)?.parse().ok())?
        })
        .ok_or_else(|| anyhow::anyhow!("no group named `{name}` in /etc/group"))
}
