//! Verdicts: what guard decided about one event, with everything a reader needs to act on it,
//! and its OCSF JSON form (Process Activity 1007 for execs, Network Activity 4001 for
//! connections, Application Lifecycle 6002 for policy reloads), plus a Detection Finding 2004
//! for what the policy stopped or held. `schemas/ocsf/` at the repository root has a JSON Schema
//! for each; the end-to-end tests validate every line the daemon prints against them.
use std::{net::IpAddr, sync::Arc};

use guard_common::Decision;
use serde_json::{Value, json};

use crate::{loader::tier, policy::compile::RuleInfo, proctable::Ancestor};

/// The OCSF version the objects follow. 1.4.0 rather than 1.3.0: audit mode reports what it
/// would have done as `action_id` 3 (Observed), `process.working_directory` is used, and a
/// refused socket has no destination (1.4 relaxed `dst_endpoint` of Network Activity to
/// "at least one of `src_endpoint`, `dst_endpoint`"); all three are 1.4 additions.
pub const OCSF_VERSION: &str = "1.4.0";

#[derive(Debug, Clone)]
pub struct Verdict {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub decision: Decision,
    /// `None` for a process outside every agent workload (reported with --observe-all-execs).
    pub agent: Option<String>,
    pub rule: Option<RuleInfo>,
    pub policy_hash: String,
    /// The generation of that policy (each load or reload is one; see loader/apply.rs), when
    /// the verdict comes from a kernel record or a reload.
    pub policy_generation: Option<u32>,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub cgroup_path: Option<String>,
    pub subject: Subject,
    /// The parent and its ancestors, nearest first, up to the launch.
    pub ancestry: Vec<Ancestor>,
    /// Something went wrong carrying out the decision (e.g. the kill signal failed).
    pub error: Option<&'static str>,
    /// The launch session (identity, labels, launching user), for workloads `launch` started:
    /// the session's own copy, shared by every verdict of the session.
    pub session: Option<Arc<Shared>>,
    /// A hold: its id, who decided and when, how long it took.
    pub hold: Option<Value>,
    /// Why, when it is not just the rule (e.g. "continued while held").
    pub reason: Option<String>,
    /// Exfiltration context: the sensitive read behind a refused connect, the DNS names an
    /// address was answered for, the numbers of a byte budget, a DNS tunnel shape.
    pub exfil: Option<Value>,
    /// A database client's statements: where they came from, the destructive one (masked on
    /// the way out, like everything), or why they could not all be seen.
    pub sql: Option<Value>,
}

/// What an exec verdict says about the new image.
#[derive(Debug, Clone, Default)]
pub struct ExecInfo {
    /// The filename passed to `execve`.
    pub filename: String,
    pub filename_truncated: bool,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    /// The working directory; `None` if unknown.
    pub cwd: Option<String>,
    pub euid: u32,
    /// The audit login uid, `None` if the task never logged in.
    pub loginuid: Option<u32>,
    pub comm: String,
    /// The executed file's (kernel `s_dev`, inode).
    pub identity: Option<(u32, u64)>,
}

#[derive(Debug, Clone)]
pub enum Subject {
    Exec(ExecInfo),
    /// A `connect()`, or with `sendmsg` a datagram sent to an address.
    Connect { addr: IpAddr, port: u16, protocol: u32, exe: Option<String>, sendmsg: bool },
    /// A raw or packet socket creation.
    Socket { family: u32, sock_type: u32, protocol: u32, exe: Option<String> },
    /// Traffic of a connection or a workload rather than one call: `operation` is
    /// `egress_budget` (bytes over budget to `addr`) or `dns_tunnel` (DNS to the server `addr`).
    Flow { addr: IpAddr, port: u16, protocol: u32, exe: Option<String>, operation: &'static str },
    /// A tagged process moved out of its agent's cgroups (by `pid`'s writer, the verdict's
    /// process): it stays under its policy.
    Moved { pid: u32, to: String, exe: Option<String> },
    /// A workload went past its deletion budget (`files.delete_budget`): the verdict's process
    /// made the deletion that went over. `deletions` is `unmapped.deletions` (count, budget,
    /// window, where).
    Deletions { exe: Option<String>, deletions: Value },
    /// The policy was (re)loaded, or a reload failed and the previous policy stays.
    Policy { source: String, error: Option<String>, previous_hash: Option<String>, warnings: Vec<String> },
    /// Events the kernel could not queue (the ring buffer was full) since the last such
    /// report: `lost` per kind; `totals` is the kernel's counter per kind (all of it, reported
    /// or not), `replaced` what generations replaced at start had dropped unreported.
    Lost { lost: Vec<(String, u64)>, totals: Vec<(String, u64)>, replaced: Vec<(String, u64)>, ring_buffer_bytes: u32 },
    /// A file call refused under a protected path (`files.protect`): `op` is `delete`,
    /// `rename`, `truncate`, `write` or `create`; `path` what it was refused on, `to` a
    /// rename's or link's other name; `detail` the system call, errno and how the path was
    /// resolved.
    File { op: &'static str, path: String, to: Option<String>, exe: Option<String>, detail: Value },
}

/// The host name, read once.
pub fn hostname() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most buf.len() bytes into buf.
        if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
            return String::new();
        }
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    })
}

/// Every name [`decision_name`] gives (what `tail --verdict` accepts).
pub const VERDICT_NAMES: [&str; 9] = ["allowed", "denied", "killed", "would-deny", "would-kill", "held", "audited", "evaluated", "would-hold"];

pub fn decision_name(d: Decision) -> &'static str {
    match d {
        Decision::Allowed => "allowed",
        Decision::Denied => "denied",
        Decision::Killed => "killed",
        Decision::WouldDeny => "would-deny",
        Decision::WouldKill => "would-kill",
        Decision::Held => "held",
        Decision::Audited => "audited",
        Decision::Evaluate => "evaluated",
        Decision::WouldHold => "would-hold",
    }
}

/// What an OCSF object's `action_id`, `disposition_id`, `severity_id` and `status_id` say
/// (with their captions), decided from the verdict.
struct Outcome {
    action: (u32, &'static str),
    disposition: (u32, &'static str),
    severity: (u32, &'static str),
    status: (u32, &'static str),
}

const PROCESS_ACTIVITY: (u32, &str, u32, &str) = (1007, "Process Activity", 1, "System Activity");
const NETWORK_ACTIVITY: (u32, &str, u32, &str) = (4001, "Network Activity", 4, "Network Activity");
const APPLICATION_LIFECYCLE: (u32, &str, u32, &str) = (6002, "Application Lifecycle", 6, "Application Activity");
const DETECTION_FINDING: (u32, &str, u32, &str) = (2004, "Detection Finding", 2, "Findings");
const FILE_SYSTEM_ACTIVITY: (u32, &str, u32, &str) = (1001, "File System Activity", 1, "System Activity");

impl Verdict {
    /// Whether a verdict of this decision comes with a Detection Finding: everything the policy
    /// stopped or held, and, in audit mode, what it would have stopped or held (informational:
    /// `is_alert` false). A failed policy reload is not a detection.
    pub fn has_finding(&self) -> bool {
        !matches!(self.subject, Subject::Policy { .. } | Subject::Lost { .. })
            && matches!(
                self.decision,
                Decision::Denied | Decision::Killed | Decision::Held | Decision::WouldDeny | Decision::WouldKill | Decision::WouldHold
            )
    }

    fn outcome(&self) -> Outcome {
        // OCSF 1.4 action_id: 1 Allowed, 2 Denied, 3 Observed, 99 Other (the caption then says
        // what). disposition_id: 1 Allowed, 2 Blocked, 14 Delayed (held), 15 Detected, 17 Logged
        // (audited), 27 Error. status_id: 1 Success, 2 Failure.
        let failed_reload = matches!(&self.subject, Subject::Policy { error: Some(_), .. });
        let lost = matches!(&self.subject, Subject::Lost { .. });
        let (action, disposition, severity, status) = match self.decision {
            _ if failed_reload => ((99, "Policy Rejected"), (27, "Error"), 4, (2, "Failure")),
            // Reporting failed, not enforcement: what the lost events' decisions were (the
            // kernel still made them) is unknown.
            _ if lost => ((0, "Unknown"), (0, "Unknown"), 4, (2, "Failure")),
            Decision::Allowed | Decision::Evaluate => ((1, "Allowed"), (1, "Allowed"), 1, (1, "Success")),
            Decision::Audited => ((1, "Allowed"), (17, "Logged"), 2, (1, "Success")),
            Decision::Denied | Decision::Killed => ((2, "Denied"), (2, "Blocked"), 4, (2, "Failure")),
            Decision::Held => ((99, "Held"), (14, "Delayed"), 3, (1, "Success")),
            Decision::WouldDeny | Decision::WouldKill | Decision::WouldHold => ((3, "Observed"), (15, "Detected"), 3, (1, "Success")),
        };
        Outcome { action, disposition, severity: (severity, severity_name(severity)), status }
    }

    fn metadata(&self) -> Value {
        json!({
            "version": OCSF_VERSION,
            "product": { "name": "guard", "vendor_name": "guard", "version": env!("CARGO_PKG_VERSION") },
            "profiles": ["host", "security_control"],
            "log_name": "verdicts",
        })
    }

    /// The OCSF object of this verdict: Process Activity (1007) for execs and processes moved
    /// out, Network Activity (4001) for connects, sends and sockets, Application Lifecycle
    /// (6002) for policy reloads. Attributes OCSF has no place for are under `unmapped`; absent
    /// values are left out of the mapped part (never `null`).
    pub fn to_ocsf(&self) -> Value {
        let o = self.outcome();
        let user = json!({ "uid": self.uid.to_string() });
        let rule = self.rule.as_ref().map(|r| json!({
            "id": r.id,
            "section": r.section,
            "action": r.action,
            "matcher": r.matcher,
            "message": r.message,
            "location": r.location,
        }));
        let unmapped = json!({
            "verdict": decision_name(self.decision),
            "agent": self.agent,
            "rule": rule,
            "tier": tier::current().name(),
            "policy_hash": self.policy_hash,
            "policy_generation": self.policy_generation,
            "cgroup": { "id": self.cgroup_id, "path": self.cgroup_path },
            "gid": self.gid,
            "error": self.error,
            "ancestry": self.ancestry.iter().map(|a| json!({ "pid": a.pid, "exe": a.exe })).collect::<Vec<_>>(),
            "session": self.session.as_deref().map(Shared::value),
            "hold": self.hold,
            "reason": self.reason,
            "exfil": self.exfil,
            "sql": self.sql,
        });
        let parent = json!({ "pid": self.ppid });
        let refused = matches!(self.decision, Decision::Denied | Decision::Killed);
        let device = device();
        // Fields every class shares; the class adds its own below.
        let common = |class: (u32, &str, u32, &str), activity: (u32, &str), unmapped: Value| {
            let (class_uid, class_name, category_uid, category_name) = class;
            json!({
                "class_uid": class_uid, "class_name": class_name,
                "category_uid": category_uid, "category_name": category_name,
                "activity_id": activity.0, "activity_name": activity.1,
                "type_uid": class_uid * 100 + activity.0, "type_name": format!("{class_name}: {}", activity.1),
                "time": self.time_ms,
                "severity_id": o.severity.0, "severity": o.severity.1,
                "status_id": o.status.0, "status": o.status.1,
                "action_id": o.action.0, "action": o.action.1,
                "disposition_id": o.disposition.0, "disposition": o.disposition.1,
                "metadata": self.metadata(),
                "device": device,
                "message": self.reason,
                "unmapped": unmapped,
            })
        };
        // The local end of a connection or send: this host.
        let local = json!({ "hostname": hostname() });
        let network_actor = |exe: &Option<String>| {
            json!({
                "process": { "pid": self.pid, "file": exe.as_deref().map(file), "parent_process": parent },
                "user": user,
            })
        };
        // A connect, a send or a flow to one destination.
        let outbound = |unmapped: Value, activity: (u32, &str), operation: &str, addr: IpAddr, port: u16, protocol: u32, exe: &Option<String>| {
            let unmapped = merge(unmapped, json!({ "operation": operation }));
            merge(common(NETWORK_ACTIVITY, activity, unmapped), json!({
                "actor": network_actor(exe),
                "src_endpoint": local,
                "dst_endpoint": { "ip": addr.to_string(), "port": port },
                "connection_info": {
                    "protocol_num": protocol, "protocol_name": protocol_name(protocol),
                    "protocol_ver_id": if addr.is_ipv4() { 4 } else { 6 },
                    "direction_id": 2, "direction": "Outbound",
                },
            }))
        };
        let value = match &self.subject {
            Subject::Exec(e) => {
                let unmapped = merge(unmapped, json!({
                    "filename_truncated": e.filename_truncated,
                    "argv": e.argv,
                    "argv_truncated": e.argv_truncated,
                    "euid": e.euid,
                    "loginuid": e.loginuid,
                    "exe_identity": e.identity.map(|(dev, ino)| json!({ "dev": dev, "ino": ino })),
                }));
                merge(common(PROCESS_ACTIVITY, (1, "Launch"), unmapped), json!({
                    "actor": { "process": parent, "user": user },
                    "process": {
                        "pid": self.pid,
                        "name": e.comm,
                        "cmd_line": e.argv.join(" "),
                        "working_directory": e.cwd,
                        "file": file(&e.filename),
                        "parent_process": parent,
                        "user": user,
                    },
                }))
            }
            Subject::Connect { addr, port, protocol, exe, sendmsg } => {
                // Refuse when refused, else Open (connect) or Traffic (send).
                let activity = match (refused, sendmsg) {
                    (true, _) => (5, "Refuse"),
                    (false, false) => (1, "Open"),
                    (false, true) => (6, "Traffic"),
                };
                outbound(unmapped, activity, if *sendmsg { "sendmsg" } else { "connect" }, *addr, *port, *protocol, exe)
            }
            Subject::Flow { addr, port, protocol, exe, operation } => {
                let activity = if refused { (5, "Refuse") } else { (6, "Traffic") };
                outbound(unmapped, activity, operation, *addr, *port, *protocol, exe)
            }
            Subject::Moved { pid, to, exe } => {
                let unmapped = merge(unmapped, json!({
                    "operation": "moved_out",
                    "moved": { "pid": pid, "to": to, "kept_policy": true },
                }));
                merge(common(PROCESS_ACTIVITY, (99, "Move Out"), unmapped), json!({
                    "actor": { "process": { "pid": self.pid }, "user": user },
                    "process": { "pid": pid, "file": exe.as_deref().map(file) },
                }))
            }
            Subject::Deletions { exe, deletions } => {
                let unmapped = merge(unmapped, json!({ "operation": "delete_budget", "deletions": deletions }));
                merge(common(PROCESS_ACTIVITY, (99, "Bulk Delete"), unmapped), json!({
                    "actor": { "process": { "pid": self.pid }, "user": user },
                    "process": { "pid": self.pid, "file": exe.as_deref().map(file) },
                }))
            }
            Subject::Policy { source, error, previous_hash, warnings } => {
                let unmapped = merge(unmapped, json!({
                    "operation": "policy_load",
                    "policy": { "source": source, "error": error, "previous_hash": previous_hash, "warnings": warnings },
                }));
                merge(common(APPLICATION_LIFECYCLE, (8, "Update"), unmapped), json!({
                    "app": { "name": "guard", "vendor_name": "guard", "version": env!("CARGO_PKG_VERSION") },
                    "actor": { "process": { "pid": self.pid }, "user": user },
                }))
            }
            Subject::Lost { lost, totals, replaced, ring_buffer_bytes } => {
                let counts = |c: &[(String, u64)]| c.iter().map(|(k, n)| (k.clone(), json!(n))).collect::<serde_json::Map<_, _>>();
                let unmapped = merge(unmapped, json!({
                    "operation": "events_lost",
                    "lost": {
                        "events": counts(lost),
                        "total": lost.iter().map(|(_, n)| n).sum::<u64>(),
                        "kernel_counters": counts(totals),
                        "replaced_generations": counts(replaced),
                        "ring_buffer_bytes": ring_buffer_bytes,
                        "cause": "ring buffer full",
                    },
                }));
                merge(common(APPLICATION_LIFECYCLE, (99, "Events Lost"), unmapped), json!({
                    "app": { "name": "guard", "vendor_name": "guard", "version": env!("CARGO_PKG_VERSION") },
                    "actor": { "process": { "pid": self.pid }, "user": user },
                }))
            }
            Subject::File { op, path, to, exe, detail } => {
                // OCSF 1001 activities: 1 Create, 3 Update, 4 Delete, 5 Rename, 14 Open.
                let activity = match *op {
                    "open" => (14, "Open"),
                    "delete" => (4, "Delete"),
                    "rename" => (5, "Rename"),
                    "create" => (1, "Create"),
                    _ => (3, "Update"),
                };
                let unmapped = merge(unmapped, json!({ "operation": "file", "file_op": merge(json!({ "op": op, "path": path, "to": to }), detail.clone()) }));
                merge(common(FILE_SYSTEM_ACTIVITY, activity, unmapped), json!({
                    "actor": { "process": { "pid": self.pid, "file": exe.as_deref().map(file), "parent_process": parent }, "user": user },
                    "file": any_file(path),
                    "file_result": to.as_deref().map(any_file),
                }))
            }
            Subject::Socket { family, sock_type, protocol, exe } => {
                // Refuse: the socket was never created.
                let activity = if refused { (5, "Refuse") } else { (99, "Create Socket") };
                let unmapped = merge(unmapped, json!({
                    "operation": "socket",
                    "socket": { "family": family_name(*family), "type": sock_type_name(*sock_type) },
                }));
                merge(common(NETWORK_ACTIVITY, activity, unmapped), json!({
                    "actor": network_actor(exe),
                    "src_endpoint": local,
                    "connection_info": {
                        "protocol_num": protocol, "protocol_name": protocol_name(*protocol),
                        "direction_id": 0, "direction": "Unknown",
                    },
                }))
            }
        };
        without_nulls_outside_unmapped(value)
    }

    /// The Detection Finding (2004) that goes with this verdict's activity object `base` (as
    /// emitted: numbered with `metadata.sequence`), for what [`Verdict::has_finding`] says.
    /// It names the activity (`finding_info.related_events[0].uid` and
    /// `unmapped.activity_sequence` are its sequence number), carries its actor, process and
    /// endpoints as evidence, and the same `unmapped` block. `metadata.sequence` is left for the
    /// emitter to number. An unnumbered `base` gives a finding without the link.
    pub fn finding(&self, base: &Value) -> Option<Value> {
        if !self.has_finding() || !base.is_object() {
            return None;
        }
        let o = self.outcome();
        let sequence = base.pointer("/metadata/sequence").and_then(Value::as_u64);
        let would = matches!(self.decision, Decision::WouldDeny | Decision::WouldKill | Decision::WouldHold);
        let (title, kind) = self.finding_title();
        let mut desc = Vec::new();
        if let Some(a) = &self.agent {
            desc.push(format!("agent {a}"));
        }
        if let Some(r) = &self.rule {
            desc.push(format!("rule `{}` ({}, {})", r.matcher, r.section, r.location));
            if let Some(m) = &r.message {
                desc.push(m.clone());
            }
        } else {
            desc.push("no rule matched: the policy's default decided".to_owned());
        }
        if let Some(reason) = &self.reason {
            desc.push(reason.clone());
        }
        if would {
            desc.push("audit mode: nothing was stopped".to_owned());
        }
        let analytic = match &self.rule {
            Some(r) => json!({
                "type_id": 1, "type": "Rule",
                "uid": r.id.to_string(), "name": r.matcher, "category": r.section, "desc": r.message,
            }),
            None => json!({ "type_id": 99, "type": "Policy Default", "name": format!("{kind} default") }),
        };
        let class_uid = base.get("class_uid").and_then(Value::as_u64);
        let type_uid = base.get("type_uid").and_then(Value::as_u64);
        let related = sequence.map(|seq| json!([{
            "uid": seq.to_string(),
            "type_uid": type_uid,
            "type": base.get("type_name"),
            "product_uid": "guard",
        }]));
        let uid = match sequence {
            Some(seq) => format!("guard:{}:{}:{seq}", hostname(), self.time_ms),
            None => format!("guard:{}:{}:{}", hostname(), self.time_ms, self.pid),
        };
        // Evidence: what the activity says about who did what, to what.
        let mut evidence = serde_json::Map::new();
        for key in ["actor", "process", "src_endpoint", "dst_endpoint", "connection_info", "device"] {
            if let Some(v) = base.get(key) {
                evidence.insert(key.to_owned(), v.clone());
            }
        }
        if let Some(f) = base.get("file").or_else(|| base.pointer("/process/file")) {
            evidence.insert("file".into(), f.clone());
        }
        let mut unmapped = base.get("unmapped").cloned().unwrap_or_else(|| json!({}));
        if let Some(u) = unmapped.as_object_mut() {
            u.insert("activity_sequence".into(), json!(sequence));
            u.insert("activity_class_uid".into(), json!(class_uid));
            u.insert("activity_type_uid".into(), json!(type_uid));
        }
        let (class_uid, class_name, category_uid, category_name) = DETECTION_FINDING;
        let finding = json!({
            "class_uid": class_uid, "class_name": class_name,
            "category_uid": category_uid, "category_name": category_name,
            "activity_id": 1, "activity_name": "Create",
            "type_uid": class_uid * 100 + 1, "type_name": format!("{class_name}: Create"),
            "time": self.time_ms,
            "severity_id": o.severity.0, "severity": o.severity.1,
            // Finding status: New (nobody has reviewed it yet).
            "status_id": 1, "status": "New",
            "action_id": o.action.0, "action": o.action.1,
            "disposition_id": o.disposition.0, "disposition": o.disposition.1,
            "is_alert": !would,
            "confidence_id": 3, "confidence": "High",
            "metadata": self.metadata(),
            "device": device(),
            "message": title,
            "finding_info": {
                "uid": uid,
                "title": title,
                "desc": desc.join("; "),
                "types": ["Policy Violation", self.rule.as_ref().map_or(kind, |r| r.section)],
                "created_time": self.time_ms,
                "analytic": analytic,
                "related_events": related,
                "related_events_count": sequence.map(|_| 1),
                "product": { "name": "guard", "vendor_name": "guard", "version": env!("CARGO_PKG_VERSION") },
            },
            "evidences": [Value::Object(evidence)],
            "unmapped": unmapped,
        });
        Some(without_nulls_outside_unmapped(finding))
    }

    /// A one-line title for this verdict's finding, and what kind of thing it is about.
    fn finding_title(&self) -> (String, &'static str) {
        let (done, suffix) = match self.decision {
            Decision::Killed => ("Killed", ""),
            Decision::Denied => ("Denied", ""),
            Decision::Held => ("Held for approval", ""),
            Decision::WouldKill => ("Would have killed", " (audit mode)"),
            Decision::WouldDeny => ("Would have denied", " (audit mode)"),
            Decision::WouldHold => ("Would have held", " (audit mode)"),
            _ => ("Reported", ""),
        };
        match &self.subject {
            Subject::Exec(e) => (format!("{done}: exec of {}{suffix}", e.filename), "exec"),
            Subject::Connect { addr, port, protocol, sendmsg, .. } => {
                let what = if *sendmsg { "datagram to" } else { "connection to" };
                let at = if addr.is_ipv6() { format!("[{addr}]:{port}") } else { format!("{addr}:{port}") };
                (format!("{done}: {what} {at}/{}{suffix}", protocol_name(*protocol)), "network")
            }
            Subject::Socket { family, sock_type, .. } => {
                (format!("{done}: {} {} socket{suffix}", family_name(*family), sock_type_name(*sock_type)), "network")
            }
            Subject::Flow { addr, port, operation, .. } => {
                let at = if addr.is_ipv6() { format!("[{addr}]:{port}") } else { format!("{addr}:{port}") };
                let what = if *operation == "dns_tunnel" { "DNS of a workload sending tunnel-shaped queries to" } else { "traffic over its egress budget to" };
                (format!("{done}: {what} {at}{suffix}"), "exfil")
            }
            Subject::Moved { pid, to, .. } => (format!("{done}: process {pid} moved out to {to}{suffix}"), "process"),
            Subject::Deletions { deletions, .. } => {
                let n = |k: &str| deletions.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                (format!("{done}: process {} deleted {} entries within {}s, over its budget of {}{suffix}", self.pid, n("count"), n("per_s"), n("budget")), "files")
            }
            Subject::Policy { source, .. } => (format!("{done}: policy {source}{suffix}"), "policy"),
            Subject::Lost { .. } => (format!("{done}: events lost{suffix}"), "events"),
            Subject::File { op, path, .. } => (format!("{done}: {op} of {path}{suffix}"), "file"),
        }
    }
}

/// This host, as OCSF's `device` (type unknown: guard cannot tell a server from a laptop).
fn device() -> Value {
    json!({
        "hostname": hostname(),
        "type_id": 0, "type": "Unknown",
        "os": { "name": "Linux", "type_id": 200, "type": "Linux" },
    })
}

/// An OCSF `file` object for an executable path (`type_id` 1: Regular File).
fn file(path: &str) -> Value {
    let name = path.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or(path);
    json!({ "path": path, "name": name, "type_id": 1, "type": "Regular File" })
}

/// An OCSF `file` object for a path whose type is not known (`type_id` 0: Unknown).
fn any_file(path: &str) -> Value {
    let name = path.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or(path);
    json!({ "path": path, "name": name, "type_id": 0, "type": "Unknown" })
}

/// OCSF leaves out attributes it has no value for: every `null` in the mapped part is removed
/// (recursively). `unmapped` is guard's own shape and keeps its `null`s.
fn without_nulls_outside_unmapped(mut v: Value) -> Value {
    fn prune(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.retain(|_, x| !x.is_null());
                map.values_mut().for_each(prune);
            }
            Value::Array(items) => items.iter_mut().for_each(prune),
            _ => {}
        }
    }
    if let Value::Object(map) = &mut v {
        map.retain(|_, x| !x.is_null());
        for (k, x) in map.iter_mut() {
            if k != "unmapped" {
                prune(x);
            }
        }
    }
    v
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

mod encode;
mod escape;
mod marks;
mod names;
mod shared;
pub use marks::{Mark, Marks};
pub use shared::Shared;
use names::{family_name, protocol_name, severity_name, sock_type_name};

#[cfg(test)]
mod tests;
