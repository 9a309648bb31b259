//! The output schema end to end: every verdict kind the suite produces, made on purpose here,
//! validates against its OCSF schema (`schemas/ocsf/`, checked by the harness on every line),
//! every verdict the policy stopped or held (or would have, in audit mode) has exactly one
//! Detection Finding linked to it, the schemas reject damaged objects, and the ECS projection
//! (`guard-agent verdicts ecs`) of real verdicts says what their OCSF form says, field by
//! field. Run as root by `cargo xtask test`.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    net::{TcpListener, UdpSocket},
    os::unix::process::ExitStatusExt as _,
    process::{Command, Stdio},
};

use guard_tests::{Daemon, TempDir, agent_bin, agent_cmd, field, kind, launch, launch_with, net_call, ocsf_errors, spawn_launch, unique};
use serde_json::{Value, json};

const MARKER: &str = env!("CARGO_BIN_EXE_guard-test-marker");
const NET: &str = env!("CARGO_BIN_EXE_guard-test-connect");

/// Copies the marker program to `dir/bin/NAME`.
fn install_marker(dir: &TempDir, name: &str) -> String {
    let dst = dir.path(&format!("bin/{name}"));
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(MARKER, &dst).unwrap();
    dst.to_str().unwrap().to_owned()
}

/// `dir/name` holding `n` empty files.
fn files(dir: &TempDir, name: &str, n: usize) -> String {
    let d = dir.path(name);
    std::fs::create_dir_all(&d).unwrap();
    for i in 0..n {
        std::fs::write(d.join(i.to_string()), b"").unwrap();
    }
    d.to_str().unwrap().to_owned()
}

fn exec_of(v: &Value, path: &str) -> bool {
    v["class_uid"] == 1007 && field(v, "/process/file/path") == path
}

fn by_pid(pid: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v| v["class_uid"] == 4001 && field(v, "/actor/process/pid") == pid
}

/// Verdicts that come with a Detection Finding.
fn stopped_or_held(v: &Value) -> bool {
    v["class_uid"] != 6002 && ["denied", "killed", "held", "would-deny", "would-kill", "would-hold"].contains(&field(v, "/unmapped/verdict").as_str())
}

/// Every activity has exactly one finding if it was stopped or held, none otherwise; each
/// finding is linked to its activity (and numbered right after it), and says what it does.
fn assert_findings_linked(daemon: &Daemon) {
    let emitted = daemon.emitted();
    let findings: Vec<&Value> = emitted.iter().filter(|v| v["class_uid"] == 2004).collect();
    let mut linked = 0;
    for a in emitted.iter().filter(|v| v["class_uid"] != 2004) {
        let seq = a["metadata"]["sequence"].as_u64().expect("numbered");
        let mine: Vec<&&Value> = findings.iter().filter(|f| f["unmapped"]["activity_sequence"].as_u64() == Some(seq)).collect();
        if !stopped_or_held(a) {
            assert!(mine.is_empty(), "a finding for a verdict that stopped nothing: {a:#}\n{mine:#?}");
            continue;
        }
        assert_eq!(mine.len(), 1, "not exactly one finding for {a:#}: {mine:#?}");
        let f = mine[0];
        linked += 1;
        assert_eq!(f["metadata"]["sequence"].as_u64(), Some(seq + 1), "the finding follows its activity: {f:#}");
        assert_eq!(field(f, "/finding_info/related_events/0/uid"), seq.to_string());
        assert_eq!(f["finding_info"]["related_events"][0]["type_uid"], a["type_uid"]);
        assert_eq!(f["unmapped"]["activity_class_uid"], a["class_uid"]);
        for key in ["verdict", "agent", "rule", "policy_hash", "cgroup", "session", "hold", "tier", "ancestry"] {
            assert_eq!(f["unmapped"][key], a["unmapped"][key], "unmapped.{key} of {f:#}");
        }
        for key in ["action_id", "disposition_id", "severity_id", "time"] {
            assert_eq!(f[key], a[key], "{key} of {f:#}");
        }
        let evidence = &f["evidences"][0];
        assert_eq!(evidence["actor"], a["actor"], "{f:#}");
        for key in ["process", "dst_endpoint", "connection_info"] {
            assert_eq!(evidence.get(key), a.get(key), "evidence {key} of {f:#}");
        }
        let would = field(a, "/unmapped/verdict").starts_with("would-");
        assert_eq!(f["is_alert"], !would, "{f:#}");
        assert!(!field(f, "/finding_info/title").is_empty() && !field(f, "/finding_info/uid").is_empty(), "{f:#}");
    }
    assert_eq!(linked, findings.len(), "findings linked to no activity: {findings:#?}");
    let uids: BTreeSet<String> = findings.iter().map(|f| field(f, "/finding_info/uid")).collect();
    assert_eq!(uids.len(), findings.len(), "finding uids repeat");
}

/// Asserts that each of `expected` was produced (and, the harness checked, validated).
fn assert_kinds(daemon: &Daemon, expected: &[&str]) -> BTreeMap<String, usize> {
    let kinds = daemon.validated_kinds();
    let missing: Vec<&&str> = expected.iter().filter(|k| !kinds.contains_key(**k)).collect();
    assert!(missing.is_empty(), "verdict kinds not produced: {missing:?}; validated: {kinds:#?}");
    kinds
}

/// `guard-agent verdicts ecs` on these lines: (exit code, ECS documents, stderr).
fn ecs(lines: &[String]) -> (Option<i32>, Vec<Value>, String) {
    let mut child = Command::new(agent_bin())
        .args(["verdicts", "ecs"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn guard-agent verdicts ecs");
    let mut stdin = child.stdin.take().unwrap();
    for l in lines {
        writeln!(stdin, "{l}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let docs = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("an ECS line is JSON")).collect();
    (out.status.code(), docs, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Milliseconds since the epoch of an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn epoch_ms(t: &str) -> u64 {
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap_or_else(|_| panic!("bad time {t}"));
    assert!(t.len() == 24 && t.ends_with('Z'), "bad time {t}");
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from 1970-01-01 (the era-based method, inverse of the agent's).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)) * 1000 + n(20..23)) as u64
}

/// The ECS fields every projection shares, checked against the OCSF object.
fn assert_ecs_common(e: &Value, o: &Value) {
    assert_eq!(epoch_ms(e["@timestamp"].as_str().unwrap()), o["time"].as_u64().unwrap(), "{e:#}");
    assert_eq!(e["event"]["sequence"], o["metadata"]["sequence"]);
    assert_eq!(e["event"]["severity"], o["severity_id"]);
    assert_eq!(e["host"]["hostname"], o["device"]["hostname"]);
    assert_eq!(e["observer"]["product"], "guard");
    assert_eq!(e["observer"]["version"], o["metadata"]["product"]["version"]);
    assert_eq!(e["guard"]["verdict"], o["unmapped"]["verdict"]);
    assert_eq!(e["guard"]["agent"], o["unmapped"]["agent"]);
    assert_eq!(e["guard"]["policy_hash"], o["unmapped"]["policy_hash"]);
    assert_eq!(e["guard"]["cgroup"], o["unmapped"]["cgroup"]);
    assert_eq!(e["guard"]["ocsf"]["class_uid"], o["class_uid"]);
    assert_eq!(e["guard"]["ocsf"]["type_uid"], o["type_uid"]);
    assert_eq!(e["labels"], o["unmapped"]["session"]["labels"], "the launch labels: {e:#}");
    match o["unmapped"]["rule"].as_object() {
        Some(rule) => {
            assert_eq!(e["rule"]["id"], rule["id"].to_string());
            assert_eq!(e["rule"]["name"], rule["matcher"]);
            assert_eq!(e["rule"]["ruleset"], rule["section"]);
            assert_eq!(e["rule"].get("description"), rule.get("message").filter(|m| !m.is_null()));
        }
        None => assert!(e.get("rule").is_none(), "no rule, no rule.*: {e:#}"),
    }
}

fn assert_ecs_exec(e: &Value, o: &Value) {
    assert_ecs_common(e, o);
    assert_eq!(e["event"]["category"], json!(["process"]));
    assert_eq!(e["event"]["action"], "exec");
    assert_eq!(e["process"]["pid"], o["process"]["pid"]);
    assert_eq!(e["process"]["executable"], o["process"]["file"]["path"]);
    assert_eq!(e["process"]["name"], o["process"]["name"]);
    assert_eq!(e["process"]["args"], o["unmapped"]["argv"]);
    assert_eq!(e["process"]["args_count"].as_u64(), o["unmapped"]["argv"].as_array().map(|a| a.len() as u64));
    assert_eq!(e["process"]["command_line"], o["process"]["cmd_line"]);
    assert_eq!(e["process"]["working_directory"], o["process"]["working_directory"]);
    assert_eq!(e["process"]["parent"]["pid"], o["process"]["parent_process"]["pid"]);
    assert_eq!(e["user"]["id"], o["process"]["user"]["uid"]);
    assert_eq!(e["user"]["name"], "root", "the session's user runs it: {e:#}");
    assert_eq!(e["user"]["effective"]["id"], o["unmapped"]["euid"].to_string());
    assert!(e.get("destination").is_none());
}

#[test]
fn every_enforce_mode_verdict_kind_validates_and_what_was_stopped_has_one_linked_finding() {
    let dir = TempDir::new("schema");
    let agent = unique("schema");
    let (ok, denied, audited, held) = (install_marker(&dir, "guard-ok"), install_marker(&dir, "guard-denied"), install_marker(&dir, "guard-audited"), install_marker(&dir, "guard-held"));
    let allowed_tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let denied_tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let denied_udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (ap, dp, up) = (allowed_tcp.local_addr().unwrap().port(), denied_tcp.local_addr().unwrap().port(), denied_udp.local_addr().unwrap().port());
    let protected = dir.path("protected");
    std::fs::create_dir_all(&protected).unwrap();
    std::fs::write(protected.join("keep"), "kept\n").unwrap();
    let policy = format!(
        "agents:\n  - name: {agent}\n    exec:\n      deny:\n        - basename: guard-denied\n          message: test binary\n        - basename: guard-audited\n          action: audit\n      hold:\n        - basename: guard-held\n          approve_timeout: 60s\n          message: needs a person\n    network:\n      deny:\n        - cidr: 127.0.0.1\n          ports: [{dp}, {up}]\n    files:\n      delete_budget: {{ count: 5, per: 60s, action: kill }}\n      protect:\n        - path: {}/**\n          deny: [delete, rename]\n",
        protected.display()
    );
    let daemon = Daemon::start(&dir, &policy);
    let labels = ["--label", "ticket=OPS-6", "--label", "principal=alice@example.com"];

    // Execs: allowed, killed, audited.
    let (_, out) = launch_with(&labels, &agent, &[&ok, "--flag", "an arg"], &[]);
    assert!(out.status.success(), "{:?}", out.status);
    let (_, out) = launch_with(&labels, &agent, &[&denied, "-u", "x"], &[]);
    assert!(!out.status.success());
    let (_, out) = launch(&agent, &[&audited], &[]);
    assert!(out.status.success());
    let exec_allowed = daemon.await_verdict("exec allowed", 10, |v| exec_of(v, &ok));
    let exec_killed = daemon.await_verdict("exec killed", 10, |v| exec_of(v, &denied));
    daemon.await_verdict("exec audited", 10, |v| exec_of(v, &audited));

    // Holds: approved (held, then allowed) and denied (held, then killed).
    for (word, arg) in [("approve", "approve-me"), ("deny", "deny-me")] {
        let child = spawn_launch(&[], &agent, &[&held, arg], &[]);
        let v = daemon.await_verdict("held", 10, |v| exec_of(v, &held) && field(v, "/unmapped/verdict") == "held" && field(v, "/process/cmd_line").ends_with(arg));
        let out = agent_cmd(&[word, &field(&v, "/unmapped/hold/id")]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        child.wait_with_output().unwrap();
        let decided = if word == "approve" { "allowed" } else { "killed" };
        daemon.await_verdict("decided", 10, |v| exec_of(v, &held) && field(v, "/unmapped/verdict") == decided && field(v, "/process/cmd_line").ends_with(arg));
    }

    // Network: connect allowed and denied, a denied datagram, raw and packet sockets.
    let (code, pid, _) = net_call(Some(&agent), NET, &["127.0.0.1", &ap.to_string()]);
    assert_eq!(code, 0);
    daemon.await_verdict("connect allowed", 10, by_pid(&pid));
    let (code, pid, errno) = net_call(Some(&agent), NET, &["127.0.0.1", &dp.to_string()]);
    assert_eq!((code, errno), (3, Some(libc::EPERM)));
    let connect_denied = daemon.await_verdict("connect denied", 10, by_pid(&pid));
    let (code, pid, _) = net_call(Some(&agent), NET, &["127.0.0.1", &up.to_string(), "sendto"]);
    assert_eq!(code, 3);
    daemon.await_verdict("datagram denied", 10, by_pid(&pid));
    let (code, pid, _) = net_call(Some(&agent), NET, &["raw"]);
    assert_eq!(code, 3);
    daemon.await_verdict("raw socket refused", 10, by_pid(&pid));
    let (_, out) = launch(&agent, &[NET, "packet"], &[]);
    let pid = String::from_utf8_lossy(&out.stdout).lines().find_map(|l| l.strip_prefix("pid ")).unwrap_or_default().to_owned();
    daemon.await_verdict("packet socket killed", 10, by_pid(&pid));

    // A workload past its deletion budget: killed.
    let doomed = files(&dir, "doomed", 20);
    let (_, out) = launch(&agent, &["/usr/bin/rm", "-rf", &doomed], &[]);
    assert!(!out.status.success());
    let deletions = daemon.await_verdict("deletions killed", 10, |v| field(v, "/unmapped/operation") == "delete_budget");

    // A workload moved out of its cgroups (reported), then killed there.
    let root = guard_tests::cgroup2_root();
    let script = format!("echo $$ > {}/cgroup.procs && exec {denied}", root.display());
    launch(&agent, &["sh", "-c", &script], &[]);
    daemon.await_verdict("moved out", 10, |v| field(v, "/unmapped/operation") == "moved_out");

    // A delete refused under a protected path (Landlock), reported as File System Activity.
    let keep = protected.join("keep").display().to_string();
    let (_, out) = launch(&agent, &["rm", "-f", &keep], &[]);
    assert_eq!((out.status.code(), out.status.signal()), (Some(1), None), "rm of a protected file: {out:?}");
    assert!(protected.join("keep").exists());
    let file_denied = daemon.await_verdict("file delete denied", 10, |v| v["class_uid"] == 1001 && field(v, "/file/path") == keep);
    for key in ["file", "actor"] {
        let mut damaged = file_denied.clone();
        damaged.as_object_mut().unwrap().remove(key);
        assert!(!ocsf_errors(&damaged).is_empty(), "the 1001 schema accepted a verdict without `{key}`");
    }

    // Policy reloads: one that works, one that fails.
    let policy_file = dir.path("policy.yaml");
    std::fs::write(&policy_file, format!("{policy}# reloaded\n")).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.await_verdict("reload", 10, |v| v["class_uid"] == 6002 && field(v, "/unmapped/verdict") == "allowed");
    std::fs::write(&policy_file, "agents:\n  - name: x\n    exec:\n      deny:\n        - basenme: y\n").unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.await_verdict("failed reload", 10, |v| v["class_uid"] == 6002 && !field(v, "/unmapped/policy/error").is_empty());

    // Every kind was produced, and validated (the harness fails the test on any line that does
    // not); findings came with exactly the verdicts that stopped or held something. A finding
    // follows its verdict: once a later exec's verdict is read, every earlier line is too.
    daemon.barrier(&agent);
    assert_kinds(
        &daemon,
        &[
            "exec/allowed", "exec/killed", "exec/audited", "exec/held",
            "connect/allowed", "connect/denied", "sendmsg/denied", "socket/denied", "socket/killed",
            "moved_out/audited", "policy_load/allowed", "policy_load/denied", "delete_budget/killed",
            "finding/delete_budget/killed", "finding/exec/killed", "finding/exec/held", "finding/connect/denied", "finding/sendmsg/denied",
            "finding/socket/denied", "finding/socket/killed", "file/denied", "finding/file/denied",
        ],
    );
    assert_findings_linked(&daemon);
    assert!(daemon.findings(|f| field(f, "/unmapped/verdict") == "allowed" || field(f, "/unmapped/verdict") == "audited").is_empty());

    // The schemas are not a formality: damaged copies of real objects fail them.
    assert_schemas_reject_damage(&exec_killed, &connect_denied, &daemon.findings(|_| true)[0]);
    for (what, pointer) in [("deletions without a count", "/unmapped/deletions/count"), ("delete_budget without deletions", "/unmapped/deletions")] {
        let mut d = deletions.clone();
        d.pointer_mut(pointer.rsplit_once('/').unwrap().0).and_then(Value::as_object_mut).unwrap().remove(pointer.rsplit_once('/').unwrap().1);
        assert!(!ocsf_errors(&d).is_empty(), "the schema accepted {what}: {d:#}");
    }

    // ECS, field by field, from real verdicts: exec allowed, exec killed (and its finding),
    // connect denied.
    let killed_finding = daemon.findings(|f| f["unmapped"]["activity_sequence"] == exec_killed["metadata"]["sequence"]).pop().unwrap();
    let lines: Vec<String> = [&exec_allowed, &exec_killed, &connect_denied, &killed_finding].iter().map(|v| v.to_string()).collect();
    let (code, docs, stderr) = ecs(&lines);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(docs.len(), 4, "{docs:#?}");

    let e = &docs[0];
    assert_ecs_exec(e, &exec_allowed);
    assert_eq!(e["event"]["kind"], "event");
    assert_eq!(e["event"]["type"], json!(["start", "allowed"]));
    assert_eq!(e["event"]["outcome"], "success");
    assert_eq!(e["process"]["args"], json!([ok, "--flag", "an arg"]));
    assert_eq!(e["labels"], json!({ "ticket": "OPS-6", "principal": "alice@example.com" }));

    let e = &docs[1];
    assert_ecs_exec(e, &exec_killed);
    assert_eq!(e["event"]["kind"], "event");
    assert_eq!(e["event"]["type"], json!(["start", "denied"]));
    assert_eq!(e["event"]["outcome"], "failure");
    assert_eq!(e["event"]["reason"], "test binary");
    assert_eq!(e["rule"]["name"], "basename: guard-denied");
    assert_eq!(e["rule"]["description"], "test binary");
    assert_eq!(e["rule"]["ruleset"], "exec.deny");
    assert_eq!(e["process"]["args"], json!([denied, "-u", "x"]));

    let e = &docs[2];
    let o = &connect_denied;
    assert_eq!(epoch_ms(e["@timestamp"].as_str().unwrap()), o["time"].as_u64().unwrap());
    assert_eq!(e["event"]["kind"], "event");
    assert_eq!(e["event"]["category"], json!(["network"]));
    assert_eq!(e["event"]["type"], json!(["connection", "denied"]));
    assert_eq!(e["event"]["action"], "connection_attempted");
    assert_eq!(e["event"]["outcome"], "failure");
    assert_eq!(e["event"]["sequence"], o["metadata"]["sequence"]);
    assert_eq!(e["destination"]["ip"], o["dst_endpoint"]["ip"]);
    assert_eq!(e["destination"]["ip"], "127.0.0.1");
    assert_eq!(e["destination"]["port"], o["dst_endpoint"]["port"]);
    assert_eq!(e["destination"]["port"], dp);
    assert_eq!(e["network"]["transport"], "tcp");
    assert_eq!(e["network"]["iana_number"], "6");
    assert_eq!(e["network"]["type"], "ipv4");
    assert_eq!(e["network"]["direction"], "egress");
    assert_eq!(e["process"]["pid"], o["actor"]["process"]["pid"]);
    assert_eq!(e["process"]["executable"], o["actor"]["process"]["file"]["path"]);
    assert_eq!(e["process"]["executable"], NET);
    assert_eq!(e["process"]["parent"]["pid"], o["actor"]["process"]["parent_process"]["pid"]);
    assert_eq!(e["user"]["id"], o["actor"]["user"]["uid"]);
    assert_eq!(e["rule"]["name"], o["unmapped"]["rule"]["matcher"]);
    assert_eq!(e["guard"]["operation"], "connect");
    assert_eq!(e["guard"]["verdict"], "denied");
    assert_eq!(e["host"]["hostname"], o["device"]["hostname"]);

    let e = &docs[3];
    assert_eq!(e["event"]["kind"], "alert");
    assert_eq!(e["event"]["category"], json!(["intrusion_detection", "process"]));
    assert_eq!(e["event"]["action"], "exec");
    assert_eq!(e["event"]["outcome"], "failure");
    assert_eq!(e["event"]["id"], killed_finding["finding_info"]["uid"]);
    assert_eq!(e["message"], killed_finding["finding_info"]["title"]);
    assert_eq!(e["process"]["pid"], exec_killed["process"]["pid"]);
    assert_eq!(e["process"]["executable"], exec_killed["process"]["file"]["path"]);
    assert_eq!(e["guard"]["activity_sequence"], exec_killed["metadata"]["sequence"]);

    // A line that is not a verdict is reported and skipped, the rest still projected.
    let (code, docs, stderr) = ecs(&[lines[0].clone(), "{\"class_uid\": 3002}".into(), "oops".into(), lines[2].clone()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(docs.len(), 2);
    assert!(stderr.contains("line 2: class_uid 3002") && stderr.contains("line 3: not JSON"), "{stderr}");
    daemon.stop();
}

/// Each damage to a valid object makes it fail its schema.
fn assert_schemas_reject_damage(exec: &Value, connect: &Value, finding: &Value) {
    for v in [exec, connect, finding] {
        assert!(ocsf_errors(v).is_empty(), "{:?}", ocsf_errors(v));
    }
    let damaged = |v: &Value, pointer: &str, to: Option<Value>| {
        let mut d = v.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let obj = d.pointer_mut(parent).and_then(Value::as_object_mut).unwrap_or_else(|| panic!("{pointer} in {v:#}"));
        match to {
            Some(x) => obj.insert(key.to_owned(), x),
            None => obj.remove(key),
        };
        d
    };
    let cases: Vec<(&str, Value)> = vec![
        ("no metadata.product", damaged(exec, "/metadata/product", None)),
        ("no metadata.version", damaged(exec, "/metadata/version", None)),
        ("another OCSF version", damaged(exec, "/metadata/version", Some(json!("1.0.0")))),
        ("type_uid not class*100+activity", damaged(exec, "/type_uid", Some(json!(100702)))),
        ("activity_name not the activity's", damaged(exec, "/activity_name", Some(json!("Terminate")))),
        ("wrong category", damaged(exec, "/category_uid", Some(json!(4)))),
        ("time in seconds", damaged(exec, "/time", Some(json!(exec["time"].as_u64().unwrap() / 1000)))),
        ("severity_id out of range", damaged(exec, "/severity_id", Some(json!(7)))),
        ("severity caption disagrees", damaged(exec, "/severity", Some(json!("Low")))),
        ("action_id unknown", damaged(exec, "/action_id", Some(json!(5)))),
        ("no actor", damaged(exec, "/actor", None)),
        ("no process", damaged(exec, "/process", None)),
        ("file without name", damaged(exec, "/process/file/name", None)),
        ("uid as a number", damaged(exec, "/process/user/uid", Some(json!(0)))),
        ("no unmapped.verdict", damaged(exec, "/unmapped/verdict", None)),
        ("unknown verdict", damaged(exec, "/unmapped/verdict", Some(json!("exploded")))),
        ("policy hash not SHA-256", damaged(exec, "/unmapped/policy_hash", Some(json!("abc")))),
        ("rule neither object nor null", damaged(exec, "/unmapped/rule", Some(json!("basename")))),
        ("no sequence", damaged(exec, "/metadata/sequence", None)),
        ("unknown class", damaged(exec, "/class_uid", Some(json!(1001)))),
        ("connect without destination", damaged(connect, "/dst_endpoint", None)),
        ("port out of range", damaged(connect, "/dst_endpoint/port", Some(json!(70000)))),
        ("not an IP address", damaged(connect, "/dst_endpoint/ip", Some(json!("localhost")))),
        ("no direction", damaged(connect, "/connection_info/direction_id", None)),
        ("finding without finding_info.uid", damaged(finding, "/finding_info/uid", None)),
        ("finding without link", damaged(finding, "/finding_info/related_events", None)),
        ("finding without evidence", damaged(finding, "/evidences", Some(json!([])))),
        ("finding about an allowed exec", damaged(finding, "/unmapped/verdict", Some(json!("allowed")))),
        ("finding status out of range", damaged(finding, "/status_id", Some(json!(9)))),
    ];
    for (what, v) in cases {
        assert!(!ocsf_errors(&v).is_empty(), "the schema accepted {what}: {v:#}");
    }
}

#[test]
fn every_audit_mode_verdict_kind_validates_and_has_an_informational_finding() {
    let dir = TempDir::new("schema-audit");
    let agent = unique("schema-audit");
    let (killed, held, argv) = (install_marker(&dir, "guard-would-kill"), install_marker(&dir, "guard-would-hold"), install_marker(&dir, "guard-argv"));
    let denied_tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let dp = denied_tcp.local_addr().unwrap().port();
    let policy = format!(
        "mode: audit\nagents:\n  - name: {agent}\n    exec:\n      deny:\n        - basename: guard-would-kill\n        - basename: guard-argv\n          argv_any: [--evil]\n      hold:\n        - basename: guard-would-hold\n    network:\n      deny:\n        - cidr: 127.0.0.1\n          ports: [{dp}]\n    files:\n      delete_budget: {{ count: 5, per: 60s, action: kill }}\n"
    );
    let daemon = Daemon::start(&dir, &policy);
    let doomed = files(&dir, "doomed", 20);
    let (_, out) = launch(&agent, &["/usr/bin/rm", "-rf", &doomed], &[]);
    assert!(out.status.success(), "audit mode stops no deletion: {:?}", out.status);
    daemon.await_verdict("deletions would-kill", 10, |v| field(v, "/unmapped/operation") == "delete_budget");
    for cmd in [vec![killed.as_str()], vec![held.as_str()], vec![argv.as_str(), "--evil"], vec![argv.as_str(), "--good"]] {
        let (_, out) = launch(&agent, &cmd, &[]);
        assert!(out.status.success(), "audit mode stops nothing: {cmd:?} {:?}", out.status);
    }
    daemon.await_verdict("would-kill", 10, |v| exec_of(v, &killed));
    daemon.await_verdict("would-hold", 10, |v| exec_of(v, &held));
    let evil = daemon.await_verdict("argv would-kill", 10, |v| exec_of(v, &argv) && field(v, "/process/cmd_line").ends_with("--evil"));
    assert_eq!(field(&evil, "/unmapped/verdict"), "would-kill");
    let good = daemon.await_verdict("argv allowed", 10, |v| exec_of(v, &argv) && field(v, "/process/cmd_line").ends_with("--good"));
    assert_eq!(field(&good, "/unmapped/verdict"), "allowed");
    let (code, pid, _) = net_call(Some(&agent), NET, &["127.0.0.1", &dp.to_string()]);
    assert_eq!(code, 0);
    daemon.await_verdict("would-deny", 10, by_pid(&pid));
    for kind_of in ["raw", "packet"] {
        let (code, pid, _) = net_call(Some(&agent), NET, &[kind_of]);
        assert_eq!(code, 0, "audit mode lets a {kind_of} socket be made");
        daemon.await_verdict(kind_of, 10, by_pid(&pid));
    }
    // Every finding is read once a later exec's verdict is.
    daemon.barrier(&agent);
    assert_kinds(
        &daemon,
        &[
            "exec/would-kill", "exec/would-hold", "exec/allowed", "connect/would-deny", "socket/would-deny", "socket/would-kill",
            "delete_budget/would-kill", "finding/delete_budget/would-kill",
            "finding/exec/would-kill", "finding/exec/would-hold", "finding/connect/would-deny", "finding/socket/would-deny", "finding/socket/would-kill",
        ],
    );
    assert_findings_linked(&daemon);
    let findings = daemon.findings(|_| true);
    assert!(findings.iter().all(|f| f["is_alert"] == false && f["action_id"] == 3), "{findings:#?}");
    // The kinds the harness recorded are what the daemon printed, one by one.
    let counted: usize = daemon.validated_kinds().values().sum();
    assert_eq!(counted, daemon.emitted().len());
    let by_kind = daemon.emitted().iter().filter(|v| kind(v) == "finding/exec/would-kill").count();
    assert_eq!(by_kind, 2, "a would-kill finding for the basename rule and one for the argv rule");
    daemon.stop();
}
