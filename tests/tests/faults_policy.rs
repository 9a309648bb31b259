//! The policy file abused under a running daemon (`--policy FILE`): a storm of SIGHUPs, and the
//! file replaced by a Kubernetes ConfigMap's symbolic links (which must keep working), by a
//! dangling link, a loop of links, a directory, a FIFO and a 100 MiB file. Each bad one gives
//! an error verdict naming the file and the reason, the policy in force stays (a denied exec is
//! still killed by its rule), `policy check` says the same, and nothing panics or blocks.
use std::{
    os::unix::{fs::symlink, process::ExitStatusExt as _},
    path::Path,
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use guard_tests::{Daemon, TempDir, agent_bin, agent_cmd, field, launch, unique};
use serde_json::Value;

const MARKER: &str = env!("CARGO_BIN_EXE_guard-test-marker");

/// Copies the marker program to `dir/bin/NAME`, executable by anyone.
fn install_marker(dir: &TempDir, name: &str) -> String {
    let dst = dir.path(&format!("bin/{name}"));
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(MARKER, &dst).unwrap();
    dst.to_str().unwrap().to_owned()
}

/// A policy for `agent` that kills each of `denied` (by basename).
fn policy(agent: &str, denied: &[&str]) -> String {
    let rules: String = denied.iter().map(|d| format!("        - basename: {d}\n")).collect();
    format!("agents:\n  - name: {agent}\n    exec:\n      deny:\n{rules}")
}

/// `guard-agent policy check PATH`, which must finish within 10 s (a FIFO must not block it).
fn check(path: &Path) -> Output {
    let mut child = Command::new(agent_bin()).args(["policy", "check"]).arg(path).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`policy check {}` did not finish within 10 s", path.display());
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The sha256 `policy check` reports for `text`: what verdicts name as the policy hash.
fn hash_of(dir: &TempDir, text: &str) -> String {
    let p = dir.path(&format!("hash-{}.yaml", unique("h")));
    std::fs::write(&p, text).unwrap();
    let out = check(&p);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout.trim().rsplit("sha256 ").next().unwrap().trim_end_matches(')').to_owned()
}

fn status() -> Value {
    let out = agent_cmd(&["status", "--json"]);
    assert!(out.status.success(), "status: {out:?}");
    serde_json::from_slice(&out.stdout).expect("status --json")
}

fn reload_verdicts(daemon: &Daemon, failed: bool) -> Vec<Value> {
    daemon.verdicts(|v| v["class_uid"] == 6002 && field(v, "/unmapped/policy/error").is_empty() != failed)
}

/// Runs `bin` in the agent and asserts the kernel killed it (or let it run), and that the
/// daemon's verdict for this very exec names `hash` as the policy that decided it.
fn assert_exec(daemon: &Daemon, agent: &str, bin: &str, killed: bool, hash: &str) {
    let (launcher, out) = launch(agent, &[bin], &[]);
    if killed {
        assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{bin} was not killed: {out:?}");
    } else {
        assert!(out.status.success(), "{bin} did not run: {out:?}");
    }
    let v = daemon.await_verdict(&format!("the exec of {bin}"), 10, |v| {
        v["class_uid"] == 1007 && field(v, "/process/file/path") == bin && field(v, "/process/parent_process/pid") == launcher.to_string()
    });
    assert_eq!(field(&v, "/unmapped/verdict"), if killed { "killed" } else { "allowed" }, "{v:#}");
    assert_eq!(field(&v, "/unmapped/policy_hash"), hash, "{v:#}");
}

/// Replaces `path` (whatever it is) with what `make` creates at a scratch name beside it.
fn replace(path: &Path, make: impl FnOnce(&Path)) {
    let tmp = path.with_extension("new");
    make(&tmp);
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).unwrap(),
        Ok(_) => std::fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
    std::fs::rename(&tmp, path).unwrap();
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits until the number of reload verdicts has not changed for a second; returns it.
fn settled_reloads(daemon: &Daemon) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (usize::MAX, Instant::now());
    loop {
        let n = daemon.verdicts(|v| v["class_uid"] == 6002).len();
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(1) {
            return n;
        }
        assert!(Instant::now() < deadline, "reloads did not settle within 30 s ({n} so far)");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_storm_of_100_sighups_ends_with_the_last_policy_in_force() {
    let dir = TempDir::new("sighup-storm");
    let agent = unique("sighup-storm");
    let b = install_marker(&dir, "guard-b");
    let (v1, v2) = (policy(&agent, &["guard-a"]), policy(&agent, &["guard-a", "guard-b"]));
    let (h1, h2) = (hash_of(&dir, &v1), hash_of(&dir, &v2));
    let daemon = Daemon::start(&dir, &v1);
    let path = dir.path("policy.yaml");
    assert_exec(&daemon, &agent, &b, false, &h1);

    // 100 SIGHUPs in about half a second, the file switching between the two policies (each
    // write atomic), v2 last.
    let started = Instant::now();
    for i in 0..100 {
        write_atomically(&path, if i % 2 == 1 { &v2 } else { &v1 });
        daemon.signal(libc::SIGHUP);
        thread::sleep(Duration::from_millis(5));
    }
    let storm = started.elapsed();
    let reloads = settled_reloads(&daemon);
    println!("100 SIGHUPs in {storm:?}: {reloads} reloads (coalesced)");
    assert!((1..=100).contains(&reloads), "{reloads} reload verdicts for 100 SIGHUPs");
    assert!(reload_verdicts(&daemon, true).is_empty(), "a reload failed: {:#?}", reload_verdicts(&daemon, true));
    let last = reload_verdicts(&daemon, false).pop().unwrap();
    assert_eq!(field(&last, "/unmapped/policy_hash"), h2, "the last reload took the last file: {last:#}");
    let st = status();
    assert_eq!(st["policy"]["hash"], h2.as_str(), "{st:#}");
    assert_eq!(st["policy"]["reloads"].as_u64(), Some(reloads as u64), "{st:#}");
    // The kernel enforces the last policy: guard-b is killed now.
    assert_exec(&daemon, &agent, &b, true, &h2);
    let stderr = daemon.stop_and_stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// One bad replacement of the policy file: how to make it, and what the error must say.
struct Abuse {
    what: &'static str,
    make: Box<dyn Fn(&Path)>,
    reason: String,
    /// `policy check` gives the same error (a directory, though, is a policy directory to it).
    check_agrees: bool,
}

#[test]
fn a_policy_file_replaced_by_links_a_directory_a_fifo_or_100_mib_keeps_the_policy_in_force() {
    let dir = TempDir::new("policy-abuse");
    let agent = unique("policy-abuse");
    let (b, c) = (install_marker(&dir, "guard-b"), install_marker(&dir, "guard-c"));
    let v1 = policy(&agent, &["guard-a"]);
    let v2 = policy(&agent, &["guard-a", "guard-b"]);
    let v3 = policy(&agent, &["guard-a", "guard-b", "guard-c"]);
    let (h1, h2, h3) = (hash_of(&dir, &v1), hash_of(&dir, &v2), hash_of(&dir, &v3));
    let daemon = Daemon::start(&dir, &v1);
    let path = dir.path("policy.yaml");

    // A ConfigMap volume: policy.yaml -> ..data/policy.yaml, ..data -> ..2025_a. Followed.
    let cm = dir.path("cm");
    std::fs::create_dir_all(cm.join("..2025_a")).unwrap();
    std::fs::write(cm.join("..2025_a/policy.yaml"), &v2).unwrap();
    symlink("..2025_a", cm.join("..data")).unwrap();
    replace(&path, |tmp| symlink(cm.join("..data/policy.yaml"), tmp).unwrap());
    daemon.signal(libc::SIGHUP);
    daemon.await_verdict("the reload through the links", 10, |v| v["class_uid"] == 6002 && field(v, "/unmapped/policy_hash") == h2);
    assert_exec(&daemon, &agent, &b, true, &h2);
    // The kubelet's update: a new timestamped directory, `..data` swapped atomically. The
    // daemon's file polling follows the links and sees the change without a signal.
    std::fs::create_dir_all(cm.join("..2025_b")).unwrap();
    std::fs::write(cm.join("..2025_b/policy.yaml"), &v3).unwrap();
    symlink("..2025_b", cm.join("..data_tmp")).unwrap();
    std::fs::rename(cm.join("..data_tmp"), cm.join("..data")).unwrap();
    daemon.await_verdict("the ConfigMap update", 15, |v| v["class_uid"] == 6002 && field(v, "/unmapped/policy_hash") == h3);
    assert_exec(&daemon, &agent, &c, true, &h3);

    let p = path.display().to_string();
    let missing = dir.path("missing.yaml");
    let fifo_made = |tmp: &Path| {
        let c = std::ffi::CString::new(tmp.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    };
    let v1_text = v1.clone();
    let abuses = [
        Abuse {
            what: "a dangling link",
            make: Box::new(move |tmp| symlink(&missing, tmp).unwrap()),
            reason: format!("cannot read the policy file: it is a symbolic link to `{}`, which does not exist (a dangling link)", dir.path("missing.yaml").display()),
            check_agrees: true,
        },
        Abuse {
            what: "a link to itself",
            make: Box::new(|tmp| symlink("policy.yaml", tmp).unwrap()),
            reason: "cannot read the policy file: its symbolic links form a loop".into(),
            check_agrees: true,
        },
        Abuse {
            what: "a directory (holding a valid policy)",
            make: Box::new(move |tmp| {
                std::fs::create_dir(tmp).unwrap();
                std::fs::write(tmp.join("a.yaml"), &v1_text).unwrap();
            }),
            reason: "the policy file is now a directory; the daemon was started with a policy file and keeps its policy".into(),
            check_agrees: false,
        },
        Abuse { what: "a FIFO", make: Box::new(fifo_made), reason: "the policy file is a FIFO (named pipe), not a regular file; refusing to read it".into(), check_agrees: true },
        Abuse {
            what: "a 100 MiB file",
            // Sparse: its size is what counts, and reading it would take 100 MiB.
            make: Box::new(|tmp| std::fs::File::create(tmp).unwrap().set_len(100 << 20).unwrap()),
            reason: "the policy file is 104857600 bytes, over the limit of 4194304 bytes (4 MiB); refusing to read it".into(),
            check_agrees: true,
        },
    ];
    for (i, a) in abuses.iter().enumerate() {
        replace(&path, &a.make);
        let t = Instant::now();
        daemon.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        while reload_verdicts(&daemon, true).len() <= i {
            assert!(Instant::now() < deadline, "{}: no reload error verdict; stderr:\n{}", a.what, daemon.stderr_text());
            thread::sleep(Duration::from_millis(10));
        }
        let e = reload_verdicts(&daemon, true).pop().unwrap();
        let error = field(&e, "/unmapped/policy/error");
        assert!(error.starts_with(&format!("{p}:1:1: {}", a.reason)), "{}: {error}", a.what);
        assert_eq!(field(&e, "/unmapped/policy_hash"), h3, "{}: the verdict names the policy in force", a.what);
        assert_eq!(field(&e, "/status_id"), "2", "{}", a.what);
        // Nothing blocked: the daemon answers, and still enforces v3 in the kernel.
        assert!(t.elapsed() < Duration::from_secs(5), "{}: the reload took {:?}", a.what, t.elapsed());
        let st = status();
        assert_eq!((st["policy"]["hash"].as_str(), st["policy"]["reload_failures"].as_u64()), (Some(h3.as_str()), Some(i as u64 + 1)), "{}: {st:#}", a.what);
        assert_exec(&daemon, &agent, &c, true, &h3);
        let out = check(&path);
        if a.check_agrees {
            assert_eq!(out.status.code(), Some(2), "{}: policy check: {out:?}", a.what);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.trim().starts_with(&format!("{p}:1:1: {}", a.reason)), "{}: policy check said: {stderr}", a.what);
        } else {
            assert!(out.status.success(), "{}: policy check of a policy directory: {out:?}", a.what);
        }
    }
    // The file polling saw each state too, but reloads only on a change since the last
    // reload: no extra error verdicts.
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(reload_verdicts(&daemon, true).len(), abuses.len(), "{:#?}", reload_verdicts(&daemon, true));

    // A regular file again: reloaded, and its policy (no guard-c rule) is in force.
    replace(&path, |tmp| std::fs::write(tmp, &v1).unwrap());
    daemon.signal(libc::SIGHUP);
    daemon.await_verdict("the reload of a regular file", 10, |v| v["class_uid"] == 6002 && field(v, "/unmapped/policy_hash") == h1);
    assert_exec(&daemon, &agent, &c, false, &h1);
    let stderr = daemon.stop_and_stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
    for a in &abuses {
        assert!(stderr.contains(&a.reason), "the daemon's log does not say {:?}:\n{stderr}", a.reason);
    }
}
