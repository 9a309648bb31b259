//! Correlation: kernel events -> verdicts with identity, lineage and the deciding rule.
use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use guard_common::{
    ARGV_LEN, CWD_PARTS, CWD_UNKNOWN, ConnectEvent, Decision, EVENT_FLAG_ARGV_TRUNCATED,
    EVENT_FLAG_CWD_IN_MOUNT, EVENT_FLAG_CWD_TRUNCATED, EVENT_FLAG_FILENAME_TRUNCATED,
    EVENT_FLAG_MOVED_OUT, EVENT_FLAG_SIGNAL_FAILED, EventHeader, ExecEvent, NET_OP_SENDMSG, NO_LOGINUID,
};

use crate::{
    cgroup::{CgroupRef, PathCache},
    events::Event,
    loader::Registration,
    policy::compile::Compiled,
    proctable::{ProcInfo, ProcTable},
    verdict::{ExecInfo, Subject, Verdict},
};

/// Processes of agent workloads remembered for naming them in verdicts after they are gone.
const PROC_TABLE_CAP: usize = 65_536;

/// How long after a generation was replaced a program may still submit a record it decided
/// with that generation (it looked the policy up just before the swap). BPF programs run to
/// completion in microseconds; this leaves room for a preempted one.
pub const RETIRE_GRACE: Duration = Duration::from_millis(500);
/// Replaced generations kept at most, whatever the reader says: a bound on memory if the
/// reader stalls during a reload storm. Records of one dropped this way are counted
/// (`unattributed`), never given another generation's hash.
const MAX_REPLACED: usize = 256;

/// The policy generation in force and the ones it replaced that records still in flight (in
/// the ring buffer or the channel) may name. Each generation has its own policy ids (see
/// loader/apply.rs), so a record names the generation the kernel decided with, and its verdict
/// carries that generation's hash and rules, however many reloads came since.
#[derive(Clone)]
pub struct PolicySet {
    pub current: Arc<Compiled>,
    /// Older first, each with when it stopped being in force.
    replaced: VecDeque<(Arc<Compiled>, Instant)>,
}

impl PolicySet {
    pub fn new(current: Arc<Compiled>) -> Self {
        Self { current, replaced: VecDeque::new() }
    }

    /// The compilation a policy id belongs to.
    pub fn arc(&self, policy_id: u32) -> Option<&Arc<Compiled>> {
        std::iter::once(&self.current).chain(self.replaced.iter().rev().map(|(c, _)| c)).find(|c| c.owns(policy_id))
    }

    pub fn of(&self, policy_id: u32) -> Option<&Compiled> {
        self.arc(policy_id).map(|c| &**c)
    }

    pub fn agent(&self, policy_id: u32) -> Option<&crate::policy::compile::AgentEntry> {
        self.of(policy_id)?.agent(policy_id)
    }

    /// `policy` is in force from now on; the one it replaces is kept for records in flight.
    fn replace(&mut self, policy: Arc<Compiled>, now: Instant) {
        let old = std::mem::replace(&mut self.current, policy);
        self.replaced.push_back((old, now));
        if self.replaced.len() > MAX_REPLACED {
            self.replaced.pop_front();
        }
    }

    /// The reader read the ring buffer empty in a pass that began at `drain_began`, and every
    /// record of that pass has been handled: no record of a generation replaced more than
    /// [`RETIRE_GRACE`] before it can still arrive.
    pub fn retire(&mut self, drain_began: Instant) {
        while self.replaced.front().is_some_and(|(_, at)| *at + RETIRE_GRACE < drain_began) {
            self.replaced.pop_front();
        }
    }

    /// Generations replaced and still kept (for `status`).
    pub fn replaced_len(&self) -> usize {
        self.replaced.len()
    }
}

/// Turns kernel events into verdicts: names the agent and rule, resolves the cgroup path and
/// what the kernel could not read (a socket hook's parent pid and executable), and keeps the
/// process table that gives every verdict its ancestry.
pub struct Correlator {
    pub policies: PolicySet,
    cgroups: PathCache,
    procs: ProcTable,
    /// CLOCK_REALTIME - CLOCK_BOOTTIME, to turn event timestamps into wall-clock time.
    boot_to_epoch_ns: i128,
    /// Records naming a policy generation no longer kept (see [`PolicySet`]).
    pub unattributed: u64,
}

impl Correlator {
    pub fn new(policy: Arc<Compiled>, cgroup_root: PathBuf, registrations: &[Registration]) -> Self {
        let mut cgroups = PathCache::new(cgroup_root);
        for r in registrations {
            cgroups.insert(r.id, r.path.clone());
        }
        let mut procs = ProcTable::new(PROC_TABLE_CAP);
        bootstrap(&mut procs, registrations);
        Self { policies: PolicySet::new(policy), cgroups, procs, boot_to_epoch_ns: boot_to_epoch_ns(), unattributed: 0 }
    }

    /// A new policy is in force; the old one is kept for events already in flight.
    pub fn set_policy(&mut self, policy: Arc<Compiled>, registrations: &[Registration]) {
        for r in registrations {
            self.cgroups.insert(r.id, r.path.clone());
        }
        self.policies.replace(policy, Instant::now());
    }

    /// Remembers a cgroup's path (from a mkdir event).
    pub fn know_cgroup(&mut self, id: u64, path: String) {
        self.cgroups.insert(id, path);
    }

    /// Milliseconds since the epoch of a kernel timestamp.
    pub fn wall_ms(&self, boot_ns: u64) -> u64 {
        u64::try_from((i128::from(boot_ns) + self.boot_to_epoch_ns) / 1_000_000).unwrap_or(0)
    }

    pub fn process_table_len(&self) -> usize {
        self.procs.len()
    }

    /// Updates the process table from `ev`, and returns its verdict if it is a decision.
    pub fn handle(&mut self, ev: &Event) -> Option<Verdict> {
        let h = ev.header()?;
        let (subject, ppid) = match ev {
            Event::Fork(f) => {
                let parent = self.procs.get(h.tgid).map(|p| p.exe.clone()).or_else(|| exe_of(h.tgid));
                self.procs.insert(f.child, ProcInfo { ppid: h.tgid, exe: parent.unwrap_or_default(), tagged: true });
                return None;
            }
            Event::Exit(_) => {
                self.procs.remove(h.tgid);
                return None;
            }
            Event::Exec(e) => {
                let subject = exec_subject(e);
                // An exec refused by lsm/bprm_check_security never happened: the process still
                // runs the image it had.
                if let Subject::Exec(info) = &subject
                    && e.header.flags & guard_common::EVENT_FLAG_LSM == 0
                {
                    self.procs.insert(h.tgid, ProcInfo { ppid: h.ppid, exe: info.filename.clone(), tagged: true });
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
            // The daemon's event loop handles these itself.
            Event::Move(_) | Event::Cgroup(_) | Event::Gate(_) | Event::Open(_) | Event::Budget(_) | Event::Dns(_) | Event::File(_) | Event::Deletions(_) => return None,
        };
        Some(self.verdict(h, subject, ppid))
    }

    /// Parent pid and executable of a process seen in a socket hook, where the kernel cannot
    /// read them. The process may be gone already, so what its exec told us comes first.
    pub fn identify(&self, tgid: u32) -> (u32, Option<String>) {
        let known = self.procs.get(tgid).cloned();
        let ppid = known.as_ref().map(|p| p.ppid).filter(|p| *p != 0).unwrap_or_else(|| parent_of(tgid));
        (ppid, known.map(|p| p.exe).or_else(|| exe_of(tgid)))
    }

    pub fn verdict(&mut self, h: &EventHeader, subject: Subject, ppid: u32) -> Verdict {
        let ancestry = self.procs.ancestry(ppid, describe);
        let leaf = nul_terminated(&h.cgroup_name);
        // A process moved out of its agent's cgroups is no longer below the registration
        // that matched it: its own cgroup, read live.
        let moved_out = h.flags & EVENT_FLAG_MOVED_OUT != 0;
        let cgroup_path = if moved_out {
            self.cgroups.resolve_anywhere(h.cgroup_id, &leaf)
        } else {
            self.cgroups.resolve(&CgroupRef {
            id: h.cgroup_id,
            under: h.matched_cgroup_id,
            depth: h.depth_below_match,
            parent: h.parent_cgroup_id,
            leaf: &leaf,
            })
        };
        let decision = Decision::from_u32(h.decision).unwrap_or(Decision::Allowed);
        let decided_by = self.policies.of(h.policy_id);
        // Never another generation's hash for a record whose own generation is gone.
        let error = match (decided_by, signal_error(h)) {
            (None, None) if h.policy_id != 0 => {
                self.unattributed += 1;
                Some(UNATTRIBUTED)
            }
            (_, e) => e,
        };
        Verdict {
            time_ms: self.wall_ms(h.boot_ns),
            decision,
            agent: decided_by.and_then(|c| c.agent(h.policy_id)).map(|a| a.name.clone()),
            rule: decided_by.and_then(|c| c.rule(h.rule_id)).cloned(),
            policy_hash: decided_by.unwrap_or(&self.policies.current).hash.clone(),
            policy_generation: decided_by.map(Compiled::generation),
            pid: h.tgid,
            ppid,
            uid: h.uid,
            gid: h.gid,
            cgroup_id: h.cgroup_id,
            cgroup_path,
            subject,
            ancestry,
            error,
            session: None,
            hold: None,
            reason: (h.flags & EVENT_FLAG_MOVED_OUT != 0)
                .then(|| "moved out of its agent's cgroups; still under its agent's policy".to_owned()),
            exfil: None,
            sql: None,
        }
    }
}

/// A process outside the table, from /proc (alive) — cached as untagged.
fn describe(pid: u32) -> Option<ProcInfo> {
    Some(ProcInfo { ppid: parent_of(pid), exe: exe_of(pid)?, tagged: false })
}

/// Fills the table with the processes already in agent cgroups when the daemon starts.
fn bootstrap(procs: &mut ProcTable, registrations: &[Registration]) {
    let Ok(all) = procfs::process::all_processes() else { return };
    for p in all.flatten() {
        let Ok(cgroups) = p.cgroups() else { continue };
        let Some(path) = cgroups.0.iter().find(|c| c.hierarchy == 0).map(|c| c.pathname.clone()) else { continue };
        let tagged = registrations.iter().any(|r| crate::cgroup::is_within(&path, &r.path));
        if !tagged {
            continue;
        }
        let (Ok(stat), Some(exe)) = (p.stat(), exe_of(p.pid as u32)) else { continue };
        procs.insert(p.pid as u32, ProcInfo { ppid: stat.ppid as u32, exe, tagged: true });
    }
}

/// The error of a verdict whose policy generation the daemon no longer holds: its hash and
/// rule cannot be named (`policy_hash` is then the policy in force, and says nothing of it).
const UNATTRIBUTED: &str = "decided by a policy generation the daemon no longer holds: rule and policy_hash unknown";

fn signal_error(h: &EventHeader) -> Option<&'static str> {
    (h.flags & EVENT_FLAG_SIGNAL_FAILED != 0).then_some("bpf_send_signal failed: the process was not killed")
}

fn exec_subject(e: &ExecEvent) -> Subject {
    let len = (e.filename_len as usize).min(e.key.path.len());
    let flags = e.header.flags;
    let argv_len = (e.argv_len as usize).min(ARGV_LEN);
    let mut argv: Vec<String> = e.argv[..argv_len].split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    // cmdline ends with a NUL, which leaves one empty piece after it.
    if argv.last().is_some_and(String::is_empty) {
        argv.pop();
    }
    Subject::Exec(ExecInfo {
        filename: String::from_utf8_lossy(&e.key.path[..len]).into_owned(),
        filename_truncated: flags & EVENT_FLAG_FILENAME_TRUNCATED != 0,
        argv,
        argv_truncated: flags & EVENT_FLAG_ARGV_TRUNCATED != 0,
        cwd: cwd_of(e),
        euid: e.euid,
        loginuid: (e.loginuid != NO_LOGINUID).then_some(e.loginuid),
        comm: nul_terminated(&e.comm),
        identity: (e.exe_ino != 0).then_some((e.exe_dev, e.exe_ino)),
    })
}

/// The cwd from its components (innermost first). One the kernel could only give relative to a
/// mount, or cut short, is read from /proc while the process lives, else marked with `…`.
fn cwd_of(e: &ExecEvent) -> Option<String> {
    if e.cwd_depth == CWD_UNKNOWN {
        return None;
    }
    let depth = (e.cwd_depth as usize).min(CWD_PARTS);
    let parts: Vec<String> = e.cwd[..depth].iter().rev().map(|p| nul_terminated(p)).collect();
    let path = format!("/{}", parts.join("/"));
    if e.header.flags & (EVENT_FLAG_CWD_IN_MOUNT | EVENT_FLAG_CWD_TRUNCATED) == 0 {
        return Some(path);
    }
    let live = std::fs::read_link(format!("/proc/{}/cwd", e.header.tgid)).ok();
    Some(live.map_or_else(|| format!("…{path}"), |p| p.to_string_lossy().into_owned()))
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

pub fn nul_terminated(b: &[u8]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{compile::compile, parse::parse};

    fn generation(n: u32) -> Arc<Compiled> {
        let text = format!("# generation {n}\nagents:\n  - name: a\n    exec:\n      deny:\n        - basename: x{n}\n");
        Arc::new(compile(&parse("p.yaml", &text).unwrap(), n * guard_common::POLICY_GENERATION_IDS).unwrap())
    }

    #[test]
    fn a_record_names_its_own_generation_until_it_is_retired() {
        let gens: Vec<Arc<Compiled>> = (0..4).map(generation).collect();
        let t0 = Instant::now();
        let mut set = PolicySet::new(Arc::clone(&gens[0]));
        for (i, g) in gens.iter().enumerate().skip(1) {
            set.replace(Arc::clone(g), t0 + Duration::from_millis(i as u64));
        }
        // Generations 0 and 2 share their settings slots, never their ids.
        for g in &gens {
            assert_eq!(set.of(g.base + 1).map(|c| c.hash.as_str()), Some(g.hash.as_str()));
        }
        // A pass that began within the grace of the replacements retires nothing ...
        set.retire(t0 + RETIRE_GRACE);
        assert_eq!(set.replaced_len(), 3);
        // ... one that began later retires what was replaced before it, and nothing else.
        set.retire(t0 + RETIRE_GRACE + Duration::from_millis(2));
        assert_eq!(set.replaced_len(), 2);
        assert!(set.of(gens[0].base + 1).is_none(), "a retired generation is not matched by a later one's slot");
        assert_eq!(set.of(gens[1].base + 1).map(|c| c.hash.as_str()), Some(gens[1].hash.as_str()));
        assert_eq!(set.of(gens[3].base + 1).map(|c| c.hash.as_str()), Some(gens[3].hash.as_str()));
    }
}
