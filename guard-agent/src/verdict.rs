//! Verdicts: what guard decided about one event, with everything a reader needs to act on it,
//! and its OCSF-shaped JSON form (Process Activity 1007 for execs, Network Activity 4001 for
//! connections).
use std::net::IpAddr;

use guard_common::Decision;
use serde_json::{Value, json};

use crate::{loader::TIER, policy::compile::RuleInfo, proctable::Ancestor};

const OCSF_VERSION: &str = "1.3.0";

#[derive(Debug, Clone)]
pub struct Verdict {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub decision: Decision,
    /// `None` for a process outside every agent workload (reported with --observe-all-execs).
    pub agent: Option<String>,
    pub rule: Option<RuleInfo>,
    pub policy_hash: String,
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
    /// The launch session (identity, labels, launching user), for workloads `launch` started.
    pub session: Option<Value>,
    /// A hold: its id, who decided and when, how long it took.
    pub hold: Option<Value>,
    /// Why, when it is not just the rule (e.g. "continued while held").
    pub reason: Option<String>,
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
    /// A tagged process moved out of its agent's cgroups (by `pid`'s writer, the verdict's
    /// process): it stays under its policy.
    Moved { pid: u32, to: String, exe: Option<String> },
    /// The policy was (re)loaded, or a reload failed and the previous policy stays.
    Policy { source: String, error: Option<String>, previous_hash: Option<String>, warnings: Vec<String> },
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

fn protocol_name(p: u32) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        58 => "ipv6-icmp",
        _ => "other",
    }
}

impl Verdict {
    pub fn to_ocsf(&self) -> Value {
        // OCSF action_id: 1 Allowed, 2 Denied, 3 Observed. disposition_id: 1 Allowed,
        // 2 Blocked, 15 Detected. severity_id: 1 Informational, 3 Medium, 4 High.
        // disposition_id 14 Delayed (held), 17 Logged (audited).
        let failed_reload = matches!(&self.subject, Subject::Policy { error: Some(_), .. });
        let (action_id, disposition_id, severity_id, status_id) = match self.decision {
            _ if failed_reload => (99, 27, 4, 2),
            Decision::Allowed | Decision::Evaluate => (1, 1, 1, 1),
            Decision::Audited => (1, 17, 2, 1),
            Decision::Denied | Decision::Killed => (2, 2, 4, 2),
            Decision::Held => (99, 14, 3, 1),
            Decision::WouldDeny | Decision::WouldKill | Decision::WouldHold => (3, 15, 3, 1),
        };
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
            "tier": TIER,
            "policy_hash": self.policy_hash,
            "cgroup": { "id": self.cgroup_id, "path": self.cgroup_path },
            "gid": self.gid,
            "error": self.error,
            "ancestry": self.ancestry.iter().map(|a| json!({ "pid": a.pid, "exe": a.exe })).collect::<Vec<_>>(),
            "session": self.session,
            "hold": self.hold,
            "reason": self.reason,
        });
        let metadata = json!({
            "version": OCSF_VERSION,
            "product": { "name": "guard", "vendor_name": "guard", "version": env!("CARGO_PKG_VERSION") },
        });
        let parent = json!({ "pid": self.ppid });
        let refused = matches!(self.decision, Decision::Denied | Decision::Killed);
        // Fields every class shares; the class adds its own below.
        let common = |class: (u32, &str, u32, &str), activity: (u32, &str), unmapped: Value| {
            let (class_uid, class_name, category_uid, category_name) = class;
            json!({
                "class_uid": class_uid, "class_name": class_name,
                "category_uid": category_uid, "category_name": category_name,
                "activity_id": activity.0, "activity_name": activity.1, "type_uid": class_uid * 100 + activity.0,
                "time": self.time_ms, "severity_id": severity_id, "status_id": status_id,
                "action_id": action_id, "disposition_id": disposition_id,
                "metadata": metadata,
                "device": { "hostname": hostname(), "type_id": 1 },
                "message": self.reason,
                "unmapped": unmapped,
            })
        };
        const PROCESS_ACTIVITY: (u32, &str, u32, &str) = (1007, "Process Activity", 1, "System Activity");
        const NETWORK_ACTIVITY: (u32, &str, u32, &str) = (4001, "Network Activity", 4, "Network Activity");
        const APPLICATION_LIFECYCLE: (u32, &str, u32, &str) = (6002, "Application Lifecycle", 6, "Application Activity");
        let network_actor = |exe: &Option<String>| {
            json!({
                "process": { "pid": self.pid, "file": exe.as_ref().map(|p| json!({ "path": p })), "parent_process": parent },
                "user": user,
            })
        };
        match &self.subject {
            Subject::Exec(e) => {
                let name = e.filename.rsplit('/').next().unwrap_or(&e.filename);
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
                        "file": { "path": e.filename, "name": name, "type_id": 1 },
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
                let unmapped = merge(unmapped, json!({ "operation": if *sendmsg { "sendmsg" } else { "connect" } }));
                merge(common(NETWORK_ACTIVITY, activity, unmapped), json!({
                    "actor": network_actor(exe),
                    "dst_endpoint": { "ip": addr.to_string(), "port": port },
                    "connection_info": {
                        "protocol_num": protocol, "protocol_name": protocol_name(*protocol),
                        "direction_id": 2, "direction": "Outbound",
                    },
                }))
            }
            Subject::Moved { pid, to, exe } => {
                let unmapped = merge(unmapped, json!({
                    "operation": "moved_out",
                    "moved": { "pid": pid, "to": to, "kept_policy": true },
                }));
                merge(common(PROCESS_ACTIVITY, (99, "Other"), unmapped), json!({
                    "actor": { "process": { "pid": self.pid }, "user": user },
                    "process": { "pid": pid, "file": exe.as_ref().map(|p| json!({ "path": p })) },
                }))
            }
            Subject::Policy { source, error, previous_hash, warnings } => {
                let unmapped = merge(unmapped, json!({
                    "operation": "policy_load",
                    "policy": { "source": source, "error": error, "previous_hash": previous_hash, "warnings": warnings },
                }));
                merge(common(APPLICATION_LIFECYCLE, (8, "Update"), unmapped), json!({
                    "app": { "name": "guard", "vendor_name": "guard", "version": env!("CARGO_PKG_VERSION") },
                }))
            }
            Subject::Socket { family, sock_type, protocol, exe } => {
                // Refuse: the socket was never created.
                let activity = if refused { (5, "Refuse") } else { (99, "Other") };
                let unmapped = merge(unmapped, json!({
                    "operation": "socket",
                    "socket": { "family": family_name(*family), "type": sock_type_name(*sock_type) },
                }));
                merge(common(NETWORK_ACTIVITY, activity, unmapped), json!({
                    "actor": network_actor(exe),
                    "connection_info": { "protocol_num": protocol, "protocol_name": protocol_name(*protocol) },
                }))
            }
        }
    }
}

fn family_name(f: u32) -> &'static str {
    match f {
        2 => "inet",
        10 => "inet6",
        17 => "packet",
        _ => "other",
    }
}

fn sock_type_name(t: u32) -> &'static str {
    match t {
        1 => "stream",
        2 => "dgram",
        3 => "raw",
        _ => "other",
    }
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(decision: Decision, subject: Subject) -> Verdict {
        Verdict {
            time_ms: 1_700_000_000_000,
            decision,
            agent: Some("a".into()),
            rule: Some(RuleInfo { id: 3, section: "exec.deny", action: "kill", matcher: "basename: shred".into(), message: None, location: "p.yaml:9".into() }),
            policy_hash: "ab".into(),
            pid: 10,
            ppid: 9,
            uid: 0,
            gid: 0,
            cgroup_id: 77,
            cgroup_path: Some("/guard/a/s1".into()),
            subject,
            ancestry: vec![Ancestor { pid: 9, exe: "/bin/sh".into() }],
            error: None,
            session: None,
            hold: None,
            reason: None,
        }
    }

    #[test]
    fn exec_killed_is_process_activity() {
        let exec = ExecInfo { filename: "/usr/bin/shred".into(), argv: vec!["shred".into(), "-u".into()], cwd: Some("/tmp".into()), ..Default::default() };
        let v = verdict(Decision::Killed, Subject::Exec(exec)).to_ocsf();
        assert_eq!(v["process"]["cmd_line"], "shred -u");
        assert_eq!(v["process"]["working_directory"], "/tmp");
        assert_eq!(v["class_uid"], 1007);
        assert_eq!(v["type_uid"], 100701);
        assert_eq!(v["process"]["file"]["name"], "shred");
        assert_eq!(v["process"]["parent_process"]["pid"], 9);
        assert_eq!(v["disposition_id"], 2);
        assert_eq!(v["unmapped"]["verdict"], "killed");
        assert_eq!(v["unmapped"]["rule"]["matcher"], "basename: shred");
        assert_eq!(v["unmapped"]["cgroup"]["path"], "/guard/a/s1");
        assert_eq!(v["unmapped"]["ancestry"][0]["exe"], "/bin/sh");
    }

    #[test]
    fn connect_denied_is_network_refuse() {
        let v = verdict(Decision::Denied, Subject::Connect { addr: "::1".parse().unwrap(), port: 22, protocol: 6, exe: None, sendmsg: false }).to_ocsf();
        assert_eq!(v["class_uid"], 4001);
        assert_eq!(v["type_uid"], 400105);
        assert_eq!(v["dst_endpoint"]["ip"], "::1");
        assert_eq!(v["connection_info"]["protocol_name"], "tcp");
        assert_eq!(v["action_id"], 2);
    }
}
