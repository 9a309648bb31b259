//! Unit tests of `verdict`.
use super::*;

fn verdict(decision: Decision, subject: Subject) -> Verdict {
    Verdict {
        time_ms: 1_700_000_000_000,
        decision,
        agent: Some("a".into()),
        rule: Some(RuleInfo { id: 3, section: "exec.deny", action: "kill", matcher: "basename: shred".into(), message: None, location: "p.yaml:9".into() }),
        policy_hash: "ab".into(),
        policy_generation: None,
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
        exfil: None,
        sql: None,
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
    assert_eq!(v["action"], "Denied");
    assert_eq!(v["disposition"], "Blocked");
    assert_eq!(v["activity_name"], "Refuse");
    assert_eq!(v["type_name"], "Network Activity: Refuse");
    assert_eq!(v["severity"], "High");
    assert_eq!(v["status"], "Failure");
    assert_eq!(v["src_endpoint"]["hostname"], hostname());
    assert_eq!(v["connection_info"]["direction_id"], 2);
    assert_eq!(v["connection_info"]["protocol_ver_id"], 6);
    assert!(v["actor"]["process"].get("file").is_none(), "no exe: no file, and no null: {v:#}");
}

/// Every `null` is gone from the mapped part; `unmapped` keeps its shape.
fn assert_no_nulls_outside_unmapped(v: &Value) {
    fn walk(v: &Value, path: &str) {
        match v {
            Value::Null => panic!("null at {path}"),
            Value::Object(m) => m.iter().for_each(|(k, x)| walk(x, &format!("{path}/{k}"))),
            Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| walk(x, &format!("{path}/{i}"))),
            _ => {}
        }
    }
    for (k, x) in v.as_object().expect("an object") {
        if k != "unmapped" {
            walk(x, &format!("/{k}"));
        }
    }
}

#[test]
fn every_class_carries_the_ocsf_classification_and_names() {
    let exec = Subject::Exec(ExecInfo { filename: "/bin/true".into(), argv: vec!["true".into()], ..Default::default() });
    let socket = Subject::Socket { family: 2, sock_type: 3, protocol: 1, exe: Some("/usr/bin/ping".into()) };
    let moved = Subject::Moved { pid: 12, to: "/".into(), exe: None };
    let reload = Subject::Policy { source: "p.yaml".into(), error: Some("p.yaml:1:1: bad".into()), previous_hash: None, warnings: vec![] };
    let cases = [
        (Decision::Allowed, exec.clone(), 1007, 100701, "Process Activity: Launch", (1, "Allowed"), (1, "Allowed"), (1, "Informational")),
        (Decision::Held, exec.clone(), 1007, 100701, "Process Activity: Launch", (99, "Held"), (14, "Delayed"), (3, "Medium")),
        (Decision::WouldKill, exec, 1007, 100701, "Process Activity: Launch", (3, "Observed"), (15, "Detected"), (3, "Medium")),
        (Decision::Denied, socket.clone(), 4001, 400105, "Network Activity: Refuse", (2, "Denied"), (2, "Blocked"), (4, "High")),
        (Decision::WouldDeny, socket, 4001, 400199, "Network Activity: Create Socket", (3, "Observed"), (15, "Detected"), (3, "Medium")),
        (Decision::Audited, moved, 1007, 100799, "Process Activity: Move Out", (1, "Allowed"), (17, "Logged"), (2, "Low")),
        (Decision::Denied, reload, 6002, 600208, "Application Lifecycle: Update", (99, "Policy Rejected"), (27, "Error"), (4, "High")),
    ];
    for (decision, subject, class, type_uid, type_name, action, disposition, severity) in cases {
        let v = verdict(decision, subject).to_ocsf();
        let what = format!("{decision:?} {v:#}");
        assert_eq!(v["class_uid"], class, "{what}");
        assert_eq!(v["type_uid"], type_uid, "{what}");
        assert_eq!(v["type_name"], type_name, "{what}");
        assert_eq!(v["category_uid"], class / 1000, "{what}");
        assert_eq!((v["action_id"].as_u64(), v["action"].as_str()), (Some(action.0), Some(action.1)), "{what}");
        assert_eq!((v["disposition_id"].as_u64(), v["disposition"].as_str()), (Some(disposition.0), Some(disposition.1)), "{what}");
        assert_eq!((v["severity_id"].as_u64(), v["severity"].as_str()), (Some(severity.0), Some(severity.1)), "{what}");
        assert_eq!(v["metadata"]["version"], OCSF_VERSION);
        assert_eq!(v["metadata"]["product"]["name"], "guard");
        assert_eq!(v["metadata"]["product"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["time"], 1_700_000_000_000u64);
        assert_eq!(v["device"]["type_id"], 0);
        assert!(v["status"].is_string() && v["activity_name"].is_string(), "{what}");
        assert_eq!(v["unmapped"]["verdict"], decision_name(decision));
        assert!(v["unmapped"].get("session").is_some_and(Value::is_null), "unmapped keeps its nulls: {what}");
        assert_no_nulls_outside_unmapped(&v);
    }
    // A network actor's file is a whole OCSF file (name, type).
    let v = verdict(Decision::Denied, Subject::Socket { family: 17, sock_type: 3, protocol: 0, exe: Some("/usr/sbin/tcpdump".into()) }).to_ocsf();
    assert_eq!(v["actor"]["process"]["file"]["name"], "tcpdump");
    assert_eq!(v["actor"]["process"]["file"]["type_id"], 1);
    assert_eq!(v["connection_info"]["direction_id"], 0, "a socket has no direction");
    assert!(v.get("dst_endpoint").is_none());
    assert_eq!(v["src_endpoint"]["hostname"], hostname());
}

fn numbered(v: &Verdict, seq: u64) -> Value {
    let mut o = v.to_ocsf();
    o["metadata"]["sequence"] = json!(seq);
    o
}

#[test]
fn what_was_stopped_or_held_has_a_finding_linked_to_its_activity() {
    let exec = ExecInfo { filename: "/usr/bin/shred".into(), argv: vec!["shred".into(), "-u".into()], ..Default::default() };
    let v = verdict(Decision::Killed, Subject::Exec(exec.clone()));
    let activity = numbered(&v, 41);
    let f = v.finding(&activity).expect("a kill has a finding");
    assert_eq!(f["class_uid"], 2004);
    assert_eq!(f["category_uid"], 2);
    assert_eq!(f["activity_id"], 1);
    assert_eq!(f["type_uid"], 200401);
    assert_eq!(f["type_name"], "Detection Finding: Create");
    assert_eq!(f["time"], activity["time"]);
    assert_eq!((f["severity_id"].as_u64(), f["action_id"].as_u64(), f["disposition_id"].as_u64()), (Some(4), Some(2), Some(2)));
    assert_eq!(f["status"], "New");
    assert_eq!(f["is_alert"], true);
    assert_eq!(f["finding_info"]["title"], "Killed: exec of /usr/bin/shred");
    assert_eq!(f["finding_info"]["related_events"][0]["uid"], "41");
    assert_eq!(f["finding_info"]["related_events"][0]["type_uid"], 100701);
    assert_eq!(f["finding_info"]["analytic"]["name"], "basename: shred");
    assert_eq!(f["finding_info"]["analytic"]["type_id"], 1);
    assert_eq!(f["finding_info"]["types"], json!(["Policy Violation", "exec.deny"]));
    assert!(f["finding_info"]["uid"].as_str().unwrap().ends_with(":41"), "{f:#}");
    assert_eq!(f["evidences"][0]["process"], activity["process"]);
    assert_eq!(f["evidences"][0]["actor"], activity["actor"]);
    assert_eq!(f["evidences"][0]["file"]["path"], "/usr/bin/shred");
    assert_eq!(f["unmapped"]["activity_sequence"], 41);
    assert_eq!(f["unmapped"]["activity_class_uid"], 1007);
    assert_eq!(f["unmapped"]["rule"], activity["unmapped"]["rule"]);
    assert_eq!(f["unmapped"]["policy_hash"], "ab");
    assert!(f["metadata"].get("sequence").is_none(), "the emitter numbers it");
    assert_no_nulls_outside_unmapped(&f);

    // Audit mode: an informational finding; a denied connect names its destination.
    let w = verdict(Decision::WouldKill, Subject::Exec(exec.clone()));
    let f = w.finding(&numbered(&w, 5)).expect("would-kill has a finding");
    assert_eq!((f["is_alert"].as_bool(), f["action_id"].as_u64()), (Some(false), Some(3)));
    assert!(f["finding_info"]["title"].as_str().unwrap().contains("audit mode"), "{f:#}");
    let c = verdict(Decision::Denied, Subject::Connect { addr: "::1".parse().unwrap(), port: 22, protocol: 6, exe: None, sendmsg: false });
    let f = c.finding(&numbered(&c, 6)).unwrap();
    assert_eq!(f["finding_info"]["title"], "Denied: connection to [::1]:22/tcp");
    assert_eq!(f["evidences"][0]["dst_endpoint"]["port"], 22);
    assert_eq!(f["unmapped"]["activity_class_uid"], 4001);

    // Nothing to find: allowed, audited, evaluated, and a failed reload.
    for d in [Decision::Allowed, Decision::Audited, Decision::Evaluate] {
        let v = verdict(d, Subject::Exec(exec.clone()));
        assert!(v.finding(&numbered(&v, 1)).is_none(), "{d:?}");
    }
    let bad = verdict(Decision::Denied, Subject::Policy { source: "p".into(), error: Some("e".into()), previous_hash: None, warnings: vec![] });
    assert!(bad.finding(&numbered(&bad, 1)).is_none());
    // Odd bases: no panic; an unnumbered one gives no link.
    assert!(v.finding(&json!(null)).is_none());
    let f = v.finding(&json!({})).unwrap();
    assert!(f["finding_info"].get("related_events").is_none() && f["unmapped"]["activity_sequence"].is_null(), "{f:#}");
    let f = v.finding(&json!({ "metadata": { "sequence": "x" }, "unmapped": 3, "process": null })).unwrap();
    assert!(f["finding_info"].get("related_events").is_none(), "{f:#}");
}

#[test]
fn a_deletion_budget_verdict_is_process_activity_with_its_numbers_and_a_finding() {
    let deletions = json!({ "count": 201, "budget": 200, "per_s": 10.0, "action": "kill", "where": ["/srv/data"], "last": { "syscall": "unlinkat", "name": "f1", "path": "/srv/data/f1" } });
    let v = verdict(Decision::Killed, Subject::Deletions { exe: Some("/usr/bin/rm".into()), deletions });
    let o = v.to_ocsf();
    assert_eq!((o["class_uid"].as_u64(), o["type_uid"].as_u64(), o["activity_name"].as_str()), (Some(1007), Some(100799), Some("Bulk Delete")), "{o:#}");
    assert_eq!(o["unmapped"]["operation"], "delete_budget");
    assert_eq!(o["unmapped"]["deletions"]["count"], 201);
    assert_eq!(o["process"]["file"]["path"], "/usr/bin/rm");
    assert_no_nulls_outside_unmapped(&o);
    let f = v.finding(&o).expect("a kill has a finding");
    assert_eq!(f["finding_info"]["title"], "Killed: process 10 deleted 201 entries within 10s, over its budget of 200");
    let e = crate::ecs::project(&o);
    assert_eq!((e["event"]["action"].as_str(), e["event"]["category"][0].as_str()), (Some("bulk_delete"), Some("file")), "{e:#}");
}

#[test]
fn a_shared_value_is_encoded_once_per_masker() {
    let shared = Shared::new(json!({ "labels": { "note": "corp-token-0123456789" } }));
    let builtin = crate::mask::Masker::default();
    let corp = crate::mask::Masker::new(&["corp-token-(?P<secret>[0-9]+)".into()]).unwrap();
    let calls = std::cell::Cell::new(0);
    let encode = |m: &crate::mask::Masker| {
        shared
            .encoded(m, |v, out| {
                calls.set(calls.get() + 1);
                let mut v = v.clone();
                m.mask_value(&mut v);
                out.push_str(&v.to_string());
            })
            .into_owned()
    };
    let first = encode(&builtin);
    assert_eq!(encode(&builtin), first);
    assert_eq!(calls.get(), 1, "the same masker reuses the encoding");
    // Another masker never gets the first one's encoding.
    let other = encode(&corp);
    assert_eq!(calls.get(), 2);
    assert!(first.contains("corp-token-0123456789") && !other.contains("0123456789"), "{first} / {other}");
}
