//! An instruction-count harness for what the daemon does per verdict (run it under callgrind;
//! wall time on a shared machine says little):
//!
//! ```sh
//! cargo test --release -p guard-agent --bins --no-run
//! GUARD_BENCH_N=2000 GUARD_BENCH_KIND=exec valgrind --tool=callgrind target/release/deps/guard_agent-HASH \
//!     daemon::output::bench --ignored --exact --test-threads=1
//! ```
//!
//! `GUARD_BENCH_KIND`: `exec` (an allowed exec of a launched agent), `killed` (a killed exec, with
//! its finding), `connect` (an allowed connect); `GUARD_BENCH_SINKS=all` adds what the syslog,
//! Splunk HEC and Elasticsearch sinks do with each line (`hec`: syslog and HEC only), from the
//! line's marks (`verdict::Marks`) or, with `GUARD_BENCH_MARKS=0`, scanning it; `GUARD_BENCH_AUDIT=1` writes the audit
//! log too (its SHA-256 chain costs about 50 instructions per byte of verdict). Instructions per verdict: the run's
//! total minus a run with `GUARD_BENCH_N=0`, divided by N.
use std::hint::black_box;

use guard_common::Decision;
use serde_json::json;

use crate::{
    policy::compile::RuleInfo,
    proctable::Ancestor,
    verdict::{ExecInfo, Subject, Verdict},
};

pub(crate) fn sample(kind: &str, i: usize) -> Verdict {
    let exec = || {
        Subject::Exec(ExecInfo {
            filename: "/usr/bin/python3".into(),
            argv: vec!["python3".into(), "-m".into(), "pip".into(), "install".into(), format!("requests=={i}")],
            cwd: Some("/home/dev/project".into()),
            euid: 1000,
            loginuid: Some(1000),
            comm: "python3".into(),
            identity: Some((2049, 1_234_567)),
            ..Default::default()
        })
    };
    let (decision, subject, rule) = match kind {
        "connect" => (Decision::Allowed, Subject::Connect { addr: "140.82.112.3".parse().unwrap(), port: 443, protocol: 6, exe: Some("/usr/bin/git".into()), sendmsg: false }, None),
        "killed" => (
            Decision::Killed,
            exec(),
            Some(RuleInfo { id: 3, section: "exec.deny", action: "kill", matcher: "basename: python3".into(), message: Some("no package installs".into()), location: "/etc/guard/policy.yaml:9".into() }),
        ),
        _ => (Decision::Allowed, exec(), None),
    };
    Verdict {
        time_ms: 1_795_255_200_123 + i as u64,
        decision,
        agent: Some("claude".into()),
        rule,
        policy_hash: "9f2c4e1a7b3d5f60".into(),
        policy_generation: Some(1),
        pid: 4242 + i as u32,
        ppid: 4241,
        uid: 1000,
        gid: 1000,
        cgroup_id: 8812,
        cgroup_path: Some("/guard.slice/claude/s1".into()),
        subject,
        ancestry: vec![Ancestor { pid: 4241, exe: "/usr/bin/bash".into() }, Ancestor { pid: 4000, exe: "/usr/local/bin/claude".into() }],
        error: None,
        session: Some(crate::verdict::Shared::new(json!({
            "id": "s1", "launch_name": "claude", "labels": { "team": "infra", "ticket": "OPS-12" },
            "user": { "uid": 1000, "name": "dev", "loginuid": 1000 }, "launcher_pid": 3999, "cgroup": "/guard.slice/claude/s1", "started": 1_795_255_000_000u64,
        }))),
        hold: None,
        reason: None,
        exfil: None,
        sql: None,
    }
}

#[test]
#[ignore = "a harness for callgrind, not a test"]
fn bench() {
    let n: usize = std::env::var("GUARD_BENCH_N").ok().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let kind = std::env::var("GUARD_BENCH_KIND").unwrap_or_else(|_| "exec".into());
    let sinks = std::env::var("GUARD_BENCH_SINKS").unwrap_or_default();
    let (all, es) = (sinks == "all" || sinks == "hec", sinks == "all");
    let with_audit = std::env::var("GUARD_BENCH_AUDIT").is_ok_and(|s| s == "1");
    let scan = std::env::var("GUARD_BENCH_MARKS").is_ok_and(|s| s == "0");
    let dir = std::env::temp_dir().join(format!("guard-bench-{}", std::process::id()));
    let masker = crate::mask::Masker::default();
    let mut seq = crate::seq::Sequence::open(None).unwrap();
    let mut audit = crate::audit::Log::open(&dir.join("audit"), None, crate::audit::LogOptions::default()).unwrap();
    let mut file = crate::sinks::Sinks::open(&[crate::config::SinkConfig::File { path: dir.join("verdicts.jsonl"), rotation: Default::default() }], None).unwrap();
    // One launch session for all of them, as the daemon shares its session's identity.
    let session = sample(&kind, 0).session;
    let verdicts: Vec<Verdict> = (0..n).map(|i| Verdict { session: session.clone(), ..sample(&kind, i) }).collect();
    for v in &verdicts {
        super::encode(&masker, &mut seq, v, None, &mut |obj| {
            if with_audit {
                let _ = audit.append_canonical(obj.audit_body(), Some(obj.sequence));
            }
            file.write_marked(obj.line(), obj.marks.as_ref());
            if all {
                let marks = if scan { None } else { obj.marks.as_ref() };
                black_box(crate::sinks::syslog::message(obj.line(), marks, 10, "host"));
                black_box(crate::sinks::bench_http_encode(obj.line(), marks, es));
            }
        });
    }
    file.flush();
    let _ = std::fs::remove_dir_all(&dir);
}
