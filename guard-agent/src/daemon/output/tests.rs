//! The lines `encode` makes are the ones the general path (`to_ocsf`, `mask_value`, numbering,
//! `Value::to_string`) makes, byte for byte, for a corpus of verdicts of every kind; and each
//! line is its own canonical JSON (what the audit log hashes).
use guard_common::Decision;
use serde_json::{Value, json};

use super::{bench::sample, encode};
use crate::{
    mask::Masker,
    policy::compile::RuleInfo,
    proctable::Ancestor,
    seq::Sequence,
    verdict::{ExecInfo, Subject, Verdict},
};

fn exec(filename: &str, argv: &[&str]) -> ExecInfo {
    ExecInfo { filename: filename.into(), argv: argv.iter().map(|a| a.to_string()).collect(), cwd: Some("/work".into()), comm: "x".into(), ..Default::default() }
}

fn rule(message: Option<&str>) -> Option<RuleInfo> {
    Some(RuleInfo { id: 7, section: "exec.deny", action: "kill", matcher: "basename: mysql".into(), message: message.map(str::to_owned), location: "/etc/guard/p.yaml:3".into() })
}

/// Representative verdicts: execs killed, allowed, held, with secrets, odd characters and
/// absent fields; connects denied and allowed, sends; and one of every other subject.
fn corpus() -> Vec<Verdict> {
    let base = |kind: &str| sample(kind, 1);
    let with = |kind: &str, f: &dyn Fn(&mut Verdict)| {
        let mut v = base(kind);
        f(&mut v);
        v
    };
    let ip = |s: &str| s.parse().unwrap();
    vec![
        base("exec"),
        base("killed"),
        base("connect"),
        with("killed", &|v| {
            v.subject = Subject::Exec(exec("/usr/bin/mysql", &["mysql", "-uroot", "-pS3cretPass", "-h", "db"]));
            v.rule = rule(Some("password=hunter22 in a message"));
        }),
        with("exec", &|v| {
            v.subject = Subject::Exec(exec("/usr/bin/curl", &["curl", "-H", "Authorization: Bearer abcdef123456", "https://u:pw123456@h/x?sig=abcdef0123"]));
        }),
        with("exec", &|v| {
            v.subject = Subject::Exec(exec("/bin/sh", &["sh", "-c", "export GITHUB_TOKEN=ghp_YK0fFWqcajQLE9WVxuXbrFZmU3A6IIRgmKJS; git push"]));
            v.reason = Some("token=abcdef123456 seen".into());
        }),
        with("exec", &|v| {
            let mut e = exec("/tmp/we\"ird\\na\nme\u{1}\u{7f}", &["a\"b", "c\\d", "tab\there", "\u{8}\u{c}\r", "é ☃ 𝄞", ""]);
            e.filename_truncated = true;
            e.argv_truncated = true;
            e.cwd = None;
            e.loginuid = None;
            e.identity = None;
            e.comm = "we\"ird".into();
            v.subject = Subject::Exec(e);
            v.agent = None;
            v.cgroup_path = None;
            v.ancestry.clear();
            v.session = None;
            v.policy_generation = None;
            v.error = Some("kill failed: ESRCH");
        }),
        with("exec", &|v| v.subject = Subject::Exec(ExecInfo::default())),
        with("exec", &|v| {
            v.decision = Decision::Held;
            v.rule = Some(RuleInfo { id: 2, section: "exec.hold", action: "hold", matcher: "basename: rm".into(), message: None, location: "p.yaml:5".into() });
            v.hold = Some(json!({ "id": 12, "decision": "approved", "by": "alice", "secret": "x", "waited_ms": 1500 }));
            v.reason = Some("continued while held".into());
        }),
        with("exec", &|v| v.decision = Decision::WouldKill),
        with("exec", &|v| v.decision = Decision::Audited),
        // Session labels whose key masking renames, and an argv inside a free-form value.
        with("exec", &|v| {
            v.session = Some(crate::verdict::Shared::new(json!({ "id": "s2", "labels": { "api_token=abcdef123456": "v", "note": "Bearer abc123def456" }, "started": 1 })));
            v.sql = Some(json!({ "argv": ["psql", "--password", "S3cretPass"], "cmd_line": "psql --password S3cretPass", "ratio": 0.25 }));
            v.exfil = Some(json!({ "names": ["example.com"], "bytes": 12345678901u64, "negative": -3 }));
        }),
        with("connect", &|v| {
            v.decision = Decision::Denied;
            v.subject = Subject::Connect { addr: ip("2001:db8::1"), port: 22, protocol: 6, exe: None, sendmsg: false };
            v.rule = Some(RuleInfo { id: 9, section: "network.deny", action: "deny", matcher: "cidr: 2001:db8::/32".into(), message: Some("no ssh".into()), location: "p.yaml:20".into() });
            v.exfil = Some(json!({ "read": "/home/dev/.aws/credentials", "names": ["evil.example"] }));
        }),
        with("connect", &|v| v.subject = Subject::Connect { addr: ip("10.0.0.53"), port: 53, protocol: 17, exe: Some("/usr/bin/dig".into()), sendmsg: true }),
        with("connect", &|v| {
            v.decision = Decision::WouldDeny;
            v.subject = Subject::Connect { addr: ip("192.0.2.1"), port: 8443, protocol: 132, exe: Some("/opt/x".into()), sendmsg: false };
            v.reason = Some("learned from DNS".into());
        }),
        with("connect", &|v| v.subject = Subject::Socket { family: 17, sock_type: 3, protocol: 0, exe: Some("/usr/bin/tcpdump".into()) }),
        with("connect", &|v| {
            v.decision = Decision::Denied;
            v.subject = Subject::Flow { addr: ip("198.51.100.7"), port: 443, protocol: 6, exe: None, operation: "egress_budget" };
            v.exfil = Some(json!({ "budget": 1000, "sent": 5000 }));
        }),
        with("exec", &|v| v.subject = Subject::Moved { pid: 77, to: "/user.slice".into(), exe: Some("/bin/bash".into()) }),
        with("exec", &|v| {
            v.decision = Decision::Killed;
            v.subject = Subject::Deletions { exe: Some("/bin/rm".into()), deletions: json!({ "count": 120, "budget": 100, "per_s": 10, "where": "/home" }) };
        }),
        with("exec", &|v| {
            v.subject = Subject::Policy { source: "/etc/guard/policy.yaml".into(), error: Some("bad".into()), previous_hash: Some("ab".into()), warnings: vec!["w".into()] };
        }),
        with("exec", &|v| {
            v.subject = Subject::Lost { lost: vec![("exec".into(), 3)], totals: vec![("exec".into(), 9)], replaced: vec![], ring_buffer_bytes: 1 << 20 };
        }),
        with("exec", &|v| {
            v.decision = Decision::Denied;
            v.subject = Subject::File { op: "rename", path: "/etc/passwd".into(), to: Some("/tmp/p".into()), exe: Some("/bin/mv".into()), detail: json!({ "syscall": "renameat2", "errno": 1 }) };
        }),
    ]
}

/// The general path, as the daemon took it for every verdict before `verdict::encode`.
fn general(masker: &Masker, v: &Verdict, mut next: u64) -> Vec<String> {
    let mut lines = vec![];
    let mut value = v.to_ocsf();
    masker.mask_value(&mut value);
    value["metadata"]["sequence"] = json!(next);
    lines.push(value.to_string());
    if let Some(mut finding) = v.finding(&value) {
        next += 1;
        masker.mask_value(&mut finding);
        finding["metadata"]["sequence"] = json!(next);
        lines.push(finding.to_string());
    }
    lines
}

#[test]
fn encode_writes_what_the_general_path_writes() {
    for masker in [Masker::default(), Masker::new(&["corp-[0-9]{6}".into(), "claude".into()]).unwrap()] {
        let mut seq = Sequence::open(None).unwrap();
        for (i, v) in corpus().iter().enumerate() {
            let mut got = vec![];
            let mut audit = vec![];
            let mut first = None;
            encode(&masker, &mut seq, v, None, &mut |obj| {
                first.get_or_insert(obj.sequence);
                got.push(obj.line().to_owned());
                audit.push(obj.audit_body().to_vec());
            });
            let want = general(&masker, v, first.unwrap());
            for (g, w) in got.iter().zip(&want) {
                let (gv, wv): (Value, Value) = (serde_json::from_str(g).unwrap(), serde_json::from_str(w).unwrap());
                assert_eq!(gv, wv, "verdict {i}: the parsed objects differ");
                assert_eq!(g, w, "verdict {i}: same object, other bytes");
                // The line is its own canonical form: what the audit log hashes and `audit
                // verify` recomputes.
                assert_eq!(crate::audit::canonical(&gv), g.as_bytes(), "verdict {i}: the line is not canonical JSON");
            }
            assert_eq!(got.len(), want.len(), "verdict {i}: objects");
            assert_eq!(audit, got.iter().map(|l| l.clone().into_bytes()).collect::<Vec<_>>());
        }
    }
}

/// Nothing planted in the corpus reaches a line.
#[test]
fn encoded_lines_hold_no_planted_secret() {
    let masker = Masker::default();
    let mut seq = Sequence::open(None).unwrap();
    for v in corpus() {
        encode(&masker, &mut seq, &v, None, &mut |obj| {
            for secret in ["S3cretPass", "hunter22", "abcdef123456", "pw123456", "abcdef0123", "ghp_YK0f", "abc123def456"] {
                assert!(!obj.line().contains(secret), "{secret} in {}", obj.line());
            }
        });
    }
}

/// With a container the general path runs (it adds the container objects): the line has
/// them, masked, and is what the general path with `annotate` gives.
#[test]
fn container_verdicts_take_the_general_path() {
    use crate::container::{Info, Runtime, annotate};
    let masker = Masker::default();
    let info = Info { id: Some("0123456789ab".into()), runtime: Some(Runtime::Docker), image: Some("agent:1".into()), labels: [("token".to_string(), "password=hunter22".to_string())].into(), ..Default::default() };
    let mut seq = Sequence::open(None).unwrap();
    let v = sample("killed", 3);
    let mut lines = vec![];
    encode(&masker, &mut seq, &v, Some(&info), &mut |obj| lines.push((obj.sequence, obj.line().to_owned())));
    assert_eq!(lines.len(), 2, "the activity and its finding");
    assert_eq!(lines[1].0, lines[0].0 + 1);
    let mut want = v.to_ocsf();
    annotate(&mut want, &info);
    masker.mask_value(&mut want);
    want["metadata"]["sequence"] = json!(lines[0].0);
    assert_eq!(lines[0].1, want.to_string());
    assert!(lines[0].1.contains("\"container\"") && !lines[0].1.contains("hunter22"), "{}", lines[0].1);
    let ancestry: &[Ancestor] = &v.ancestry;
    assert_eq!(ancestry.len(), 2);
}

/// An audit log written by the general path (`Log::append` of the masked `Value`, as the
/// daemon did before `verdict::encode`) and continued, after a restart, with `encode`'s lines
/// verifies as one intact chain, and both halves hold the same bodies for the same verdicts.
#[test]
fn an_audit_log_verifies_across_old_and_new_records() {
    use crate::audit::{Log, LogOptions, VerifyOptions, log_files, verify};
    let dir = std::env::temp_dir().join(format!("guard-output-audit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let masker = Masker::default();
    let opts = || LogOptions { max_file_bytes: 64 << 10, checkpoint_every: 5, checkpoint_interval: std::time::Duration::from_secs(3600) };
    let mut old_bodies = vec![];
    let mut log = Log::open(&dir, None, opts()).unwrap();
    let mut n = 1;
    for v in corpus() {
        for line in general(&masker, &v, n) {
            let value: Value = serde_json::from_str(&line).unwrap();
            log.append(&value).unwrap();
            old_bodies.push(crate::audit::canonical(&value));
            n += 1;
        }
    }
    log.close().unwrap();
    let mut log = Log::open(&dir, None, opts()).unwrap();
    let mut seq = Sequence::open(None).unwrap();
    let mut new_bodies = vec![];
    for v in corpus() {
        encode(&masker, &mut seq, &v, None, &mut |obj| {
            log.append_canonical(obj.audit_body(), Some(obj.sequence)).unwrap();
            new_bodies.push(obj.audit_body().to_vec());
        });
    }
    log.close().unwrap();
    let r = verify(&log_files(&dir).unwrap(), &VerifyOptions::default()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(r.intact(), "{}", r.headline());
    assert_eq!(old_bodies.len(), new_bodies.len());
    for (o, n) in old_bodies.iter().zip(&new_bodies) {
        let (mut o, mut n): (Value, Value) = (serde_json::from_slice(o).unwrap(), serde_json::from_slice(n).unwrap());
        // Numbered differently (each run numbers from 1); the rest is the same.
        for v in [&mut o, &mut n] {
            v["metadata"]["sequence"] = json!(0);
            if let Some(u) = v.get_mut("unmapped").and_then(Value::as_object_mut) {
                u.remove("activity_sequence");
            }
            if let Some(f) = v.get_mut("finding_info").and_then(Value::as_object_mut) {
                f.remove("uid");
                f.remove("related_events");
            }
        }
        assert_eq!(o, n);
    }
}

/// The marks of every fast line slice out what a scan of the line finds, for each marked value
/// (masked, escaped, absent or null alike), so the syslog message made from them is the one
/// made by scanning; the other lines carry none.
#[test]
fn marks_point_at_what_a_scan_finds() {
    use crate::verdict::Mark;
    for masker in [Masker::default(), Masker::new(&["corp-[0-9]{6}".into(), "claude".into()]).unwrap()] {
        let mut seq = Sequence::open(None).unwrap();
        let mut marked = 0;
        for (i, v) in corpus().iter().enumerate() {
            let mut first = true;
            encode(&masker, &mut seq, v, None, &mut |obj| {
                let line = obj.line();
                assert_eq!(obj.marks.is_some(), first && v.has_fast_line(), "verdict {i}: marks on the fast activity only");
                first = false;
                let Some(m) = &obj.marks else { return };
                assert!(m.fit(line), "verdict {i}: the marks are of a line of another length");
                marked += 1;
                for w in Mark::ALL {
                    let (_, [scanned]) = crate::sinks::fields::fields(line, [w.path()]).unwrap();
                    let sliced = m.span(w).map(|(s, e)| serde_json::from_str::<Value>(&line[s..e]).unwrap());
                    assert_eq!(sliced, scanned, "verdict {i}: {w:?} in {line}");
                }
                assert_eq!(crate::sinks::fields::marked(line, Some(m), Mark::ALL), crate::sinks::fields::fields(line, Mark::ALL.map(Mark::path)));
                assert_eq!(crate::sinks::syslog::message(line, Some(m), 10, "h"), crate::sinks::syslog::message(line, None, 10, "h"), "verdict {i}");
            });
        }
        assert!(marked >= 12, "{marked} marked lines");
    }
}

/// Marks that do not slice out JSON values (a damaged spool) are not believed: the line is
/// scanned, and one that is not JSON is refused as without marks.
#[test]
fn damaged_marks_fall_back_to_the_scan() {
    use crate::verdict::{Mark, Marks};
    let mut seq = Sequence::open(None).unwrap();
    let mut lines = vec![];
    encode(&Masker::default(), &mut seq, &sample("killed", 2), None, &mut |obj| lines.push((obj.line().to_owned(), obj.marks)));
    let (line, marks) = &lines[0];
    let marks = marks.expect("a fast line");
    let want = crate::sinks::fields::fields(line, Mark::ALL.map(Mark::path)).unwrap();
    for (s, e) in [(0, 1), (1, 0), (line.len(), line.len() + 9), (3, 9)] {
        let mut bad = marks;
        bad.set(Mark::Verdict, (s, e));
        assert_eq!(crate::sinks::fields::marked(line, Some(&bad), Mark::ALL).unwrap(), want, "{s}-{e}");
    }
    let mut cut = line.clone();
    cut.pop();
    assert!(crate::sinks::fields::marked(&cut, Some(&marks), Mark::ALL).is_err(), "a line cut short is scanned and refused");
    assert!(crate::sinks::fields::marked("{\"time\":1}x", Some(&Marks::default()), [Mark::Time]).is_err());
}
