//! The daemon: load and attach, then ring buffer -> bounded channel -> verdicts -> stdout, until
//! SIGINT or SIGTERM. Enforcement happens in the kernel; this loop only reports it, so a slow
//! consumer costs ring-buffer drops (counted per event kind), never a missed decision.
use std::{
    io::{self, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use anyhow::Context as _;
use guard_common::{
    ConnectEvent, Decision, EVENT_FLAG_FILENAME_TRUNCATED, EVENT_FLAG_SIGNAL_FAILED, EventHeader,
    ExecEvent, NET_OP_SENDMSG,
};
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind, sync::mpsc};

use crate::{
    cgroup::{CgroupRef, PathCache},
    events::{self, Event},
    loader, paths,
    policy::compile::Compiled,
    proctable::{ProcInfo, ProcTable},
    verdict::{Subject, Verdict},
};

/// Processes of agent workloads remembered for naming them in verdicts after they are gone.
const PROC_TABLE_CAP: usize = 65_536;

/// Events buffered between the ring-buffer reader and the verdict writer. When full, the reader
/// waits, and the kernel's ring buffer (which counts its drops) absorbs the burst.
const CHANNEL_DEPTH: usize = 4096;

pub async fn run(policy: Compiled) -> anyhow::Result<()> {
    for w in &policy.warnings {
        tracing::warn!("{w}");
    }
    let cgroup_root = paths::cgroup2_root()?;
    let mut loaded = loader::load(&cgroup_root, &policy).context("starting enforcement")?;
    let ring = loaded.take_events()?;
    // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged, for as long as the
    // AsyncFd owns the ring buffer.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| e.into_parts().1)
        .context("polling the event ring buffer")?;

    let mut builder = VerdictBuilder::new(policy, cgroup_root);
    for r in &loaded.registrations {
        builder.cgroups.insert(r.id, r.path.clone());
    }
    tracing::info!(
        tier = loader::TIER,
        programs = ?loaded.attached,
        cgroups = ?loaded.registrations.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        policy = %builder.policy.source,
        policy_hash = %builder.policy.hash,
        "ready: enforcing"
    );

    let (tx, mut rx) = mpsc::channel::<Event>(CHANNEL_DEPTH);
    let reader = tokio::spawn(async move {
        let mut undecodable = 0u64;
        loop {
            let mut guard = match ring.readable_mut().await {
                Ok(g) => g,
                Err(e) => {
                    tracing::error!(error = %e, "event ring buffer poll failed");
                    return undecodable;
                }
            };
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                match events::decode(&item) {
                    Ok(ev) => {
                        drop(item);
                        if tx.send(ev).await.is_err() {
                            return undecodable;
                        }
                    }
                    Err(e) => {
                        undecodable += 1;
                        tracing::warn!(error = %e, "undecodable event");
                    }
                }
            }
            guard.clear_ready();
        }
    });

    let writer = tokio::spawn(async move {
        let stdout = io::stdout();
        let mut write_errors = 0u64;
        while let Some(ev) = rx.recv().await {
            let mut out = stdout.lock();
            let mut batch = vec![ev];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
                if batch.len() >= 256 {
                    break;
                }
            }
            for ev in batch {
                let verdict = builder.build(&ev);
                // stdout failing (closed pipe, full disk) must not stop the daemon: enforcement
                // lives as long as the daemon does. Count and go on.
                if writeln!(out, "{}", verdict.to_ocsf()).is_err() {
                    write_errors += 1;
                }
            }
            if out.flush().is_err() {
                write_errors += 1;
            }
        }
        (write_errors, builder.procs.len())
    });

    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: stopping"),
        _ = sigint.recv() => tracing::info!("SIGINT: stopping"),
    }
    reader.abort();
    let (write_errors, process_table) = writer.await.unwrap_or_default();
    let drops = loaded.drops()?;
    tracing::info!(?drops, stdout_write_errors = write_errors, process_table, "stopped; detaching programs");
    drop(loaded);
    Ok(())
}

/// Turns kernel events into verdicts: names the agent and rule, resolves the cgroup path and
/// what the kernel could not read (a connect's parent pid and executable).
struct VerdictBuilder {
    policy: Compiled,
    cgroups: PathCache,
    procs: ProcTable,
    /// CLOCK_REALTIME - CLOCK_BOOTTIME, to turn event timestamps into wall-clock time.
    boot_to_epoch_ns: i128,
}

impl VerdictBuilder {
    fn new(policy: Compiled, cgroup_root: PathBuf) -> Self {
        Self {
            policy,
            cgroups: PathCache::new(cgroup_root),
            procs: ProcTable::new(PROC_TABLE_CAP),
            boot_to_epoch_ns: boot_to_epoch_ns(),
        }
    }

    /// Parent pid and executable of a process seen in a socket hook, where the kernel cannot
    /// read them. The process may be gone already, so what its exec told us comes first.
    fn identify(&self, tgid: u32) -> (u32, Option<String>) {
        let known = self.procs.get(tgid).cloned();
        let ppid = known.as_ref().map(|p| p.ppid).filter(|p| *p != 0).unwrap_or_else(|| parent_of(tgid));
        (ppid, known.map(|p| p.exe).or_else(|| exe_of(tgid)))
    }

    fn build(&mut self, ev: &Event) -> Verdict {
        let h = ev.header();
        let (subject, ppid) = match ev {
            Event::Exec(e) => {
                let subject = exec_subject(e);
                if let Subject::Exec { filename, .. } = &subject {
                    self.procs.insert(h.tgid, ProcInfo { ppid: h.ppid, exe: filename.clone() });
                }
                (subject, h.ppid)
            }
            Event::Connect(c) => {
                let (ppid, exe) = self.identify(h.tgid);
                (connect_subject(c, exe), ppid)
            }
            Event::Socket(s) => {
                let (ppid, exe) = self.identify(h.tgid);
                (Subject::Socket { family: s.family, sock_type: s.sock_type, protocol: s.protocol, exe }, ppid)
            }
        };
        let leaf = nul_terminated(&h.cgroup_name);
        let cgroup_path = self.cgroups.resolve(&CgroupRef {
            id: h.cgroup_id,
            under: h.matched_cgroup_id,
            depth: h.depth_below_match,
            parent: h.parent_cgroup_id,
            leaf: &leaf,
        });
        let decision = Decision::from_u32(h.decision).unwrap_or(Decision::Allowed);
        Verdict {
            time_ms: u64::try_from((i128::from(h.boot_ns) + self.boot_to_epoch_ns) / 1_000_000).unwrap_or(0),
            decision,
            agent: self.policy.agent(h.policy_id).map_or_else(|| format!("<policy {}>", h.policy_id), |a| a.name.clone()),
            rule: self.policy.rule(h.rule_id).cloned(),
            policy_hash: self.policy.hash.clone(),
            pid: h.tgid,
            ppid,
            uid: h.uid,
            gid: h.gid,
            cgroup_id: h.cgroup_id,
            cgroup_path,
            subject,
            error: signal_error(h),
        }
    }
}

fn signal_error(h: &EventHeader) -> Option<&'static str> {
    (h.flags & EVENT_FLAG_SIGNAL_FAILED != 0).then_some("bpf_send_signal failed: the process was not killed")
}

fn exec_subject(e: &ExecEvent) -> Subject {
    let len = (e.filename_len as usize).min(e.key.path.len());
    Subject::Exec {
        filename: String::from_utf8_lossy(&e.key.path[..len]).into_owned(),
        truncated: e.header.flags & EVENT_FLAG_FILENAME_TRUNCATED != 0,
    }
}

fn connect_subject(c: &ConnectEvent, exe: Option<String>) -> Subject {
    let addr = if c.family == libc::AF_INET as u32 {
        IpAddr::V4(Ipv4Addr::new(c.addr[0], c.addr[1], c.addr[2], c.addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(c.addr))
    };
    Subject::Connect { addr, port: c.port, protocol: c.protocol, exe, sendmsg: c.op == NET_OP_SENDMSG }
}

/// The executable of a live process.
fn exe_of(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| p.to_string_lossy().into_owned())
}

/// The parent pid of a live process, 0 if it is gone.
fn parent_of(pid: u32) -> u32 {
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .map(|s| s.ppid as u32)
        .unwrap_or(0)
}

fn nul_terminated(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn boot_to_epoch_ns() -> i128 {
    let now = |clock| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec into memory we own.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_BOOTTIME)
}
