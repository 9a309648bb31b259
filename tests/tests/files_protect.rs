//! Protected paths (`files.protect`), end to end: real destroyers (`rm -rf`, Python's
//! `shutil.rmtree`, `truncate -s0`, a shell `>` overwrite, `mv`, `git clean -xdf`) run as agent
//! workloads by `guard-agent launch` against a protected directory under /tmp. Each call fails
//! (EACCES/EPERM from Landlock), the process ends by itself (not by a signal), the files are
//! intact, and a `denied` verdict names the path and the rule. Work outside the protected path,
//! and reading a write-protected path, still succeed. Run as root by `cargo xtask test`.
use std::{os::unix::process::ExitStatusExt as _, path::Path, process::Output};

use guard_tests::{Daemon, TempDir, agent_cmd, field, launch, unique};
use serde_json::Value;

const PYTHON: &str = "/usr/bin/python3";

fn text(out: &Output) -> String {
    format!("status {:?}\nstdout: {}\nstderr: {}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The workload failed by itself: a non-zero exit status, no signal.
fn assert_failed_by_itself(what: &str, out: &Output) {
    assert_eq!(out.status.signal(), None, "{what}: killed by a signal, not refused: {}", text(out));
    assert_ne!(out.status.code(), Some(0), "{what}: succeeded: {}", text(out));
}

fn assert_ok(what: &str, out: &Output) {
    assert_eq!(out.status.code(), Some(0), "{what}: failed: {}", text(out));
}

/// The protected tree: files with known contents, a subdirectory, a git repository.
fn populate(root: &Path) -> Vec<(String, String)> {
    let files = [("a.txt", "precious a\n"), ("sub/b.db", "database b\n"), ("sub/deeper/c.log", "log c\n"), ("untracked.tmp", "untracked\n")];
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    for (rel, content) in files {
        std::fs::write(root.join(rel), content).unwrap();
    }
    files.iter().map(|(r, c)| (r.to_string(), c.to_string())).collect()
}

fn assert_intact(root: &Path, files: &[(String, String)], after: &str) {
    for (rel, content) in files {
        let got = std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("after {after}: {rel} is gone: {e}"));
        assert_eq!(&got, content, "after {after}: {rel} was changed");
    }
}

/// A `denied` verdict for `op` by a process whose executable's name contains `exe`.
fn denied_by(daemon: &Daemon, what: &str, op: &str, exe: &str, under: &Path) -> Value {
    let under = under.display().to_string();
    daemon.await_verdict(what, 10, |v| {
        v["class_uid"] == 1001
            && v["unmapped"]["file_op"]["op"] == op
            && field(v, "/actor/process/file/name").contains(exe)
            && field(v, "/file/path").starts_with(&under)
    })
}

/// The `denied` verdict for `op` on `path` (a path under the protected root).
fn denied(daemon: &Daemon, what: &str, op: &str, path: &Path) -> Value {
    let path = path.display().to_string();
    daemon.await_verdict(what, 10, |v| {
        v["class_uid"] == 1001 && v["unmapped"]["verdict"] == "denied" && v["unmapped"]["file_op"]["op"] == op && field(v, "/file/path") == path
    })
}

fn git_available() -> bool {
    std::process::Command::new("git").arg("--version").output().is_ok_and(|o| o.status.success())
}

#[test]
fn real_destroyers_fail_on_a_protected_tree_which_stays_intact_and_work_outside_it_goes_on() {
    let dir = TempDir::new("protect");
    let agent = unique("protect");
    let prot = dir.path("protected");
    let scratch = dir.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let files = populate(&prot);
    let git = git_available();
    if git {
        let init = std::process::Command::new("git").args(["init", "-q"]).arg(&prot).output().unwrap();
        assert!(init.status.success(), "git init: {}", text(&init));
    } else {
        println!("git is not installed: the `git clean -xdf` case is skipped");
    }
    let policy = format!(
        "agents:\n  - name: {agent}\n    files:\n      protect:\n        - path: {}/**\n          deny: [delete, rename, truncate, write]\n          message: the agent's data\n",
        prot.display()
    );
    let daemon = Daemon::start(&dir, &policy);
    let p = |rel: &str| prot.join(rel).display().to_string();

    let (_, out) = launch(&agent, &["rm", "-rf", &p("")], &[]);
    assert_failed_by_itself("rm -rf", &out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "rm -rf: {}", text(&out));
    assert_intact(&prot, &files, "rm -rf");
    denied(&daemon, "rm -rf", "delete", &prot.join("a.txt"));

    let rmtree = format!("import shutil; shutil.rmtree({:?})", p(""));
    let (_, out) = launch(&agent, &[PYTHON, "-c", &rmtree], &[]);
    assert_failed_by_itself("shutil.rmtree", &out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("PermissionError"), "shutil.rmtree: {}", text(&out));
    assert_intact(&prot, &files, "shutil.rmtree");
    denied_by(&daemon, "shutil.rmtree", "delete", "python", &prot);

    let (_, out) = launch(&agent, &["truncate", "-s0", &p("sub/b.db")], &[]);
    assert_failed_by_itself("truncate -s0", &out);
    assert_intact(&prot, &files, "truncate -s0");
    // truncate(1) opens the file for writing first: that open is what Landlock refuses.
    denied(&daemon, "truncate -s0", "write", &prot.join("sub/b.db"));

    let (_, out) = launch(&agent, &["sh", "-c", &format!("echo overwritten > {}", p("a.txt"))], &[]);
    assert_failed_by_itself("sh >", &out);
    assert_intact(&prot, &files, "sh >");
    denied(&daemon, "sh >", "write", &prot.join("a.txt"));

    let (_, out) = launch(&agent, &["mv", &p("sub/deeper/c.log"), &scratch.join("c.log").display().to_string()], &[]);
    assert_failed_by_itself("mv out", &out);
    assert_intact(&prot, &files, "mv out");
    let (_, out) = launch(&agent, &["mv", &p("a.txt"), &p("renamed.txt")], &[]);
    assert_failed_by_itself("mv within", &out);
    assert_intact(&prot, &files, "mv within");
    denied(&daemon, "mv within", "rename", &prot.join("a.txt"));
    // Overwriting a protected file by renaming another file onto it.
    std::fs::write(scratch.join("evil"), "evil\n").unwrap();
    let (_, out) = launch(&agent, &["mv", "-f", &scratch.join("evil").display().to_string(), &p("a.txt")], &[]);
    assert_failed_by_itself("mv onto a protected file", &out);
    assert_intact(&prot, &files, "mv onto a protected file");

    if git {
        let (_, out) = launch(&agent, &["git", "-C", &p(""), "clean", "-xdf"], &[]);
        assert_failed_by_itself("git clean -xdf", &out);
        assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "git clean: {}", text(&out));
        assert_intact(&prot, &files, "git clean -xdf");
        // Nothing is committed: every file is untracked, and each removal was refused.
        denied_by(&daemon, "git clean", "delete", "git", &prot.join("untracked.tmp"));
        denied_by(&daemon, "git clean", "delete", "git", &prot.join("sub/b.db"));
    }

    // Normal work outside the protected path is untouched by the translation.
    let s = |rel: &str| scratch.join(rel).display().to_string();
    let script = format!(
        "set -e; echo new > {f}; echo more >> {f}; mv {f} {g}; truncate -s0 {g}; mkdir {d}; mv {g} {d}/h; rm -r {d}; echo tmp > {t}; rm {t}",
        f = s("f"),
        g = s("g"),
        d = s("d"),
        t = dir.path("beside-protected").display()
    );
    let (_, out) = launch(&agent, &["sh", "-c", &script], &[]);
    // Writing next to the protected directory (in its parent, an ancestor) is the documented
    // limit: Landlock cannot grant rights on an ancestor's own entries.
    assert_failed_by_itself("a file made directly in an ancestor of the protected path", &out);
    let script = script.rsplit_once("; echo tmp").unwrap().0.to_owned();
    let (_, out) = launch(&agent, &["sh", "-c", &script], &[]);
    assert_ok("work in a sibling directory", &out);
    assert!(!scratch.join("d").exists() && !scratch.join("f").exists());
    let (_, out) = launch(&agent, &["sh", "-c", "echo hi > /dev/null && ls / >/dev/null"], &[]);
    assert_ok("writes to /dev/null", &out);
    // Reading the protected files still works.
    let (_, out) = launch(&agent, &["cat", &p("a.txt")], &[]);
    assert_ok("cat", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "precious a\n");

    let v = denied(&daemon, "rm -rf", "delete", &prot.join("a.txt"));
    assert_eq!(v["unmapped"]["rule"]["section"], "files.protect");
    assert_eq!(v["unmapped"]["rule"]["location"], format!("{}:5", dir.path("policy.yaml").display()));
    let f = daemon.findings(|f| f["unmapped"]["activity_sequence"] == v["metadata"]["sequence"]);
    assert_eq!(f.len(), 1, "one finding for the denied delete: {f:#?}");
    daemon.stop();
}

#[test]
fn a_write_protected_path_can_still_be_read_and_its_files_deleted_when_delete_is_not_denied() {
    let dir = TempDir::new("protect-ro");
    let agent = unique("protect-ro");
    let ro = dir.path("ro");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("conf"), "setting=1\n").unwrap();
    std::fs::write(ro.join("old"), "old\n").unwrap();
    let log = dir.path("log");
    std::fs::create_dir_all(&log).unwrap();
    std::fs::write(log.join("app.log"), "line 1\n").unwrap();
    let policy = format!(
        "agents:\n  - name: {agent}\n    files:\n      protect:\n        - path: {}\n          deny: [write]\n        - path: {}/**\n          deny: [truncate, delete]\n",
        ro.display(),
        log.display()
    );
    let daemon = Daemon::start(&dir, &policy);
    let conf = ro.join("conf").display().to_string();
    let (_, out) = launch(&agent, &[PYTHON, "-c", &format!("print(open({conf:?}).read(), end='')")], &[]);
    assert_ok("read", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "setting=1\n");
    let (_, out) = launch(&agent, &["sh", "-c", &format!("echo more >> {conf}")], &[]);
    assert_failed_by_itself("append", &out);
    let (_, out) = launch(&agent, &["truncate", "-s0", &conf], &[]);
    assert_failed_by_itself("truncate (write implies it)", &out);
    let (_, out) = launch(&agent, &["touch", &ro.join("new").display().to_string()], &[]);
    assert_failed_by_itself("a new file", &out);
    assert!(!ro.join("new").exists(), "the new file was created");
    assert_eq!(std::fs::read_to_string(ro.join("conf")).unwrap(), "setting=1\n");
    denied(&daemon, "append", "write", &ro.join("conf"));
    // `status` says which mechanism protects each rule.
    let st: Value = serde_json::from_slice(&agent_cmd(&["status", "--json"]).stdout).unwrap();
    let a = st["policy"]["agents"].as_array().unwrap().iter().find(|a| a["name"] == agent.as_str()).cloned().unwrap();
    let rules = a["files_protect"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{a:#}");
    assert!(field(&rules[0], "/landlock").starts_with("landlock, applied by `guard-agent launch`"), "{a:#}");
    assert!(field(&rules[0], "/lsm").starts_with("not active"), "{a:#}");
    let text = String::from_utf8_lossy(&agent_cmd(&["status"]).stdout).into_owned();
    assert!(text.contains(&format!("files.protect path: {} deny: [write]", ro.display())), "{text}");
    let (_, out) = launch(&agent, &["rm", &ro.join("old").display().to_string()], &[]);
    assert_ok("rm (delete is not denied)", &out);

    // An append-only log: appending works, truncating it (ftruncate, or `>`) does not.
    let app = log.join("app.log").display().to_string();
    let (_, out) = launch(&agent, &["sh", "-c", &format!("echo line 2 >> {app}")], &[]);
    assert_ok("append to the log", &out);
    let (_, out) = launch(&agent, &["truncate", "-s0", &app], &[]);
    assert_failed_by_itself("truncate -s0 of the log", &out);
    let v = denied(&daemon, "truncate -s0 of the log", "truncate", &log.join("app.log"));
    assert_eq!(v["unmapped"]["file_op"]["syscall"], "ftruncate", "{v:#}");
    let (_, out) = launch(&agent, &["sh", "-c", &format!("echo replaced > {app}")], &[]);
    assert_failed_by_itself("> onto the log", &out);
    assert_eq!(std::fs::read_to_string(log.join("app.log")).unwrap(), "line 1\nline 2\n");
    daemon.stop();
}

#[test]
fn a_non_root_launch_gets_the_ruleset_too_with_no_new_privs() {
    use std::os::unix::{fs::PermissionsExt as _, process::CommandExt as _};
    let dir = TempDir::new("protect-nobody");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let agent = unique("protect-nobody");
    let prot = dir.path("protected");
    let scratch = dir.path("scratch");
    for d in [&prot, &scratch] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::write(prot.join("f"), "nobody's data\n").unwrap();
    std::fs::set_permissions(prot.join("f"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let policy = format!("agents:\n  - name: {agent}\n    files:\n      protect:\n        - path: {}/**\n          deny: [delete, write]\n", prot.display());
    let daemon = Daemon::start_with(&dir, &policy, &["--detach-on-exit", "--launch-group", "nogroup"]);
    let f = prot.join("f").display().to_string();
    let script = format!(
        "grep NoNewPrivs /proc/self/status; rm -f {f}; echo rm=$?; echo x > {f}; echo write=$?; echo ok > {s}/g && echo scratch=$?",
        s = scratch.display()
    );
    let out = std::process::Command::new(guard_tests::agent_bin())
        .args(["launch", "--agent", &agent, "--", "sh", "-c", &script])
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout.contains("NoNewPrivs:\t1"), "Landlock without CAP_SYS_ADMIN needs no_new_privs: {}", text(&out));
    assert!(stdout.contains("rm=1") && stdout.contains("write=") && !stdout.contains("write=0") && stdout.contains("scratch=0"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(prot.join("f")).unwrap(), "nobody's data\n");
    let v = denied(&daemon, "nobody's rm", "delete", &prot.join("f"));
    assert_eq!(field(&v, "/unmapped/session/user/uid"), "65534");
    daemon.stop();
}
