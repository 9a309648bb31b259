//! The OCSF line of an exec or connect verdict written straight from the typed [`Verdict`],
//! masked on the way, into a reused buffer: no `Value` tree, no per-node allocation. These are
//! the verdicts of nearly every event; the others (and containers' verdicts, which carry
//! container objects) go through [`Verdict::to_ocsf`] and [`Masker::mask_value`].
//!
//! The line is byte for byte what `to_ocsf`, `mask_value`, numbering and `Value::to_string`
//! give (`verdict::tests::encode`): object keys in byte order (serde_json's map is a
//! `BTreeMap`), serde_json's escapes, `null`s left out outside `unmapped`. That form is also the
//! audit log's canonical JSON (sorted keys, shortest escapes), so the line is the audit body
//! as it is.
use std::net::IpAddr;

use guard_common::Decision;
use serde_json::Value;

use super::{Mark, Marks, NETWORK_ACTIVITY, OCSF_VERSION, PROCESS_ACTIVITY, Shared, Subject, Verdict, decision_name, hostname, protocol_name};
use super::escape::push_escaped;
use crate::{loader::tier, mask::Masker};

impl Verdict {
    /// Whether [`Verdict::write_line`] writes this verdict's activity (exec and connect; not
    /// with a container, whose objects the general path adds).
    pub fn has_fast_line(&self) -> bool {
        matches!(self.subject, Subject::Exec(_) | Subject::Connect { .. })
    }

    /// Writes this verdict's masked OCSF activity, numbered `sequence`, as one JSON line (no
    /// newline) into `out` (cleared first), and returns where the values the network sinks
    /// read sit in it. Only for [`Verdict::has_fast_line`]; `None` (and nothing written) for the
    /// other subjects.
    pub fn write_line(&self, masker: &Masker, sequence: u64, out: &mut String) -> Option<Marks> {
        out.clear();
        let mut w = Writer { out, masker };
        let mut m = Marks::default();
        match &self.subject {
            Subject::Exec(_) => self.write_exec(&mut w, sequence, &mut m),
            Subject::Connect { addr, port, protocol, exe, sendmsg } => self.write_connect(&mut w, sequence, (*addr, *port, *protocol, exe.as_deref(), *sendmsg), &mut m),
            _ => return None,
        }
        m.set_len(out.len());
        Some(m)
    }

    fn write_exec(&self, w: &mut Writer<'_>, sequence: u64, m: &mut Marks) {
        let Subject::Exec(e) = &self.subject else { return };
        let (argv_edits, cmd_line) = w.masker.mask_exec_argv(&e.argv);
        let mut o = w.object();
        self.write_outcome_head(&mut o, (1, "Launch"));
        o.key("actor").object_with(|a| {
            a.key("process").object_with(|p| m.set(Mark::ActorPid, p.marked("pid", |v| v.u64(self.ppid.into()))));
            a.key("user").object_with(|u| self.write_uid(u));
        });
        self.write_class(&mut o, PROCESS_ACTIVITY, m);
        write_device(&mut o);
        self.write_outcome_mid(&mut o);
        if let Some(r) = &self.reason {
            o.key("message").masked(r);
        }
        write_metadata(&mut o, sequence, m);
        o.key("process").object_with(|p| {
            match &cmd_line {
                Some(c) => p.key("cmd_line").string(c),
                None => p.key("cmd_line").joined(&e.argv),
            }
            p.key("file").object_with(|f| write_file(f, &e.filename, 1, "Regular File"));
            p.key("name").masked(&e.comm);
            p.key("parent_process").object_with(|p| p.key("pid").u64(self.ppid.into()));
            m.set(Mark::Pid, p.marked("pid", |v| v.u64(self.pid.into())));
            p.key("user").object_with(|u| self.write_uid(u));
            if let Some(cwd) = &e.cwd {
                p.key("working_directory").masked(cwd);
            }
        });
        self.write_outcome_tail(&mut o, PROCESS_ACTIVITY, (1, "Launch"), m);
        o.key("unmapped").object_with(|u| {
            self.write_unmapped_head(u, m);
            u.key("argv").array_with(|a| {
                let mut edits = argv_edits.iter().peekable();
                for (i, arg) in e.argv.iter().enumerate() {
                    match edits.peek() {
                        Some((j, masked)) if *j == i => {
                            a.item().string(masked);
                            edits.next();
                        }
                        _ => a.item().string(arg),
                    }
                }
            });
            u.key("argv_truncated").bool(e.argv_truncated);
            self.write_unmapped_cgroup(u);
            u.key("euid").u64(e.euid.into());
            match e.identity {
                Some((dev, ino)) => u.key("exe_identity").object_with(|i| {
                    i.key("dev").u64(dev.into());
                    i.key("ino").u64(ino);
                }),
                None => u.key("exe_identity").null(),
            }
            u.key("exfil").free(self.exfil.as_ref());
            u.key("filename_truncated").bool(e.filename_truncated);
            u.key("gid").u64(self.gid.into());
            u.key("hold").free(self.hold.as_ref());
            match e.loginuid {
                Some(l) => u.key("loginuid").u64(l.into()),
                None => u.key("loginuid").null(),
            }
            self.write_unmapped_tail(u, m);
        });
    }

    /// `connect`: the fields of `Subject::Connect`.
    fn write_connect(&self, w: &mut Writer<'_>, sequence: u64, connect: (IpAddr, u16, u32, Option<&str>, bool), m: &mut Marks) {
        let (addr, port, protocol, exe, sendmsg) = connect;
        let refused = matches!(self.decision, Decision::Denied | Decision::Killed);
        let activity = match (refused, sendmsg) {
            (true, _) => (5, "Refuse"),
            (false, false) => (1, "Open"),
            (false, true) => (6, "Traffic"),
        };
        let mut o = w.object();
        self.write_outcome_head(&mut o, activity);
        o.key("actor").object_with(|a| {
            a.key("process").object_with(|p| {
                if let Some(exe) = exe {
                    p.key("file").object_with(|f| write_file(f, exe, 1, "Regular File"));
                }
                p.key("parent_process").object_with(|p| p.key("pid").u64(self.ppid.into()));
                m.set(Mark::ActorPid, p.marked("pid", |v| v.u64(self.pid.into())));
            });
            a.key("user").object_with(|u| self.write_uid(u));
        });
        self.write_class(&mut o, NETWORK_ACTIVITY, m);
        o.key("connection_info").object_with(|c| {
            c.key("direction").str("Outbound");
            c.key("direction_id").u64(2);
            c.key("protocol_name").masked(protocol_name(protocol));
            c.key("protocol_num").u64(protocol.into());
            c.key("protocol_ver_id").u64(if addr.is_ipv4() { 4 } else { 6 });
        });
        write_device(&mut o);
        self.write_outcome_mid(&mut o);
        o.key("dst_endpoint").object_with(|d| {
            d.key("ip").masked(&addr.to_string());
            d.key("port").u64(port.into());
        });
        if let Some(r) = &self.reason {
            o.key("message").masked(r);
        }
        write_metadata(&mut o, sequence, m);
        let severity = self.outcome().severity;
        o.key("severity").str(severity.1);
        o.key("severity_id").u64(severity.0.into());
        o.key("src_endpoint").object_with(|s| s.key("hostname").masked(hostname()));
        self.write_status_time_type(&mut o, NETWORK_ACTIVITY, activity, m);
        o.key("unmapped").object_with(|u| {
            self.write_unmapped_head(u, m);
            self.write_unmapped_cgroup(u);
            u.key("exfil").free(self.exfil.as_ref());
            u.key("gid").u64(self.gid.into());
            u.key("hold").free(self.hold.as_ref());
            u.key("operation").str(if sendmsg { "sendmsg" } else { "connect" });
            self.write_unmapped_tail(u, m);
        });
    }

    /// `action`, `action_id`, `activity_id`, `activity_name`.
    fn write_outcome_head(&self, o: &mut Obj<'_, '_>, activity: (u32, &'static str)) {
        let action = self.outcome().action;
        o.key("action").str(action.1);
        o.key("action_id").u64(action.0.into());
        o.key("activity_id").u64(activity.0.into());
        o.key("activity_name").str(activity.1);
    }

    /// `category_name`, `category_uid`, `class_name`, `class_uid`.
    fn write_class(&self, o: &mut Obj<'_, '_>, class: (u32, &'static str, u32, &'static str), m: &mut Marks) {
        let (class_uid, class_name, category_uid, category_name) = class;
        o.key("category_name").str(category_name);
        o.key("category_uid").u64(category_uid.into());
        o.key("class_name").str(class_name);
        m.set(Mark::ClassUid, o.marked("class_uid", |v| v.u64(class_uid.into())));
    }

    /// `disposition`, `disposition_id`.
    fn write_outcome_mid(&self, o: &mut Obj<'_, '_>) {
        let disposition = self.outcome().disposition;
        o.key("disposition").str(disposition.1);
        o.key("disposition_id").u64(disposition.0.into());
    }

    /// After `process` (exec): `severity`, `severity_id`, then status, time, type.
    fn write_outcome_tail(&self, o: &mut Obj<'_, '_>, class: (u32, &'static str, u32, &'static str), activity: (u32, &'static str), m: &mut Marks) {
        let severity = self.outcome().severity;
        o.key("severity").str(severity.1);
        o.key("severity_id").u64(severity.0.into());
        self.write_status_time_type(o, class, activity, m);
    }

    /// `status`, `status_id`, `time`, `type_name`, `type_uid`.
    fn write_status_time_type(&self, o: &mut Obj<'_, '_>, class: (u32, &'static str, u32, &'static str), activity: (u32, &'static str), m: &mut Marks) {
        let status = self.outcome().status;
        o.key("status").str(status.1);
        o.key("status_id").u64(status.0.into());
        m.set(Mark::Time, o.marked("time", |v| v.u64(self.time_ms)));
        let (class_uid, class_name, _, _) = class;
        let w = o.key("type_name");
        w.out.push('"');
        push_escaped(w.out, class_name);
        w.out.push_str(": ");
        push_escaped(w.out, activity.1);
        w.out.push('"');
        o.key("type_uid").u64(u64::from(class_uid) * 100 + u64::from(activity.0));
    }

    fn write_uid(&self, u: &mut Obj<'_, '_>) {
        let w = u.key("uid");
        w.out.push('"');
        push_u64(w.out, self.uid.into());
        w.out.push('"');
    }

    /// `agent`, `ancestry`.
    fn write_unmapped_head(&self, u: &mut Obj<'_, '_>, m: &mut Marks) {
        m.set(Mark::Agent, u.marked("agent", |v| v.opt_masked(self.agent.as_deref())));
        u.key("ancestry").array_with(|a| {
            for anc in &self.ancestry {
                a.item().object_with(|x| {
                    x.key("exe").masked(&anc.exe);
                    x.key("pid").u64(anc.pid.into());
                });
            }
        });
    }

    /// `cgroup`, `error`.
    fn write_unmapped_cgroup(&self, u: &mut Obj<'_, '_>) {
        u.key("cgroup").object_with(|c| {
            c.key("id").u64(self.cgroup_id);
            c.key("path").opt_masked(self.cgroup_path.as_deref());
        });
        u.key("error").opt_masked(self.error);
    }

    /// `policy_generation` to `verdict`.
    fn write_unmapped_tail(&self, u: &mut Obj<'_, '_>, m: &mut Marks) {
        match self.policy_generation {
            Some(g) => u.key("policy_generation").u64(g.into()),
            None => u.key("policy_generation").null(),
        }
        u.key("policy_hash").masked(&self.policy_hash);
        u.key("reason").opt_masked(self.reason.as_deref());
        match &self.rule {
            Some(r) => u.key("rule").object_with(|x| {
                x.key("action").masked(r.action);
                m.set(Mark::RuleId, x.marked("id", |v| v.u64(r.id.into())));
                x.key("location").masked(&r.location);
                x.key("matcher").masked(&r.matcher);
                x.key("message").opt_masked(r.message.as_deref());
                x.key("section").masked(r.section);
            }),
            None => u.key("rule").null(),
        }
        u.key("session").shared(self.session.as_deref());
        u.key("sql").free(self.sql.as_ref());
        u.key("tier").masked(tier::current().name());
        m.set(Mark::Verdict, u.marked("verdict", |v| v.masked(decision_name(self.decision))));
    }
}

/// `metadata`, numbered.
fn write_metadata(o: &mut Obj<'_, '_>, sequence: u64, marks: &mut Marks) {
    o.key("metadata").object_with(|m| {
        m.key("log_name").str("verdicts");
        m.key("product").object_with(|p| {
            p.key("name").str("guard");
            p.key("vendor_name").str("guard");
            p.key("version").str(env!("CARGO_PKG_VERSION"));
        });
        m.key("profiles").array_with(|a| {
            a.item().str("host");
            a.item().str("security_control");
        });
        marks.set(Mark::Sequence, m.marked("sequence", |v| v.u64(sequence)));
        m.key("version").str(OCSF_VERSION);
    });
}

/// An OCSF `file` object (`name`, `path`, `type`, `type_id`), masked.
fn write_file(f: &mut Obj<'_, '_>, path: &str, type_id: u64, type_name: &'static str) {
    let name = path.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or(path);
    f.key("name").masked(name);
    f.key("path").masked(path);
    f.key("type").str(type_name);
    f.key("type_id").u64(type_id);
}

/// This host, as OCSF's `device` (see `verdict::device`).
fn write_device(o: &mut Obj<'_, '_>) {
    o.key("device").object_with(|d| {
        d.key("hostname").masked(hostname());
        d.key("os").object_with(|os| {
            os.key("name").str("Linux");
            os.key("type").str("Linux");
            os.key("type_id").u64(200);
        });
        d.key("type").str("Unknown");
        d.key("type_id").u64(0);
    });
}

/// A JSON writer onto a `String`.
pub(super) struct Writer<'a> {
    out: &'a mut String,
    masker: &'a Masker,
}

impl<'a> Writer<'a> {
    fn object(&mut self) -> Obj<'_, 'a> {
        self.out.push('{');
        Obj { out: self.out, masker: self.masker, first: true, last: "" }
    }
}

/// An open JSON object; keys must come in byte order (checked in debug builds), as
/// serde_json's map gives them.
pub(super) struct Obj<'o, 'm> {
    out: &'o mut String,
    masker: &'m Masker,
    first: bool,
    last: &'static str,
}

impl Drop for Obj<'_, '_> {
    fn drop(&mut self) {
        self.out.push('}');
    }
}

impl<'o, 'm> Obj<'o, 'm> {
    fn key(&mut self, k: &'static str) -> Val<'_, 'm> {
        debug_assert!(self.first || self.last < k, "key {k:?} after {:?}", self.last);
        self.last = k;
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(k);
        self.out.push_str("\":");
        Val { out: self.out, masker: self.masker }
    }

    /// [`Obj::key`] with its value written by `f`, and where that value sits in the line.
    fn marked(&mut self, k: &'static str, f: impl FnOnce(Val<'_, 'm>)) -> (usize, usize) {
        let v = self.key(k);
        let start = v.out.len();
        f(v);
        (start, self.out.len())
    }
}

/// Where one value goes.
pub(super) struct Val<'o, 'm> {
    out: &'o mut String,
    masker: &'m Masker,
}

impl<'o, 'm> Val<'o, 'm> {
    fn u64(self, n: u64) {
        push_u64(self.out, n);
    }

    fn bool(self, b: bool) {
        self.out.push_str(if b { "true" } else { "false" });
    }

    fn null(self) {
        self.out.push_str("null");
    }

    /// A string as it is (constants, or text already masked).
    fn str(self, s: &str) {
        self.string(s);
    }

    fn string(self, s: &str) {
        self.out.push('"');
        push_escaped(self.out, s);
        self.out.push('"');
    }

    /// The words of `parts` joined by spaces, as one string.
    fn joined(self, parts: &[String]) {
        self.out.push('"');
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                self.out.push(' ');
            }
            push_escaped(self.out, p);
        }
        self.out.push('"');
    }

    /// A string, masked.
    fn masked(self, s: &str) {
        let m = self.masker.mask_str(s);
        self.string(&m);
    }

    fn opt_masked(self, s: Option<&str>) {
        match s {
            Some(s) => self.masked(s),
            None => self.null(),
        }
    }

    /// A free-form value (`unmapped.session`, `hold`, `exfil`, `sql`), masked as
    /// [`Masker::mask_value`] masks it inside a verdict.
    fn free(self, v: Option<&Value>) {
        match v {
            None => self.null(),
            Some(v) => write_masked_value(self.out, self.masker, v),
        }
    }

    /// A [`Shared`] value, masked as [`Val::free`] masks it: encoded once, copied after.
    fn shared(self, v: Option<&Shared>) {
        match v {
            None => self.null(),
            Some(v) => {
                let masker = self.masker;
                self.out.push_str(&v.encoded(masker, |value, out| write_masked_value(out, masker, value)));
            }
        }
    }

    fn object_with(self, f: impl FnOnce(&mut Obj<'_, 'm>)) {
        self.out.push('{');
        let mut o = Obj { out: self.out, masker: self.masker, first: true, last: "" };
        f(&mut o);
    }

    fn array_with(self, f: impl FnOnce(&mut Arr<'_, 'm>)) {
        self.out.push('[');
        let mut a = Arr { out: self.out, masker: self.masker, first: true };
        f(&mut a);
    }
}

pub(super) struct Arr<'o, 'm> {
    out: &'o mut String,
    masker: &'m Masker,
    first: bool,
}

impl Drop for Arr<'_, '_> {
    fn drop(&mut self) {
        self.out.push(']');
    }
}

impl<'m> Arr<'_, 'm> {
    fn item(&mut self) -> Val<'_, 'm> {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        Val { out: self.out, masker: self.masker }
    }
}

/// A free-form value, masked like [`Masker::mask_value`] would inside a verdict: every string
/// and key through `mask_str`. One whose masking is not string by string (an `argv` or
/// `cmd_line` inside, or a key that masking renames) is masked as a whole on a copy.
fn write_masked_value(out: &mut String, masker: &Masker, v: &Value) {
    if needs_whole_masking(masker, v) {
        let mut copy = v.clone();
        masker.mask_value(&mut copy);
        out.push_str(&copy.to_string());
        return;
    }
    fn walk(out: &mut String, masker: &Masker, v: &Value) {
        match v {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => {
                use std::fmt::Write as _;
                let _ = write!(out, "{n}");
            }
            Value::String(s) => {
                out.push('"');
                push_escaped(out, &masker.mask_str(s));
                out.push('"');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    walk(out, masker, x);
                }
                out.push(']');
            }
            Value::Object(map) => {
                out.push('{');
                for (i, (k, x)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push('"');
                    push_escaped(out, k);
                    out.push_str("\":");
                    walk(out, masker, x);
                }
                out.push('}');
            }
        }
    }
    walk(out, masker, v);
}

fn needs_whole_masking(masker: &Masker, v: &Value) -> bool {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                for (k, x) in map {
                    if k == "argv" || k == "cmd_line" || matches!(masker.mask_str(k), std::borrow::Cow::Owned(_)) {
                        return true;
                    }
                    stack.push(x);
                }
            }
            _ => {}
        }
    }
    false
}

fn push_u64(out: &mut String, n: u64) {
    let mut buf = itoa::Buffer::new();
    out.push_str(buf.format(n));
}
