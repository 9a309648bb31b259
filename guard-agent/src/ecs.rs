//! The Elastic Common Schema (ECS) projection of guard's OCSF objects, for Elastic: one ECS
//! document per OCSF object, computed from the object alone (so it works as well on a verdict
//! file as on the live stream).
//!
//! - `event.kind`: `event` for activities, `alert` for Detection Findings;
//! - `event.category`: `process` (exec, moved out), `network` (connect, send, socket),
//!   `configuration` (policy reload), plus `intrusion_detection` for findings;
//! - `event.action`: `exec`, `connection_attempted`, `datagram_attempted`, `socket_attempted`,
//!   `moved_out`, `policy_reloaded` / `policy_reload_failed`, `events_lost` (category `host`: the
//!   ring buffer was full); a finding has its activity's;
//! - `event.type`: what happened (`start`, `connection`, `change`...) and how it ended
//!   (`allowed`, `denied`, `info`); `event.outcome`: `success`, `failure` or `unknown`;
//! - `process.*`, `destination.*`, `network.*`, `user.*`, `host.*`, `rule.*`, `labels` (the
//!   launch session's), `observer.*` (guard), and `guard.*` for the rest of `unmapped`.
//!
//! Anything missing or odd in the input leaves the matching ECS fields out; nothing panics.
use serde_json::{Map, Value, json};

/// The ECS version the documents follow.
pub const ECS_VERSION: &str = "8.11.0";

/// The ECS document for one OCSF object guard emitted.
pub fn project(ocsf: &Value) -> Value {
    let class = ocsf.get("class_uid").and_then(Value::as_u64).unwrap_or(0);
    let finding = class == 2004;
    let unmapped = ocsf.get("unmapped").filter(|u| u.is_object()).cloned().unwrap_or_else(|| json!({}));
    // A finding's process, actor and endpoints are its evidence's.
    let subject = if finding { ocsf.pointer("/evidences/0").unwrap_or(&Value::Null) } else { ocsf };
    let verdict = str_at(&unmapped, "/verdict").unwrap_or("");
    let operation = str_at(&unmapped, "/operation");
    let activity_class = if finding { unmapped.get("activity_class_uid").and_then(Value::as_u64).unwrap_or(0) } else { class };
    let failed = ocsf.get("status_id").and_then(Value::as_u64) == Some(2);

    // What happened, by the activity it is about.
    let (category, kind_type, action) = match (activity_class, operation) {
        (1001, _) => ("file", match str_at(&unmapped, "/file_op/op") { Some("delete") => "deletion", Some("create") => "creation", _ => "change" }, "file_operation_denied"),
        (1007, Some("moved_out")) => ("process", "change", "moved_out"),
        (1007, Some("delete_budget")) => ("file", "deletion", "bulk_delete"),
        (1007, _) => ("process", "start", "exec"),
        (4001, Some("sendmsg")) => ("network", "connection", "datagram_attempted"),
        (4001, Some("socket")) => ("network", "creation", "socket_attempted"),
        (4001, _) => ("network", "connection", "connection_attempted"),
        (6002, Some("events_lost")) => ("host", "info", "events_lost"),
        (6002, _) if failed && !finding => ("configuration", "change", "policy_reload_failed"),
        (6002, _) => ("configuration", "change", "policy_reloaded"),
        _ => ("", "info", "unknown"),
    };
    let decided = match verdict {
        "allowed" => "allowed",
        "denied" | "killed" => "denied",
        _ => "info",
    };
    let mut types = vec![kind_type];
    if decided != kind_type && activity_class != 6002 {
        types.push(decided);
    }
    if activity_class == 6002 && failed {
        types.push("error");
    }
    let mut categories: Vec<&str> = Vec::new();
    if finding {
        categories.push("intrusion_detection");
    }
    if !category.is_empty() {
        categories.push(category);
    }
    let outcome = match verdict {
        _ if activity_class == 6002 => if failed { "failure" } else { "success" },
        "denied" | "killed" => "failure",
        "allowed" | "audited" | "evaluated" | "would-deny" | "would-kill" | "would-hold" => "success",
        _ => "unknown",
    };

    let mut event = Map::new();
    event.insert("kind".into(), json!(if finding { "alert" } else { "event" }));
    event.insert("category".into(), json!(categories));
    event.insert("type".into(), json!(types));
    event.insert("action".into(), json!(action));
    event.insert("outcome".into(), json!(outcome));
    event.insert("module".into(), json!("guard"));
    event.insert("dataset".into(), json!(if finding { "guard.finding" } else { "guard.verdict" }));
    event.insert("provider".into(), json!("guard"));
    put(&mut event, "sequence", ocsf.pointer("/metadata/sequence").filter(|v| v.is_u64()).cloned());
    put(&mut event, "severity", ocsf.get("severity_id").filter(|v| v.is_u64()).cloned());
    put(&mut event, "id", ocsf.pointer("/finding_info/uid").filter(|v| v.is_string()).cloned());
    let reason = str_at(&unmapped, "/reason").or(str_at(&unmapped, "/rule/message"));
    put(&mut event, "reason", reason.map(|r| json!(r)));
    if let Some(ms) = ocsf.get("time").and_then(Value::as_u64) {
        event.insert("created".into(), json!(crate::time::utc(ms)));
    }

    let mut doc = Map::new();
    if let Some(ms) = ocsf.get("time").and_then(Value::as_u64) {
        doc.insert("@timestamp".into(), json!(crate::time::utc(ms)));
    }
    doc.insert("ecs".into(), json!({ "version": ECS_VERSION }));
    doc.insert("event".into(), Value::Object(event));
    let message = ocsf.pointer("/finding_info/title").or(ocsf.get("message")).filter(|m| m.is_string()).cloned();
    put(&mut doc, "message", message);

    // The process: the one that exec'd (Process Activity), or the one that connected (the
    // actor of Network Activity).
    let process = match activity_class {
        1007 => process(subject.get("process"), &unmapped, true),
        1001 | 4001 => process(subject.pointer("/actor/process"), &unmapped, false),
        _ => None,
    };
    put(&mut doc, "process", process);
    let user_src = match activity_class {
        1007 => subject.pointer("/process/user").or(subject.pointer("/actor/user")),
        _ => subject.pointer("/actor/user"),
    };
    put(&mut doc, "user", user(user_src, &unmapped));
    if let Some(dst) = subject.get("dst_endpoint") {
        let mut d = Map::new();
        put(&mut d, "ip", dst.get("ip").filter(|v| v.is_string()).cloned());
        put(&mut d, "address", dst.get("ip").filter(|v| v.is_string()).cloned());
        put(&mut d, "port", dst.get("port").filter(|v| v.is_u64()).cloned());
        if !d.is_empty() {
            doc.insert("destination".into(), Value::Object(d));
        }
    }
    if let Some(c) = subject.get("connection_info") {
        let mut n = Map::new();
        put(&mut n, "transport", c.get("protocol_name").filter(|v| v.is_string()).cloned());
        put(&mut n, "iana_number", c.get("protocol_num").and_then(Value::as_u64).map(|p| json!(p.to_string())));
        let ip = subject.pointer("/dst_endpoint/ip").and_then(Value::as_str);
        put(&mut n, "type", ip.map(|ip| json!(if ip.contains(':') { "ipv6" } else { "ipv4" })));
        // Host-based point of view.
        if c.get("direction_id").and_then(Value::as_u64) == Some(2) {
            n.insert("direction".into(), json!("egress"));
        }
        if !n.is_empty() {
            doc.insert("network".into(), Value::Object(n));
        }
    }
    if let Some(f) = subject.get("file").filter(|_| activity_class == 1001) {
        let mut file = Map::new();
        put(&mut file, "path", f.get("path").filter(|v| v.is_string()).cloned());
        put(&mut file, "name", f.get("name").filter(|v| v.is_string()).cloned());
        if !file.is_empty() {
            doc.insert("file".into(), Value::Object(file));
        }
    }
    let mut host = Map::new();
    put(&mut host, "hostname", ocsf.pointer("/device/hostname").filter(|v| v.is_string()).cloned());
    put(&mut host, "name", ocsf.pointer("/device/hostname").filter(|v| v.is_string()).cloned());
    host.insert("os".into(), json!({ "type": "linux" }));
    doc.insert("host".into(), Value::Object(host));
    container(ocsf, &unmapped, &mut doc);
    if let Some(r) = unmapped.get("rule").filter(|r| r.is_object()) {
        let mut rule = Map::new();
        put(&mut rule, "id", r.get("id").and_then(Value::as_u64).map(|id| json!(id.to_string())));
        put(&mut rule, "name", r.get("matcher").filter(|v| v.is_string()).cloned());
        put(&mut rule, "description", r.get("message").filter(|v| v.is_string()).cloned());
        put(&mut rule, "ruleset", r.get("section").filter(|v| v.is_string()).cloned());
        put(&mut rule, "category", r.get("action").filter(|v| v.is_string()).cloned());
        if let Some(h) = str_at(&unmapped, "/policy_hash") {
            rule.insert("version".into(), json!(h));
        }
        doc.insert("rule".into(), Value::Object(rule));
    }
    if let Some(labels) = unmapped.pointer("/session/labels").and_then(Value::as_object) {
        let labels: Map<String, Value> = labels.iter().filter(|(_, v)| v.is_string()).map(|(k, v)| (k.clone(), v.clone())).collect();
        if !labels.is_empty() {
            doc.insert("labels".into(), Value::Object(labels));
        }
    }
    let error = str_at(&unmapped, "/error").or(str_at(&unmapped, "/policy/error"));
    put(&mut doc, "error", error.map(|e| json!({ "message": e })));
    let version = ocsf.pointer("/metadata/product/version").filter(|v| v.is_string()).cloned();
    let mut observer = Map::new();
    observer.insert("vendor".into(), json!("guard"));
    observer.insert("product".into(), json!("guard"));
    observer.insert("type".into(), json!("enforcer"));
    put(&mut observer, "version", version);
    doc.insert("observer".into(), Value::Object(observer));

    // The rest of guard's fields, as they are (argv and the rule are projected above).
    let mut guard = match unmapped {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    guard.remove("argv");
    guard.remove("rule");
    let mut ocsf_ids = Map::new();
    for key in ["class_uid", "activity_id", "type_uid", "action_id", "disposition_id"] {
        put(&mut ocsf_ids, key, ocsf.get(key).filter(|v| v.is_u64()).cloned());
    }
    guard.insert("ocsf".into(), Value::Object(ocsf_ids));
    doc.insert("guard".into(), Value::Object(guard));
    Value::Object(doc)
}

/// ECS `container.*` (id, name, runtime, image name and tag, labels) and, for a Kubernetes
/// pod, `orchestrator.*` (type, namespace, the pod as the resource: type, name, id, labels as
/// `key:value`), from OCSF `container` and `unmapped.container`.
fn container(ocsf: &Value, unmapped: &Value, doc: &mut Map<String, Value>) {
    let Some(c) = ocsf.get("container").filter(|c| c.is_object()) else { return };
    let text = |v: &Value, p: &str| v.pointer(p).filter(|v| v.is_string()).cloned();
    let mut out = Map::new();
    put(&mut out, "id", text(c, "/uid"));
    put(&mut out, "name", text(c, "/name"));
    put(&mut out, "runtime", text(c, "/runtime"));
    let mut image = Map::new();
    put(&mut image, "name", text(c, "/image/name"));
    put(&mut image, "tag", text(c, "/image/tag").map(|t| json!([t])));
    if let Some(id) = text(c, "/image/uid") {
        image.insert("hash".into(), json!({ "all": [id] }));
    }
    if !image.is_empty() {
        out.insert("image".into(), Value::Object(image));
    }
    if let Some(labels) = unmapped.pointer("/container/labels").and_then(Value::as_object).filter(|l| !l.is_empty()) {
        out.insert("labels".into(), Value::Object(labels.clone()));
    }
    if !out.is_empty() {
        doc.insert("container".into(), Value::Object(out));
    }
    let Some(pod) = unmapped.pointer("/container/pod").filter(|p| p.is_object()) else { return };
    let mut resource = Map::new();
    resource.insert("type".into(), json!("pod"));
    put(&mut resource, "name", text(pod, "/name"));
    put(&mut resource, "id", text(pod, "/uid"));
    if let Some(labels) = pod.get("labels").and_then(Value::as_object).filter(|l| !l.is_empty()) {
        let labels: Vec<Value> = labels.iter().filter_map(|(k, v)| v.as_str().map(|v| json!(format!("{k}:{v}")))).collect();
        resource.insert("label".into(), Value::Array(labels));
    }
    let mut orchestrator = Map::new();
    orchestrator.insert("type".into(), json!("kubernetes"));
    put(&mut orchestrator, "namespace", text(pod, "/namespace"));
    orchestrator.insert("resource".into(), Value::Object(resource));
    doc.insert("orchestrator".into(), Value::Object(orchestrator));
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value.filter(|v| !v.is_null()) {
        map.insert(key.to_owned(), v);
    }
}

/// ECS `process.*` from an OCSF `process` object; `exec` adds argv and the user ids from
/// `unmapped` (they describe the exec'd process).
fn process(p: Option<&Value>, unmapped: &Value, exec: bool) -> Option<Value> {
    let p = p.filter(|p| p.is_object())?;
    let mut out = Map::new();
    put(&mut out, "pid", p.get("pid").filter(|v| v.is_u64()).cloned());
    let path = p.pointer("/file/path").filter(|v| v.is_string()).cloned();
    put(&mut out, "executable", path);
    let name = p.get("name").or(p.pointer("/file/name")).filter(|v| v.is_string()).cloned();
    put(&mut out, "name", name);
    put(&mut out, "command_line", p.get("cmd_line").filter(|v| v.is_string()).cloned());
    put(&mut out, "working_directory", p.get("working_directory").filter(|v| v.is_string()).cloned());
    if let Some(ppid) = p.pointer("/parent_process/pid").filter(|v| v.is_u64()) {
        out.insert("parent".into(), json!({ "pid": ppid }));
    }
    if let Some(argv) = unmapped.get("argv").and_then(Value::as_array).filter(|_| exec) {
        let args: Vec<Value> = argv.iter().filter(|a| a.is_string()).cloned().collect();
        out.insert("args_count".into(), json!(args.len()));
        out.insert("args".into(), Value::Array(args));
    }
    let mut u = Map::new();
    put(&mut u, "id", p.pointer("/user/uid").filter(|v| v.is_string()).cloned());
    if !u.is_empty() {
        out.insert("user".into(), Value::Object(u));
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// ECS `user.*`: the process's user id, its name when the launch session says whose it is,
/// and (for execs) the effective user id.
fn user(u: Option<&Value>, unmapped: &Value) -> Option<Value> {
    let uid = u.and_then(|u| u.get("uid")).and_then(Value::as_str)?;
    let mut out = Map::new();
    out.insert("id".into(), json!(uid));
    let session_uid = unmapped.pointer("/session/user/uid").map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    if session_uid.as_deref() == Some(uid) {
        put(&mut out, "name", unmapped.pointer("/session/user/name").filter(|v| v.is_string()).cloned());
    }
    if let Some(euid) = unmapped.get("euid").and_then(Value::as_u64) {
        out.insert("effective".into(), json!({ "id": euid.to_string() }));
    }
    Some(Value::Object(out))
}


#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use guard_common::Decision;

    use super::*;
    use crate::{
        policy::compile::RuleInfo,
        proctable::Ancestor,
        verdict::{ExecInfo, Subject, Verdict},
    };

    fn verdict(decision: Decision, subject: Subject, rule: Option<RuleInfo>) -> Verdict {
        Verdict {
            time_ms: 1_795_255_200_123,
            decision,
            agent: Some("claude".into()),
            rule,
            policy_hash: "27aec9ad0e4b4a8ef6d637c1cb8dd95fa23af834a6102c6f949b17744bc26778".into(),
            policy_generation: None,
            pid: 4242,
            ppid: 4241,
            uid: 1000,
            gid: 1000,
            cgroup_id: 77,
            cgroup_path: Some("/guard/claude/s1".into()),
            subject,
            ancestry: vec![Ancestor { pid: 4241, exe: "/bin/sh".into() }],
            error: None,
            session: Some(crate::verdict::Shared::new(json!({
                "id": "s1", "launch_name": "claude", "labels": { "principal": "alice@example.com", "ticket": "OPS-12" },
                "user": { "uid": 1000, "name": "alice", "loginuid": 1000 },
            }))),
            hold: None,
            reason: None,
            exfil: None,
            sql: None,
        }
    }

    fn exec(path: &str, argv: &[&str]) -> Subject {
        Subject::Exec(ExecInfo {
            filename: path.into(),
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
            cwd: Some("/home/alice/src".into()),
            euid: 1000,
            comm: path.rsplit('/').next().unwrap().into(),
            ..Default::default()
        })
    }

    fn shred_rule() -> RuleInfo {
        RuleInfo { id: 11, section: "exec.deny", action: "kill", matcher: "basename: shred".into(), message: Some("overwrites files".into()), location: "p.yaml:35".into() }
    }

    /// As the daemon emits it: numbered.
    fn emitted(v: &Verdict, seq: u64) -> Value {
        let mut o = v.to_ocsf();
        o["metadata"]["sequence"] = json!(seq);
        o
    }

    #[test]
    fn exec_allowed_field_by_field() {
        let v = verdict(Decision::Allowed, exec("/usr/bin/git", &["git", "status", "-s"]), None);
        let e = project(&emitted(&v, 7));
        assert_eq!(e["@timestamp"], "2026-11-21T10:00:00.123Z");
        assert_eq!(e["ecs"]["version"], ECS_VERSION);
        assert_eq!(e["event"]["kind"], "event");
        assert_eq!(e["event"]["category"], json!(["process"]));
        assert_eq!(e["event"]["type"], json!(["start", "allowed"]));
        assert_eq!(e["event"]["action"], "exec");
        assert_eq!(e["event"]["outcome"], "success");
        assert_eq!(e["event"]["sequence"], 7);
        assert_eq!(e["event"]["severity"], 1);
        assert_eq!(e["process"]["pid"], 4242);
        assert_eq!(e["process"]["executable"], "/usr/bin/git");
        assert_eq!(e["process"]["name"], "git");
        assert_eq!(e["process"]["args"], json!(["git", "status", "-s"]));
        assert_eq!(e["process"]["args_count"], 3);
        assert_eq!(e["process"]["command_line"], "git status -s");
        assert_eq!(e["process"]["working_directory"], "/home/alice/src");
        assert_eq!(e["process"]["parent"]["pid"], 4241);
        assert_eq!(e["user"]["id"], "1000");
        assert_eq!(e["user"]["name"], "alice", "the session's user owns uid 1000");
        assert_eq!(e["user"]["effective"]["id"], "1000");
        assert_eq!(e["host"]["hostname"], crate::verdict::hostname());
        assert_eq!(e["labels"], json!({ "principal": "alice@example.com", "ticket": "OPS-12" }));
        assert!(e.get("rule").is_none(), "no rule decided: {e:#}");
        assert!(e.get("destination").is_none());
        assert_eq!(e["guard"]["verdict"], "allowed");
        assert_eq!(e["guard"]["agent"], "claude");
        assert_eq!(e["guard"]["cgroup"]["path"], "/guard/claude/s1");
        assert_eq!(e["guard"]["ancestry"][0]["exe"], "/bin/sh");
        assert!(e["guard"].get("argv").is_none(), "argv is process.args");
        assert_eq!(e["guard"]["ocsf"]["class_uid"], 1007);
    }

    #[test]
    fn exec_killed_field_by_field_and_its_finding_is_an_alert() {
        let v = verdict(Decision::Killed, exec("/usr/bin/shred", &["shred", "-u", "secrets"]), Some(shred_rule()));
        let activity = emitted(&v, 41);
        let e = project(&activity);
        assert_eq!(e["event"]["kind"], "event");
        assert_eq!(e["event"]["category"], json!(["process"]));
        assert_eq!(e["event"]["type"], json!(["start", "denied"]));
        assert_eq!(e["event"]["action"], "exec");
        assert_eq!(e["event"]["outcome"], "failure");
        assert_eq!(e["event"]["severity"], 4);
        assert_eq!(e["event"]["reason"], "overwrites files");
        assert_eq!(e["process"]["executable"], "/usr/bin/shred");
        assert_eq!(e["process"]["name"], "shred");
        assert_eq!(e["process"]["args"], json!(["shred", "-u", "secrets"]));
        assert_eq!(e["process"]["command_line"], "shred -u secrets");
        assert_eq!(e["rule"]["id"], "11");
        assert_eq!(e["rule"]["name"], "basename: shred");
        assert_eq!(e["rule"]["description"], "overwrites files");
        assert_eq!(e["rule"]["ruleset"], "exec.deny");
        assert_eq!(e["rule"]["category"], "kill");
        assert_eq!(e["guard"]["verdict"], "killed");
        assert_eq!(e["guard"]["policy_hash"], v.policy_hash);

        let mut finding = v.finding(&activity).expect("a kill has a finding");
        finding["metadata"]["sequence"] = json!(42);
        let f = project(&finding);
        assert_eq!(f["event"]["kind"], "alert");
        assert_eq!(f["event"]["category"], json!(["intrusion_detection", "process"]));
        assert_eq!(f["event"]["type"], json!(["start", "denied"]));
        assert_eq!(f["event"]["action"], "exec");
        assert_eq!(f["event"]["outcome"], "failure");
        assert_eq!(f["event"]["sequence"], 42);
        assert_eq!(f["event"]["id"], finding["finding_info"]["uid"]);
        assert_eq!(f["message"], "Killed: exec of /usr/bin/shred");
        assert_eq!(f["process"]["executable"], "/usr/bin/shred");
        assert_eq!(f["process"]["pid"], 4242);
        assert_eq!(f["rule"]["name"], "basename: shred");
        assert_eq!(f["guard"]["activity_sequence"], 41);
    }

    #[test]
    fn connect_denied_field_by_field() {
        let rule = RuleInfo { id: 3, section: "network.deny", action: "deny", matcher: "cidr: 10.0.0.0/8 ports: 22".into(), message: None, location: "p.yaml:9".into() };
        let addr: IpAddr = "10.1.2.3".parse().unwrap();
        let subject = Subject::Connect { addr, port: 22, protocol: 6, exe: Some("/usr/bin/ssh".into()), sendmsg: false };
        let v = verdict(Decision::Denied, subject, Some(rule));
        let e = project(&emitted(&v, 9));
        assert_eq!(e["event"]["kind"], "event");
        assert_eq!(e["event"]["category"], json!(["network"]));
        assert_eq!(e["event"]["type"], json!(["connection", "denied"]));
        assert_eq!(e["event"]["action"], "connection_attempted");
        assert_eq!(e["event"]["outcome"], "failure");
        assert_eq!(e["destination"]["ip"], "10.1.2.3");
        assert_eq!(e["destination"]["address"], "10.1.2.3");
        assert_eq!(e["destination"]["port"], 22);
        assert_eq!(e["network"]["transport"], "tcp");
        assert_eq!(e["network"]["iana_number"], "6");
        assert_eq!(e["network"]["type"], "ipv4");
        assert_eq!(e["network"]["direction"], "egress");
        assert_eq!(e["process"]["pid"], 4242);
        assert_eq!(e["process"]["executable"], "/usr/bin/ssh");
        assert_eq!(e["process"]["name"], "ssh");
        assert_eq!(e["process"]["parent"]["pid"], 4241);
        assert!(e["process"].get("args").is_none(), "a connect carries no argv");
        assert_eq!(e["user"]["id"], "1000");
        assert_eq!(e["rule"]["name"], "cidr: 10.0.0.0/8 ports: 22");
        assert_eq!(e["guard"]["operation"], "connect");
        // v6: the type follows the address.
        let v6 = Subject::Connect { addr: "::1".parse().unwrap(), port: 443, protocol: 17, exe: None, sendmsg: true };
        let e = project(&emitted(&verdict(Decision::WouldDeny, v6, None), 10));
        assert_eq!(e["network"]["type"], "ipv6");
        assert_eq!(e["network"]["transport"], "udp");
        assert_eq!(e["event"]["action"], "datagram_attempted");
        assert_eq!(e["event"]["type"], json!(["connection", "info"]));
        assert_eq!(e["event"]["outcome"], "success", "audit mode stopped nothing");
    }

    #[test]
    fn policy_reloads_and_odd_input() {
        let ok = Subject::Policy { source: "/etc/guard/policy.d".into(), error: None, previous_hash: Some("aa".into()), warnings: vec![] };
        let e = project(&emitted(&verdict(Decision::Allowed, ok, None), 1));
        assert_eq!((e["event"]["action"].as_str(), e["event"]["outcome"].as_str()), (Some("policy_reloaded"), Some("success")));
        assert_eq!(e["event"]["category"], json!(["configuration"]));
        let bad = Subject::Policy { source: "p".into(), error: Some("p:1:1: bad".into()), previous_hash: None, warnings: vec![] };
        let e = project(&emitted(&verdict(Decision::Denied, bad, None), 2));
        assert_eq!((e["event"]["action"].as_str(), e["event"]["outcome"].as_str()), (Some("policy_reload_failed"), Some("failure")));
        assert_eq!(e["event"]["type"], json!(["change", "error"]));
        assert_eq!(e["error"]["message"], "p:1:1: bad");
        let lost = Subject::Lost {
            lost: vec![("exec".into(), 7), ("fork".into(), 2)],
            totals: vec![("exec".into(), 9), ("fork".into(), 2), ("exit".into(), 0)],
            replaced: vec![],
            ring_buffer_bytes: 8192,
        };
        let o = emitted(&verdict(Decision::Audited, lost, None), 3);
        assert_eq!((o["class_uid"].as_u64(), o["activity_id"].as_u64(), o["type_uid"].as_u64()), (Some(6002), Some(99), Some(600299)));
        assert_eq!((o["activity_name"].as_str(), o["status_id"].as_u64(), o["action_id"].as_u64()), (Some("Events Lost"), Some(2), Some(0)));
        assert_eq!(o["unmapped"]["lost"]["events"], json!({ "exec": 7, "fork": 2 }));
        assert_eq!(o["unmapped"]["lost"]["total"], 9);
        assert_eq!(o["unmapped"]["lost"]["kernel_counters"]["exec"], 9);
        let e = project(&o);
        assert_eq!((e["event"]["action"].as_str(), e["event"]["outcome"].as_str()), (Some("events_lost"), Some("failure")));
        // Whatever comes in, something sensible (and no panic) comes out.
        for odd in [json!(null), json!(3), json!("x"), json!([]), json!({}), json!({ "class_uid": "1007", "time": -1, "unmapped": 5 }),
                    json!({ "class_uid": 2004, "evidences": "no" }), json!({ "class_uid": 4001, "dst_endpoint": { "ip": 7, "port": "x" }, "connection_info": [] })] {
            let e = project(&odd);
            assert_eq!(e["ecs"]["version"], ECS_VERSION, "{odd}");
            assert!(e["event"]["kind"].is_string(), "{odd}");
        }
        assert_eq!(crate::time::utc(0), "1970-01-01T00:00:00.000Z");
    }
}
