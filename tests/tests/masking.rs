//! Secrets never leave the daemon: 28 real-world shapes in agent command lines are masked in
//! every sink (stdout, a file, rsyslog over TCP, Splunk HEC), in the network sink's spool and in
//! the signed audit log, which `guard-agent audit verify` then finds intact. Run as root by
//! `cargo xtask test`.
use std::{path::Path, time::Duration};

use guard_tests::{
    Daemon, TempDir, agent_cmd, field,
    http_receiver::{Receiver, Vendor},
    rsyslog::Rsyslog,
    unique,
};
use serde_json::Value;

/// (argv, the secret in it). Fake secrets in the shapes real ones have.
const CASES: &[(&[&str], &str)] = &[
    (&["true", "--password=pw1Xq9Zr7Lk"], "pw1Xq9Zr7Lk"),
    (&["true", "--password", "pw2Abc9Xyz"], "pw2Abc9Xyz"),
    (&["true", "--token", "tok3ZZa8b7c6"], "tok3ZZa8b7c6"),
    (&["true", "--api-key=key4Qw8Er7Ty"], "key4Qw8Er7Ty"),
    (&["true", "--client-secret", "cs5Mn4Bv3Cx"], "cs5Mn4Bv3Cx"),
    (&["mysql", "-ppw6Lk2Jh8Gf", "prod"], "pw6Lk2Jh8Gf"),
    (&["sshpass", "-p", "pw7Rt5Yu6Io", "ssh", "db1"], "pw7Rt5Yu6Io"),
    (&["curl", "-u", "alice:pw8Zx1Cv2Bn", "https://example.com/"], "pw8Zx1Cv2Bn"),
    (&["curl", "-H", "Authorization: Bearer tok9Qa2Ws3Ed4Rf", "https://example.com/"], "tok9Qa2Ws3Ed4Rf"),
    (&["git", "clone", "https://bob:tok10Plm9Okn@github.com/acme/app.git"], "tok10Plm9Okn"),
    (&["true", "postgresql://app:pw11Hyt6Gvb@db.internal/app"], "pw11Hyt6Gvb"),
    (&["true", "AKIAIOSFODNN7EXAMPLE"], "IOSFODNN7EXAMPLE"),
    (&["true", "aws_secret_access_key=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"], "wJalrXUtnFEMIK7MDENG"),
    (&["true", "ghp_R2d2C3poBb8Ll9Kk7Jj6Hh5Gg4Ff3Dd2Ss1"], "R2d2C3poBb8Ll9Kk7Jj6"),
    (&["true", "glpat-Xy12Ab34Cd56Ef78Gh90"], "Xy12Ab34Cd56Ef78Gh90"),
    (&["true", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"], "AbCdEfGhIjKlMnOpQrStUvWx"),
    (&["true", "sk_live_51HqLyjWDarjtT1zdp7dcXYZ"], "51HqLyjWDarjtT1zdp7dc"),
    (&["true", "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"], "SyD-9tSrke72PouQMnMX"),
    (&["true", "sk-ant-api03-Zq8Wx7Ec6Rv5Tb4Yn3Um2Ik1Ol0Pa9Sd8Fg7"], "Zq8Wx7Ec6Rv5Tb4Yn3Um"),
    (&["true", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.Q1w2E3r4T5y6U7i8O9p0"], "eyJzdWIiOiJhZ2VudCJ9"),
    (&["true", "https://api.example.com/v1/items?access_token=tok21Abc123xyz&limit=5"], "tok21Abc123xyz"),
    (&["true", "PGPASSWORD=pw22Lkj9Hgf"], "pw22Lkj9Hgf"),
    (&["true", "DB_SECRET=sec23Poi8Uyt"], "sec23Poi8Uyt"),
    (&["true", "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAkey24SecretBody\n-----END RSA PRIVATE KEY-----"], "MIIEpAIBAAKCAQEAkey24SecretBody"),
    (&["curl", "-H", "Authorization: Basic dXNlcjpwdzI1c2VjcmV0", "https://example.com/"], "dXNlcjpwdzI1c2VjcmV0"),
    (&["docker", "login", "-u", "me", "-p", "pw26Qaz7Wsx", "registry.example.com"], "pw26Qaz7Wsx"),
    (&["true", "--secret=sec27Edc6Rfv"], "sec27Edc6Rfv"),
    (&["true", "hvs.CAESIabcdefghijklmnopqrstu28"], "CAESIabcdefghijklmnopqrstu28"),
];

/// Every file below `dir`, read as bytes (lossy text).
fn all_text_below(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.push_str(&all_text_below(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    out
}

#[test]
fn secrets_are_masked_in_every_sink_the_spool_and_the_audit_log() {
    let dir = TempDir::new("mask");
    let agent = unique("mask");
    // The tools whose flags decide what is secret (mysql -p, sshpass -p, ...): copies of true.
    let bin = dir.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["true", "mysql", "sshpass", "curl", "git", "docker"] {
        std::fs::copy("/bin/true", bin.join(tool)).unwrap();
    }
    let key = dir.path("audit.key");
    let out = agent_cmd(&["audit", "keygen", "--out", key.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let pubkey = dir.path("audit.key.pub");
    let syslog = Rsyslog::start(&dir, false);
    let hec = Receiver::start(Vendor::Hec { token: "00000000-1111-2222-3333-444444444444".into(), sourcetype: "guard:ocsf".into() }, true, false);
    std::fs::write(dir.path("hec-token"), "00000000-1111-2222-3333-444444444444\n").unwrap();
    let config = dir.path("guard.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {state}\naudit_log:\n  dir: {audit}\n  key: {key}\n  checkpoint_every: 10\nsinks:\n  - type: stdout\n  - type: file\n    path: {file}\n  - type: syslog\n    url: tcp://127.0.0.1:{port}\n  - type: splunk_hec\n    name: hec\n    url: {hec}\n    token_file: {token}\n",
            state = dir.path("state").display(),
            audit = dir.path("audit").display(),
            key = key.display(),
            file = dir.path("verdicts.jsonl").display(),
            port = syslog.port,
            hec = hec.url(),
            token = dir.path("hec-token").display(),
        ),
    )
    .unwrap();
    let daemon = Daemon::start_with(&dir, &format!("agents:\n  - name: {agent}\n"), &["--detach-on-exit", "--config", config.to_str().unwrap()]);

    for (argv, _) in CASES {
        let mut cmd: Vec<String> = vec![bin.join(argv[0]).display().to_string()];
        cmd.extend(argv[1..].iter().map(|a| a.to_string()));
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let (_, out) = guard_tests::launch(&agent, &cmd, &[]);
        assert!(out.status.success(), "{argv:?}: {out:?}");
    }
    let mine = |v: &Value| field(v, "/unmapped/agent") == agent;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while daemon.verdicts(mine).len() < CASES.len() || hec.with(|g| g.events.len()) < daemon.emitted().len() {
        assert!(std::time::Instant::now() < deadline, "verdicts {} / HEC {}", daemon.verdicts(mine).len(), hec.with(|g| g.events.len()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let emitted = daemon.emitted();
    syslog.wait_lines(emitted.len(), Duration::from_secs(20));
    daemon.stop();

    // What each place holds, as text.
    let places = [
        ("stdout", emitted.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")),
        ("file sink", std::fs::read_to_string(dir.path("verdicts.jsonl")).unwrap()),
        ("rsyslog", syslog.lines().join("\n")),
        ("Splunk HEC", hec.with(|g| g.events.iter().map(Value::to_string).collect::<Vec<_>>().join("\n"))),
        ("spool", all_text_below(&dir.path("state/spool"))),
        ("audit log", all_text_below(&dir.path("audit"))),
    ];
    for (place, text) in &places {
        assert!(!text.is_empty(), "{place} holds nothing");
        for (argv, secret) in CASES {
            assert!(!text.contains(secret), "{place} holds the secret of {argv:?}");
        }
    }
    // The verdicts are there, masked (not dropped): each case's exec shows `***`.
    let execs = daemon_argvs(&emitted, &agent);
    assert_eq!(execs.len(), CASES.len(), "{execs:#?}");
    for (argv, masked) in CASES.iter().map(|c| c.0).zip(&execs) {
        assert!(masked.contains("***"), "{argv:?} became {masked}");
    }
    // The audit log holds every verdict, signed, intact.
    let out = agent_cmd(&["audit", "verify", dir.path("audit").to_str().unwrap(), "--pubkey", pubkey.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("intact") && text.contains("signatures verified"), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The argv (joined) of each of the agent's exec verdicts of the case binaries, in order.
fn daemon_argvs(emitted: &[Value], agent: &str) -> Vec<String> {
    emitted
        .iter()
        .filter(|v| v["class_uid"] == 1007 && field(v, "/unmapped/agent") == agent)
        .filter_map(|v| v.pointer("/unmapped/argv").and_then(Value::as_array))
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
        .collect()
}
