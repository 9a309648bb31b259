//! The syslog sink against a real rsyslog (Debian's, started by the test): RFC 5424 with
//! octet-counting framing over TCP and over TLS, 10,000 verdicts whose argv holds newlines,
//! quotes, `]` and non-UTF-8 bytes, read back from what rsyslog wrote. Run as root by
//! `cargo xtask test`.
use std::time::Duration;

use guard_tests::{Daemon, TempDir, field, rsyslog::Rsyslog, unique};
use serde_json::Value;

const VERDICTS: usize = 10_000;

#[test]
fn ten_thousand_hostile_verdicts_reach_rsyslog_over_tcp_and_tls_complete_and_in_order() {
    let dir = TempDir::new("syslog");
    let agent = unique("syslog");
    let plain = Rsyslog::start(&dir, false);
    let tls = Rsyslog::start(&dir, true);
    let config = dir.path("guard.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {state}\nring_buffer_kib: 65536\nsinks:\n  - type: stdout\n  - type: syslog\n    url: tcp://127.0.0.1:{p}\n  - type: syslog\n    url: tls://127.0.0.1:{t}\n    tls_ca: {ca}\n    facility: local3\n",
            state = dir.path("state").display(),
            p = plain.port,
            t = tls.port,
            ca = tls.ca.as_ref().unwrap().display()
        ),
    )
    .unwrap();
    let policy = format!("agents:\n  - name: {agent}\n");
    let daemon = Daemon::start_with(&dir, &policy, &["--detach-on-exit", "--config", config.to_str().unwrap()]);
    // Each /bin/true is one `allowed` verdict whose argv has a newline, quotes, `]`, a
    // backslash and the bytes 0xff 0xfe (not UTF-8).
    let script = format!(
        "bad=$(printf '\\377\\376'); i=0; while [ $i -lt {VERDICTS} ]; do /bin/true \"line1\nline2\" '\"quoted\"' ']' 'back\\slash' \"$bad\" $i; i=$((i+1)); done"
    );
    let (_, out) = guard_tests::launch(&agent, &["sh", "-c", &script], &[]);
    assert!(out.status.success(), "{out:?}");
    let mine = |v: &Value| field(v, "/unmapped/agent") == agent && field(v, "/process/file/name") == "true" && !guard_tests::is_barrier(v);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while daemon.verdicts(mine).len() < VERDICTS && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing more is on its way once a later exec's verdict is out.
    daemon.barrier(&agent);
    let emitted = daemon.emitted();
    let hostile = daemon.verdicts(mine);
    // A ring buffer big enough that the kernel drops none of the burst: all 10,000 are there.
    assert_eq!(hostile.len(), VERDICTS, "the daemon emitted {} of {VERDICTS} verdicts", hostile.len());
    let argv = hostile[0]["unmapped"]["argv"].as_array().unwrap();
    assert_eq!(argv[1], "line1\nline2");
    assert!(argv[5].as_str().unwrap().contains('\u{fffd}'), "{argv:?}");

    // The TCP sink keeps the default facility, the TLS one is set to local3.
    for (which, server, facility) in [("tcp", &plain, "authpriv"), ("tls", &tls, "local3")] {
        let lines = server.wait_lines(emitted.len(), Duration::from_secs(60));
        assert_eq!(lines.len(), emitted.len(), "{which}: rsyslog wrote {} of {} messages", lines.len(), emitted.len());
        for (i, (line, sent)) in lines.iter().zip(&emitted).enumerate() {
            // facility|severity|app-name|msgid|structured-data|msg, as rsyslog parsed them.
            let mut parts = line.splitn(6, '|');
            let (fac, sev, app, msgid, sd, msg) = (parts.next(), parts.next(), parts.next(), parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let got: Value = serde_json::from_str(msg).unwrap_or_else(|e| panic!("{which} message {i} is not the verdict JSON ({e}): {line}"));
            assert_eq!(&got, sent, "{which} message {i} differs (order or content)");
            assert_eq!(fac, Some(facility), "{which} {line}");
            if field(sent, "/unmapped/verdict") == "allowed" {
                assert_eq!(sev, Some("6"), "{which}: an allowed verdict is informational: {line}");
            }
            assert_eq!(app, Some("guard"), "{which} {line}");
            assert!(msgid.is_some_and(|m| !m.is_empty()), "{which} {line}");
            let seq = sent["metadata"]["sequence"].as_u64().unwrap();
            assert!(sd.starts_with("[guard@32473 ") && sd.contains(&format!(" seq=\"{seq}\"")), "{which} structured data: {sd}");
            // The values the daemon marked in the line it spooled (or scanned, for the others).
            assert!(sd.contains(&format!(" verdict=\"{}\"", field(sent, "/unmapped/verdict"))), "{which} structured data: {sd}");
            if let Some(pid) = sent.pointer("/process/pid").or(sent.pointer("/actor/process/pid")) {
                assert!(sd.contains(&format!(" pid=\"{pid}\"")), "{which} structured data: {sd}");
            }
        }
    }
    daemon.stop();
}
