//! The daemon's half of the exfiltration defences: confirming sensitive reads (and keeping
//! what was read, for the verdicts of the connects it blocks), killing senders the kernel
//! reports over budget or tainted, learning addresses from DNS answers for `host:` rules, and
//! cutting off the DNS of workloads whose queries look like a tunnel.
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    path::{Component, Path, PathBuf},
    time::{Duration, Instant},
};

use guard_common::{
    BudgetEvent, ConnectEvent, DNS_ANSWER, DNS_QUERY, Decision, DnsEvent, EVENT_FLAG_DNS_BLOCKED, EVENT_FLAG_LSM,
    EVENT_FLAG_SIGNAL_FAILED, EVENT_FLAG_TAINTED, EventHeader, EventKind, MAX_PORT_RANGES, NET_ALLOW,
    NetRule, OpenEvent, PortRange, SENS_DENY, SENS_TAINT_NOW, TAINT_CONFIRMED, Taint,
};
use serde_json::{Value, json};

use super::Engine;
use crate::{
    dns::{self, Learned, TunnelDetector},
    policy::{
        compile::{AgentEntry, Compiled, RuleInfo},
        exfil::ExfilEval,
    },
    verdict::{Subject, Verdict},
};

/// Processes remembered as tainted (confirmed sensitive reads), at most.
const TAINT_CAP: usize = 65_536;
const AT_FDCWD: i32 = -100;

/// What a confirmed sensitive read left: named in the verdicts of what it blocks.
#[derive(Debug, Clone)]
pub struct TaintInfo {
    pub path: String,
    pub time_ms: u64,
    pub reader: u32,
    /// Inherited from an ancestor (the reader) rather than read by this process.
    pub inherited: bool,
}

impl TaintInfo {
    fn to_json(&self) -> Value {
        json!({ "path": self.path, "time": self.time_ms, "reader_pid": self.reader, "inherited": self.inherited })
    }
}

#[derive(Default)]
pub struct ExfilCounters {
    pub sensitive_reads: u64,
    /// Opens of `action: deny` sensitive paths refused or killed (or, in audit mode, that would
    /// have been).
    pub opens_denied: u64,
    pub taints_cleared: u64,
    pub dns_messages: u64,
    pub dns_malformed: u64,
    pub dns_truncated: u64,
    pub budget_exceeded: u64,
    pub tunnels: u64,
    pub kill_failures: u64,
}

pub struct ExfilState {
    taints: HashMap<u32, TaintInfo>,
    learned: Learned,
    /// Per agent name: each agent has its own limits.
    tunnels: HashMap<String, TunnelDetector>,
    /// Workloads (cgroup ids) whose DNS is cut off.
    pub blocked: HashSet<u64>,
    pub counters: ExfilCounters,
}

impl Default for ExfilState {
    fn default() -> Self {
        Self {
            taints: HashMap::new(),
            learned: Learned::new(dns::DEFAULT_CAPACITY, dns::DEFAULT_SEEN_CAPACITY, dns::DEFAULT_SEEN_TTL),
            tunnels: HashMap::new(),
            blocked: HashSet::new(),
            counters: ExfilCounters::default(),
        }
    }
}

impl ExfilState {
    pub fn tainted(&self) -> usize {
        self.taints.len()
    }

    pub fn learned(&self) -> usize {
        self.learned.len()
    }

    /// What `status` shows.
    pub fn status(&self) -> Value {
        let c = &self.counters;
        json!({
            "tainted_processes": self.taints.iter().map(|(pid, t)| json!({ "pid": pid, "read": t.to_json() })).collect::<Vec<_>>(),
            "learned_addresses": self.learned.len(),
            "learned_refused": self.learned.refused(),
            "dns_blocked_workloads": self.blocked.iter().collect::<Vec<_>>(),
            "sensitive_reads": c.sensitive_reads,
            "sensitive_opens_refused": c.opens_denied,
            "provisional_taints_cleared": c.taints_cleared,
            "dns_messages": c.dns_messages,
            "dns_malformed": c.dns_malformed,
            "dns_truncated": c.dns_truncated,
            "egress_budget_exceeded": c.budget_exceeded,
            "dns_tunnels": c.tunnels,
            "kill_failures": c.kill_failures,
        })
    }

    /// A new process: it inherits its parent's taint (the kernel did the same in `TAINT`).
    pub fn fork(&mut self, parent: u32, child: u32) {
        if let Some(t) = self.taints.get(&parent).cloned() {
            if self.taints.len() < TAINT_CAP {
                self.taints.insert(child, TaintInfo { inherited: true, ..t });
            }
        }
    }

    pub fn exit(&mut self, tgid: u32) {
        self.taints.remove(&tgid);
    }
}

impl Engine {
    /// An open the kernel filter matched: confirmed against the globs, or the kernel's
    /// provisional taint is lifted.
    pub(super) fn sensitive_open(&mut self, o: &OpenEvent) {
        let h = &o.header;
        let raw = String::from_utf8_lossy(&o.filename[..(o.filename_len as usize).min(o.filename.len())]).into_owned();
        let lsm = h.flags & EVENT_FLAG_LSM != 0;
        if o.sens_flags & SENS_DENY != 0 {
            let refused = self.denied_open(o, &raw, lsm);
            if refused {
                return;
            }
        }
        let path = resolve(h.tgid, h.pid, o.dirfd, &raw);
        let agent = self.correlator.policies.agent(h.policy_id);
        let matched = match (&path, agent.and_then(|a| a.exfil.sensitive.as_ref())) {
            (Some(p), Some(set)) => set.is_match(p),
            // A relative path of a process already gone: the kernel's match stands (the taint
            // only matters to the process's children, which inherited it).
            (None, Some(_)) => o.sens_flags & SENS_TAINT_NOW != 0,
            _ => false,
        };
        let tgid = h.tgid;
        if !matched {
            if o.sens_flags & SENS_TAINT_NOW != 0 && !self.exfil.taints.contains_key(&tgid) {
                self.exfil.counters.taints_cleared += 1;
                if let Err(e) = self.loaded.clear_taint(tgid) {
                    tracing::error!(error = %e, pid = tgid, "cannot clear a provisional taint");
                }
            }
            return;
        }
        self.exfil.counters.sensitive_reads += 1;
        if self.exfil.taints.contains_key(&tgid) {
            return;
        }
        let shown = path.unwrap_or_else(|| format!("{raw} (relative; the process ended before its directory could be read)"));
        tracing::info!(pid = tgid, path = %shown, "sensitive read: the process tree is tainted");
        let info = TaintInfo { path: shown, time_ms: self.correlator.wall_ms(h.boot_ns), reader: tgid, inherited: false };
        if self.exfil.taints.len() < TAINT_CAP {
            self.exfil.taints.insert(tgid, info);
        }
        let t = Taint { boot_ns: h.boot_ns, reader: tgid, flags: TAINT_CONFIRMED };
        if let Err(e) = self.loaded.set_taint(tgid, t) {
            tracing::error!(error = %e, pid = tgid, "cannot record a taint in the kernel");
        }
    }

    /// An open of an `action: deny` sensitive path the kernel refused (`lsm/file_open`: `EPERM`),
    /// killed the caller for (the open tracepoints), or would have in audit mode: its verdict.
    /// True if the open did not happen (nothing to taint).
    fn denied_open(&mut self, o: &OpenEvent, raw: &str, lsm: bool) -> bool {
        let h = &o.header;
        let decision = Decision::from_u32(h.decision);
        let Some(decision @ (Decision::Denied | Decision::Killed | Decision::WouldDeny | Decision::WouldKill)) = decision else {
            return false;
        };
        // The lsm hook sees the opened file's own name and its directory's (`dir/name`); the
        // tracepoint the path the call named, resolved here.
        let (path, resolved_by) = if lsm {
            (format!("…/{raw}"), "kernel")
        } else {
            match resolve(h.tgid, h.pid, o.dirfd, raw) {
                Some(p) => (p, if raw.starts_with('/') { "absolute" } else { "proc" }),
                None => (raw.to_owned(), "unresolved"),
            }
        };
        let matched = if lsm { format!("/{raw}") } else { path.clone() };
        let (rule_id, glob) = self
            .correlator
            .policies
            .agent(h.policy_id)
            .and_then(|a| {
                let x = &a.exfil;
                let set = x.sensitive.as_ref()?;
                let hit = set.matches(&matched).into_iter().find(|i| x.sensitive_deny.get(*i).copied().unwrap_or(false))?;
                Some((x.deny_rules.get(hit).copied().unwrap_or(0), x.sensitive_text.get(hit).cloned().unwrap_or_default()))
            })
            .unwrap_or((0, String::new()));
        let shown_glob = if glob.is_empty() { "an `action: deny` sensitive path".to_owned() } else { format!("`{glob}` (action: deny)") };
        let reason = match decision {
            Decision::Denied => format!("open of {path} refused (EPERM from lsm/file_open): {shown_glob}"),
            Decision::Killed => format!("open of {path}: the process was killed at the call (SIGKILL), before it could use the descriptor: {shown_glob}"),
            _ => format!("audit mode: the open of {path} would have been refused: {shown_glob}; the process is tainted as for any sensitive read"),
        };
        let detail = json!({
            "syscall": if lsm { "lsm/file_open" } else { "open" },
            "errno": if decision == Decision::Denied { Some("EPERM") } else { None },
            "raw_path": raw,
            "resolved_by": resolved_by,
            "scope": "sensitive",
            "open_flags": o.open_flags,
            "mechanism": if lsm { "lsm/file_open" } else { "sys_enter_open* + SIGKILL" },
        });
        let (ppid, exe) = self.correlator.identify(h.tgid);
        let subject = Subject::File { op: "open", path, to: None, exe, detail };
        let mut v = self.correlator.verdict(h, subject, if h.ppid != 0 { h.ppid } else { ppid });
        v.rule = self.correlator.policies.of(h.policy_id).and_then(|c| c.rule(rule_id)).cloned();
        v.reason = Some(reason);
        if h.flags & EVENT_FLAG_SIGNAL_FAILED != 0 {
            v.error = Some("the kill signal could not be sent");
        }
        self.exfil.counters.opens_denied += 1;
        self.emit_with_session(v);
        // A process the kill signal missed went on with the descriptor: a read, to taint.
        decision == Decision::Denied || (decision == Decision::Killed && h.flags & EVENT_FLAG_SIGNAL_FAILED == 0)
    }

    /// Adds what the exfil defences know to a connect's verdict, and carries out a kill the
    /// kernel asked for.
    pub(super) fn annotate_connect(&mut self, c: &ConnectEvent, v: &mut Verdict) {
        let h = &c.header;
        let Subject::Connect { addr, .. } = v.subject else { return };
        if h.flags & EVENT_FLAG_TAINTED != 0 {
            let info = self.exfil.taints.get(&h.tgid).cloned().unwrap_or_else(|| {
                // Tainted by the kernel, not (yet) confirmed here: say what the kernel knows.
                let t = self.loaded.taint(h.tgid).ok().flatten();
                TaintInfo {
                    path: "(a sensitive path; the read was not seen by the daemon)".into(),
                    time_ms: t.map_or(0, |t| self.correlator.wall_ms(t.boot_ns)),
                    reader: t.map_or(h.tgid, |t| t.reader),
                    inherited: t.is_some_and(|t| t.reader != h.tgid),
                }
            });
            v.rule = self.exfil_rule(h.policy_id, |x| x.taint_rule);
            let by = if info.inherited { format!("its ancestor {}", info.reader) } else { "it".to_owned() };
            v.reason = Some(format!(
                "{by} read {} at {}; after a sensitive read only allow-listed destinations may be reached",
                info.path,
                crate::time::utc(info.time_ms)
            ));
            v.exfil = Some(json!({ "sensitive_read": info.to_json() }));
            if v.decision == Decision::Killed {
                v.error = self.kill_tainted(h.tgid);
            }
            return;
        }
        if h.flags & EVENT_FLAG_DNS_BLOCKED != 0 {
            v.reason = Some("this workload's DNS is cut off: its queries looked like a DNS tunnel".into());
            return;
        }
        let Some(agent) = self.correlator.policies.agent(h.policy_id) else { return };
        if agent.hosts.is_empty() {
            return;
        }
        let names = self.exfil.learned.names(h.policy_id, addr).map(<[String]>::to_vec);
        let seen = self.exfil.learned.seen_names(h.policy_id, addr);
        let refused = matches!(v.decision, Decision::Denied | Decision::WouldDeny);
        if refused && names.is_none() {
            v.reason = Some(match &seen {
                Some(s) => format!("{addr} was answered for {} only, which no host rule allows", s.join(", ")),
                None => format!("{addr} was never answered for a name a host rule allows"),
            });
        }
        v.exfil = Some(json!({ "dns": { "allowed_names": names, "other_names": seen } }));
    }

    /// Kills a tainted process that tried to connect off the allow list (`kill` mode). The
    /// kernel still holding its taint proves it is the same process.
    fn kill_tainted(&mut self, tgid: u32) -> Option<&'static str> {
        match self.loaded.taint(tgid) {
            Ok(Some(_)) if signal_kill(tgid) => None,
            _ => {
                self.exfil.counters.kill_failures += 1;
                Some("the process could not be killed (it had already ended)")
            }
        }
    }

    /// The kernel dropped a packet over a workload's byte budget.
    pub(super) fn budget(&mut self, b: &BudgetEvent) {
        self.exfil.counters.budget_exceeded += 1;
        let addr = address(u32::from(b.family), b.addr);
        let header = synthetic_header(EventKind::Budget, b.decision, b.boot_ns, b.tgid, b.policy_id, b.cgroup_id);
        let (ppid, exe) = self.correlator.identify(b.tgid);
        let subject = Subject::Flow { addr, port: b.port, protocol: b.protocol, exe, operation: "egress_budget" };
        let mut v = self.correlator.verdict(&header, subject, ppid);
        v.rule = self.exfil_rule(b.policy_id, |x| x.budget_rule);
        let window_s = b.window_ns as f64 / 1e9;
        let kill = matches!(v.decision, Decision::Killed | Decision::WouldKill);
        v.exfil = Some(json!({ "egress_budget": {
            "bytes_sent": b.bytes,
            "packet_bytes": b.packet,
            "budget": b.budget,
            "window_seconds": window_s,
            "window_start": self.correlator.wall_ms(b.window_start),
            "action": if kill { "kill" } else { "drop" },
        }}));
        let then = match v.decision {
            Decision::Killed => "further packets are dropped and the process is killed",
            Decision::Denied => "further packets are dropped until the window ends",
            _ => "audit mode: nothing was dropped",
        };
        v.reason = Some(format!(
            "{} bytes sent to {} port {} within {window_s}s, budget {}: {then}",
            b.bytes + b.packet, addr, b.port, b.budget
        ));
        if v.decision == Decision::Killed {
            v.error = self.kill_in_cgroup(b.tgid, b.cgroup_id);
        }
        self.emit_with_session(v);
    }

    /// Kills the owner of an over-budget socket if it is still in the workload's cgroup.
    fn kill_in_cgroup(&mut self, tgid: u32, cgroup_id: u64) -> Option<&'static str> {
        let path = std::fs::read_to_string(format!("/proc/{tgid}/cgroup")).ok();
        let path = path.as_deref().and_then(|t| t.lines().find_map(|l| l.strip_prefix("0::")));
        let same = path.and_then(|p| crate::cgroup::id_of(&self.root.join(p.trim_start_matches('/'))).ok()) == Some(cgroup_id);
        if same && signal_kill(tgid) {
            return None;
        }
        self.exfil.counters.kill_failures += 1;
        Some("the sending process could not be killed (it had ended or left the workload); its packets are still dropped")
    }

    /// A DNS message of an agent workload.
    pub(super) fn dns(&mut self, d: &DnsEvent) {
        let copied = (d.copied as usize).min(d.payload.len());
        let transport = if d.protocol == 6 { dns::Transport::Tcp } else { dns::Transport::Udp };
        let msg = match dns::parse(&d.payload[..copied], transport, d.copied == d.payload_len) {
            Ok(m) => m,
            Err(dns::ParseError::Truncated) => {
                self.exfil.counters.dns_truncated += 1;
                return;
            }
            Err(dns::ParseError::Malformed(_)) => {
                self.exfil.counters.dns_malformed += 1;
                return;
            }
        };
        self.exfil.counters.dns_messages += 1;
        // The compilation the event's policy id belongs to (a reference count, not a copy).
        let Some(compiled) = self.correlator.policies.arc(d.policy_id).cloned() else { return };
        let Some(agent) = compiled.agent(d.policy_id) else { return };
        let now = Instant::now();
        if d.direction == DNS_QUERY && !msg.response {
            self.dns_query(d, agent, &msg, now);
        } else if d.direction == DNS_ANSWER && msg.response {
            for r in msg.resolved() {
                if agent.hosts.iter().any(|h| h.pattern.matches(&r.asked)) {
                    let ttl = Duration::from_secs(u64::from(r.ttl));
                    self.exfil.learned.learn(d.policy_id, r.addr, &r.asked, ttl, agent.dns_grace, now);
                    self.write_learned(&compiled, agent, r.addr);
                } else {
                    self.exfil.learned.saw(d.policy_id, r.addr, &r.asked, now);
                }
            }
        }
    }

    fn dns_query(&mut self, d: &DnsEvent, agent: &AgentEntry, msg: &dns::Dns, now: Instant) {
        let Some(limits) = &agent.exfil.tunnel else { return };
        if self.exfil.blocked.contains(&d.cgroup_id) {
            return;
        }
        if !self.exfil.tunnels.contains_key(&agent.name) {
            self.exfil.tunnels.insert(agent.name.clone(), TunnelDetector::new(limits.clone(), dns::DEFAULT_MAX_TRACKED));
        }
        let Some(detector) = self.exfil.tunnels.get_mut(&agent.name) else { return };
        let Some(f) = msg.questions.iter().find_map(|q| detector.observe(d.cgroup_id, &q.name, now)) else { return };
        self.exfil.counters.tunnels += 1;
        let audit = agent.mode == crate::policy::Mode::Audit;
        if !audit {
            self.exfil.blocked.insert(d.cgroup_id);
            if let Err(e) = self.loaded.block_dns(d.cgroup_id, d.boot_ns) {
                tracing::error!(error = %e, "cannot cut off a workload's DNS");
            }
        }
        let decision = if audit { Decision::WouldDeny } else { Decision::Denied };
        let header = synthetic_header(EventKind::Dns, decision as u32, d.boot_ns, d.tgid, d.policy_id, d.cgroup_id);
        let (ppid, exe) = self.correlator.identify(d.tgid);
        let addr = address(d.family, d.server);
        let subject = Subject::Flow { addr, port: d.server_port, protocol: d.protocol, exe, operation: "dns_tunnel" };
        let mut v = self.correlator.verdict(&header, subject, ppid);
        v.rule = self.exfil_rule(d.policy_id, |x| x.tunnel_rule);
        v.reason = Some(format!("{} (query {}, base domain {}): this workload's DNS is cut off", f.reason, f.qname, f.base_domain));
        v.exfil = Some(json!({ "dns_tunnel": { "query": f.qname, "base_domain": f.base_domain, "why": f.reason.to_string() } }));
        self.emit_with_session(v);
    }

    /// Writes (or rewrites) the kernel entry of a learned address: the ports of every host
    /// rule one of its names matches, then what the compiled policy says about the address.
    fn write_learned(&mut self, compiled: &Compiled, agent: &AgentEntry, addr: IpAddr) {
        let Some(names) = self.exfil.learned.names(agent.policy_id, addr) else { return };
        let mut host_ranges = Vec::new();
        for h in agent.hosts.iter().filter(|h| names.iter().any(|n| h.pattern.matches(n))) {
            let ports = if h.ports.is_empty() { vec![(0, u16::MAX)] } else { h.ports.clone() };
            host_ranges.extend(ports.into_iter().map(|(lo, hi)| PortRange { lo, hi, action: NET_ALLOW, rule_id: h.rule_id }));
        }
        let (exact, base) = longest_match(compiled, agent.policy_id, addr);
        // An entry the policy has for exactly this address decides first (a deny of it
        // stays a deny); otherwise the host rule, then the enclosing prefixes.
        let ranges: Vec<PortRange> = match (exact, base) {
            (true, Some(b)) => b.ranges[..b.count as usize].iter().chain(&host_ranges).copied().collect(),
            (_, b) => host_ranges.iter().chain(b.iter().flat_map(|b| b.ranges[..b.count as usize].iter())).copied().collect(),
        };
        let n = ranges.len().min(MAX_PORT_RANGES);
        let mut rule = NetRule { count: n as u32, _pad: 0, ranges: [PortRange::default(); MAX_PORT_RANGES] };
        rule.ranges[..n].copy_from_slice(&ranges[..n]);
        if let Err(e) = self.loaded.set_address(agent.policy_id, addr, &rule) {
            tracing::error!(error = %e, %addr, "cannot allow an address learned from DNS");
        }
    }

    /// Expired learned addresses go back to what the policy says about them.
    pub(super) fn expire_learned(&mut self) {
        let compiled = std::sync::Arc::clone(&self.correlator.policies.current);
        for (policy_id, addr) in self.exfil.learned.expired(Instant::now()) {
            let result = match longest_match(&compiled, policy_id, addr) {
                (true, Some(rule)) => self.loaded.set_address(policy_id, addr, &rule),
                _ => self.loaded.remove_address(policy_id, addr),
            };
            if let Err(e) = result {
                tracing::error!(error = %e, %addr, "cannot remove an expired learned address");
            }
            tracing::debug!(%addr, policy_id, "learned address expired");
        }
    }

    /// A removed cgroup: its DNS block and tunnel counts go with it.
    pub(super) fn forget_workload(&mut self, cgroup_id: u64) {
        if self.exfil.blocked.remove(&cgroup_id) {
            let _ = self.loaded.unblock_dns(cgroup_id);
        }
        for d in self.exfil.tunnels.values_mut() {
            d.forget_workload(cgroup_id);
        }
    }

    /// The rule an agent's `exfil` section stands for (`pick` says which), as verdicts name it.
    fn exfil_rule(&self, policy_id: u32, pick: fn(&ExfilEval) -> Option<u32>) -> Option<RuleInfo> {
        let compiled = self.correlator.policies.of(policy_id)?;
        compiled.rule(pick(&compiled.agent(policy_id)?.exfil)?).cloned()
    }

    fn emit_with_session(&mut self, mut v: Verdict) {
        if let Some(path) = &v.cgroup_path {
            v.session = self.sessions.of_cgroup(path).map(crate::sessions::Session::identity);
        }
        self.emit(&v);
    }
}

/// The compiled entry of the longest prefix containing `addr` for `policy_id`, and whether it
/// is exactly `addr`.
fn longest_match(c: &Compiled, policy_id: u32, addr: IpAddr) -> (bool, Option<NetRule>) {
    let be = policy_id.to_be_bytes();
    let (bits, full): (u128, u32) = match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    };
    let within = |key_addr: u128, len: u32| {
        let len = len.min(full);
        let shift = full - len;
        len == 0 || (bits >> shift) == (key_addr >> shift)
    };
    let best = match addr {
        IpAddr::V4(_) => c
            .net_v4
            .iter()
            .filter(|(len, k, _)| k.policy_id_be == be && within(u128::from(u32::from_be_bytes(k.addr)), len - 32))
            .max_by_key(|(len, ..)| *len)
            .map(|(len, _, r)| (*len - 32, *r)),
        IpAddr::V6(_) => c
            .net_v6
            .iter()
            .filter(|(len, k, _)| k.policy_id_be == be && within(u128::from_be_bytes(k.addr), len - 32))
            .max_by_key(|(len, ..)| *len)
            .map(|(len, _, r)| (*len - 32, *r)),
    };
    match best {
        Some((len, r)) => (len == full, Some(r)),
        None => (false, None),
    }
}

fn address(family: u32, bytes: [u8; 16]) -> IpAddr {
    if family == 2 {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        IpAddr::from(bytes)
    }
}

/// A header for events made where the kernel knows no task (`cgroup_skb`): the socket's
/// owner stands in, its cgroup is the workload's.
fn synthetic_header(kind: EventKind, decision: u32, boot_ns: u64, tgid: u32, policy_id: u32, cgroup_id: u64) -> EventHeader {
    let leaf = [0u8; guard_common::CGROUP_NAME_LEN];
    EventHeader {
        kind: kind as u32,
        decision,
        boot_ns,
        pid: tgid,
        tgid,
        ppid: 0,
        uid: 0,
        gid: 0,
        policy_id,
        cgroup_id,
        matched_cgroup_id: 0,
        parent_cgroup_id: 0,
        rule_id: guard_common::NO_RULE,
        // The cgroup path is resolved from the id alone (as for a moved-out process).
        flags: guard_common::EVENT_FLAG_MOVED_OUT,
        depth_below_match: u32::MAX,
        _pad: 0,
        cgroup_name: leaf,
    }
}

fn signal_kill(tgid: u32) -> bool {
    // SAFETY: sends a signal; no memory is involved.
    unsafe { libc::kill(tgid as i32, libc::SIGKILL) == 0 }
}

/// The absolute path an open named: relative ones against the thread's working directory (or
/// the directory `dirfd` refers to), read from /proc while the process lives. `..` and `.` are
/// folded lexically. `None` if the process is gone.
fn resolve(tgid: u32, tid: u32, dirfd: i32, name: &str) -> Option<String> {
    let joined = if name.starts_with('/') {
        PathBuf::from(name)
    } else {
        let base = if dirfd == AT_FDCWD {
            std::fs::read_link(format!("/proc/{tgid}/task/{tid}/cwd")).or_else(|_| std::fs::read_link(format!("/proc/{tgid}/cwd")))
        } else {
            std::fs::read_link(format!("/proc/{tgid}/fd/{dirfd}"))
        };
        base.ok()?.join(name)
    };
    let mut out = PathBuf::from("/");
    for c in Path::new(&joined).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Some(out.to_string_lossy().into_owned())
}
