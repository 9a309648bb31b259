//! A full disk under the file sink, a network sink's spool and the audit log (a 4 MiB tmpfs
//! filled up by the test): enforcement goes on (a denied exec is killed), the daemon counts
//! what it could not write (status, metrics) and says so in its log once, not per verdict; when
//! space returns, writing resumes (the file grows, the spool drains, the audit log goes on) and
//! `audit verify` passes the log, listing the gap as a note with the count the daemon reported.
use std::{
    collections::BTreeSet,
    ffi::CString,
    io::Write as _,
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use guard_tests::{
    Daemon, TempDir, agent_cmd, field,
    http_receiver::{Mode, Receiver, Vendor},
    launch, metric, unique,
};
use serde_json::Value;

const MARKER: &str = env!("CARGO_BIN_EXE_guard-test-marker");
const HEC_TOKEN: &str = "5d1f0c3e-2b7a-4e8d-9c61-0a4b7e2f9d35";

/// A tmpfs mounted for the test, unmounted on drop (lazily: nothing may keep it).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let (src, target, data) = (c"guard-test-tmpfs", CString::new(dir.to_str().unwrap()).unwrap(), CString::new(format!("size={size},mode=0755")).unwrap());
        // SAFETY: mount(2) with NUL-terminated strings we own; tmpfs takes a text option string.
        let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), c"tmpfs".as_ptr(), 0, data.as_ptr().cast()) };
        assert_eq!(rc, 0, "mount tmpfs at {}: {}", dir.display(), std::io::Error::last_os_error());
        Self(dir)
    }

    /// Bytes still free.
    fn free(&self) -> u64 {
        let path = CString::new(self.0.to_str().unwrap()).unwrap();
        // SAFETY: statvfs fills a struct we own, for a NUL-terminated path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
        st.f_bavail * st.f_frsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.0.to_str().unwrap()).unwrap();
        // SAFETY: umount2 of the mount this guard made.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Writes `path` until the file system is full; returns how many bytes it took.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 64 << 10];
    let mut total = 0;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    total
}

fn status() -> Value {
    let out = agent_cmd(&["status", "--json"]);
    assert!(out.status.success(), "status: {out:?}");
    serde_json::from_slice(&out.stdout).expect("status --json")
}

fn sink(st: &Value, name: &str) -> Value {
    st["sinks"].as_array().unwrap().iter().find(|s| s["name"] == name).cloned().unwrap_or_else(|| panic!("no sink {name} in {st:#}"))
}

/// Polls `f` until it returns `Some` (up to `secs`).
fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs}s");
        thread::sleep(Duration::from_millis(50));
    }
}

fn sequence(v: &Value) -> u64 {
    v["metadata"]["sequence"].as_u64().expect("every verdict has metadata.sequence")
}

/// The verdict file's lines, each of which must be whole JSON.
fn file_sequences(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(|l| sequence(&serde_json::from_str(l).unwrap_or_else(|e| panic!("a broken line in the verdict file ({e}): {l:?}")))).collect()
}

/// `/bin/true` `n` times in the agent, then the denied marker, which the kernel must kill
/// whatever the disk says. Returns the kill verdict's sequence.
fn workload(daemon: &Daemon, agent: &str, denied: &str, n: usize) -> u64 {
    let script = format!("i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done");
    let (_, out) = launch(agent, &["/bin/sh", "-c", &script], &[]);
    assert!(out.status.success(), "{out:?}");
    let (launcher, out) = launch(agent, &[denied], &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "the denied exec was not killed: {out:?}");
    let v = daemon.await_verdict("the kill", 10, |v| {
        v["class_uid"] == 1007 && field(v, "/unmapped/verdict") == "killed" && field(v, "/process/parent_process/pid") == launcher.to_string()
    });
    sequence(&v)
}

#[test]
fn a_full_disk_loses_verdicts_counted_enforcement_goes_on_and_the_audit_gap_is_a_note() {
    let dir = TempDir::new("disk-full");
    let agent = unique("disk-full");
    let full = Tmpfs::mount(dir.path("full"), "4m");
    let denied = dir.path("bin/guard-x");
    std::fs::create_dir_all(denied.parent().unwrap()).unwrap();
    std::fs::copy(MARKER, &denied).unwrap();
    let denied = denied.to_str().unwrap().to_owned();
    let key = dir.path("audit.key");
    let out = agent_cmd(&["audit", "keygen", "--out", key.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    std::fs::write(dir.path("hec-token"), HEC_TOKEN).unwrap();
    let hec = Receiver::start(Vendor::Hec { token: HEC_TOKEN.into(), sourcetype: "guard:ocsf".into() }, false, false);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let verdict_file = full.0.join("verdicts.jsonl");
    let audit_dir = full.0.join("audit");
    let config = dir.path("guard.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {state}\nmetrics:\n  listen: 127.0.0.1:{port}\nsinks:\n  - type: stdout\n  - type: file\n    path: {file}\n  - type: splunk_hec\n    name: hec\n    url: {url}\n    token_file: {token}\n    gzip: false\n    spool_dir: {spool}\n    spool_max_bytes: 1MiB\n    batch_max_wait: 100ms\n    backoff_max: 1s\naudit_log:\n  dir: {audit}\n  key: {key}\n  checkpoint_every: 20\n",
            state = dir.path("state").display(),
            file = verdict_file.display(),
            url = hec.url(),
            token = dir.path("hec-token").display(),
            spool = full.0.join("spool").display(),
            audit = audit_dir.display(),
            key = key.display(),
        ),
    )
    .unwrap();
    let policy = format!("agents:\n  - name: {agent}\n    exec:\n      deny:\n        - basename: guard-x\n");
    let daemon = Daemon::start_with(&dir, &policy, &["--detach-on-exit", "--config", config.to_str().unwrap()]);
    let file_sink = format!("file:{}", verdict_file.display());

    // With space: everything is written and delivered.
    let first_kill = workload(&daemon, &agent, &denied, 3);
    wait_for("the first kill in the file", 10, || file_sequences(&verdict_file).contains(&first_kill).then_some(()));
    wait_for("the first kill at the HEC receiver", 20, || hec.sequences().contains(&first_kill).then_some(()));
    // The SIEM goes down (verdicts wait in the spool), and the disk fills up.
    hec.set_mode(Mode::Refuse);
    let filler = full.0.join("filler");
    let filled = fill(&filler);
    assert_eq!(full.free(), 0, "the tmpfs is not full after {filled} bytes");

    // Full: enforcement goes on, and the losses are counted.
    let full_kill = workload(&daemon, &agent, &denied, 30);
    daemon.barrier(&agent);
    // The file and the audit log have writer threads of their own: wait until the file's has
    // accounted for every line printed (written or lost) and the metrics agree with status.
    let st = wait_for("every sink on the tmpfs reporting losses", 10, || {
        let st = status();
        let (f, h, a) = (sink(&st, &file_sink), sink(&st, "hec"), &st["audit_log"]);
        let losses = f["failed"].as_u64() > Some(0) && h["failed"].as_u64() > Some(0) && a["lost"].as_u64() > Some(0);
        let accounted = f["sent"].as_u64().unwrap_or(0) + f["failed"].as_u64().unwrap_or(0) == daemon.emitted().len() as u64;
        let agree = metric(port, &format!("guard_sink_failed_total{{sink=\"{file_sink}\"}}")) == f["failed"].as_f64().unwrap_or(-1.0)
            && metric(port, "guard_audit_log_lost_total") == a["lost"].as_f64().unwrap_or(-1.0);
        (losses && accounted && agree).then_some(st)
    });
    let (f, h, a) = (sink(&st, &file_sink), sink(&st, "hec"), st["audit_log"].clone());
    for (what, s) in [("file", &f), ("hec", &h)] {
        assert!(s["error"].as_str().is_some_and(|e| e.contains("No space left on device")) && s["healthy"] == false, "{what}: {s:#}");
        assert!(s["write_errors"].as_u64() > Some(0), "{what}: {s:#}");
    }
    assert!(a["error"].as_str().is_some_and(|e| e.contains("No space left on device")) && a["healthy"] == false, "{a:#}");
    // (Space a failed write gave back may let a gap record in meanwhile: counted, not all.)
    assert!(a["unrecorded"].as_u64() > Some(0) && a["unrecorded"].as_u64() <= a["lost"].as_u64(), "{a:#}");
    assert_eq!(metric(port, &format!("guard_sink_failed_total{{sink=\"{file_sink}\"}}")), f["failed"].as_f64().unwrap());
    assert_eq!(metric(port, "guard_sink_failed_total{sink=\"hec\"}"), h["failed"].as_f64().unwrap());
    assert!(metric(port, &format!("guard_sink_write_errors_total{{sink=\"{file_sink}\"}}")) > 0.0);
    assert_eq!(metric(port, "guard_audit_log_lost_total"), a["lost"].as_f64().unwrap());
    assert!(metric(port, "guard_audit_log_failures_total") > 0.0);
    // Every line printed is in the file or counted as lost by it, and the file holds no
    // broken line.
    let printed: Vec<u64> = daemon.emitted().iter().map(sequence).collect();
    let in_file = file_sequences(&verdict_file);
    assert_eq!(in_file.len() as u64 + f["failed"].as_u64().unwrap(), printed.len() as u64, "{f:#}");
    assert!(!in_file.contains(&full_kill), "the disk was full, yet the kill verdict was written");
    assert!(a["lost"].as_u64() >= Some(20), "{a:#}");

    // Space again: writing resumes everywhere, and the spool drains once the SIEM is back.
    std::fs::remove_file(&filler).unwrap();
    let back_kill = workload(&daemon, &agent, &denied, 3);
    wait_for("the kill after the disk was freed, in the file", 10, || file_sequences(&verdict_file).contains(&back_kill).then_some(()));
    let st = wait_for("the audit log's gap recorded", 10, || {
        let st = status();
        (st["audit_log"]["gaps"].as_u64() > Some(0) && st["audit_log"]["unrecorded"] == 0 && st["audit_log"]["healthy"] == true).then_some(st)
    });
    let lost = st["audit_log"]["lost"].as_u64().unwrap();
    for name in [file_sink.as_str(), "hec"] {
        let s = sink(&st, name);
        assert!(s["error"].is_null(), "{name}: {s:#}");
    }
    hec.set_mode(Mode::Up);
    wait_for("the spool drained", 30, || (hec.sequences().contains(&back_kill) && sink(&status(), "hec")["backlog"] == 0).then_some(()));
    assert_eq!(hec.violations(), Vec::<String>::new());
    let got: BTreeSet<u64> = hec.sequences().into_iter().collect();
    assert!(!got.contains(&full_kill), "the HEC got a verdict its spool could not hold");
    daemon.barrier(&agent);
    let printed: Vec<u64> = daemon.emitted().iter().map(sequence).collect();
    let f = wait_for("the file's writer caught up", 10, || {
        let f = sink(&status(), &file_sink);
        (f["sent"].as_u64().unwrap_or(0) + f["failed"].as_u64().unwrap_or(0) == printed.len() as u64).then_some(f)
    });
    assert_eq!(file_sequences(&verdict_file).len() as u64 + f["failed"].as_u64().unwrap(), printed.len() as u64, "{f:#}");

    // Said once per run of failures, not per verdict.
    let stderr = daemon.stop_and_stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let said = |what: &str| stderr.lines().filter(|l| l.contains(what)).count();
    // (Once per sink and run of failures: a write that fits in space another one gave back
    // ends a run, so a few runs are possible, never one line per lost verdict.)
    let (sinks_said, audit_said) = (said("cannot write verdicts"), said("audit log: cannot write"));
    println!("said: sinks {sinks_said} times, audit log {audit_said} times");
    assert!((2..=10).contains(&sinks_said), "{stderr}");
    assert!((1..=10).contains(&audit_said), "{stderr}");
    assert!(said("writing verdicts again") >= 1 && said("audit log: writing again") >= 1, "{stderr}");

    // The audit log verifies; the gap is a note with the count the daemon reported, and the
    // verdicts missing from it are the ones the notes name.
    let out = agent_cmd(&["audit", "verify", audit_dir.to_str().unwrap(), "--pubkey", &public, "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["lost"].as_u64(), Some(lost), "{report:#}");
    let notes: Vec<&str> = report["notes"].as_array().unwrap().iter().filter_map(Value::as_str).filter(|n| n.contains(" not written between seq ")).collect();
    assert!(!notes.is_empty(), "{report:#}");
    for n in &notes {
        assert!(n.contains("(write failures: No space left on device") && n.contains("the chain resumes with this signed gap record"), "{n}");
    }
    let mut logged = BTreeSet::new();
    let mut verdict_records = 0;
    for f in std::fs::read_dir(&audit_dir).unwrap().flatten() {
        for line in std::fs::read_to_string(f.path()).unwrap().lines() {
            let r: Value = serde_json::from_str(line).unwrap();
            if let Some(s) = r.pointer("/verdict/metadata/sequence").and_then(Value::as_u64) {
                logged.insert(s);
                verdict_records += 1;
            }
        }
    }
    let missing: Vec<u64> = printed.iter().copied().filter(|s| !logged.contains(s)).collect();
    assert_eq!((missing.len() as u64, verdict_records), (lost, printed.len() as u64 - lost), "the audit log vs. the count the daemon reported");
    assert!(!logged.contains(&full_kill) && logged.contains(&back_kill) && logged.contains(&first_kill));
    let ranges: Vec<(u64, u64)> = notes
        .iter()
        .filter_map(|n| {
            let (a, b) = n.split("metadata.sequence ").nth(1)?.split(',').next()?.split_once("..")?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect();
    assert_eq!(ranges.len(), notes.len(), "every gap names its verdicts: {notes:#?}");
    assert!(missing.iter().all(|s| ranges.iter().any(|(a, b)| (a..=b).contains(&s))), "missing {missing:?}, gaps {ranges:?}");
    let text = agent_cmd(&["audit", "verify", audit_dir.to_str().unwrap(), "--pubkey", &public]);
    let text = String::from_utf8_lossy(&text.stdout);
    println!("{} verdicts; lost by the file sink {}, by the audit log {lost} ({} gap records); audit verify says:\n{text}", printed.len(), f["failed"], notes.len());
    assert!(text.lines().any(|l| l.starts_with("note: ") && l.contains(" not written between seq ")), "{text}");
    assert!(text.lines().last().is_some_and(|l| l.starts_with("intact: ") && l.contains(&format!("{lost} verdicts were not written"))), "{text}");
}
