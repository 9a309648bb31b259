//! Exec rules that survive renames and links, and that reach every process of a workload:
//! basename prefixes, symlinks and hard links to denied binaries, binaries under a denied
//! directory run by a relative path, grandchildren, and sub-cgroups the workload made itself.
//! Run as root by `cargo xtask test`.
use std::{os::unix::process::ExitStatusExt as _, path::Path, process::Command};

use guard_tests::{Daemon, TempDir, field, launch, unique};

const MARKER: &str = env!("CARGO_BIN_EXE_guard-test-marker");

/// Runs `cmd` in `agent` with a fresh marker file; returns (killed by SIGKILL, marker written).
fn run_in(agent: &str, dir: &TempDir, name: &str, cmd: &[&str]) -> (bool, bool) {
    let marker = dir.path(&format!("marker-{name}"));
    let (_, out) = launch(agent, cmd, &[("GUARD_MARKER", marker.to_str().unwrap())]);
    let killed = out.status.signal() == Some(libc::SIGKILL);
    (killed, marker.exists())
}

/// Runs `cmd` outside any agent; true if the marker was written.
fn runs_outside(dir: &TempDir, name: &str, cmd: &[&str]) -> bool {
    let marker = dir.path(&format!("outside-{name}"));
    let out = Command::new(cmd[0]).args(&cmd[1..]).env("GUARD_MARKER", &marker).output().unwrap();
    out.status.success() && marker.exists()
}

fn copy_to(dir: &TempDir, rel: &str) -> String {
    let dst = dir.path(rel);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(MARKER, &dst).unwrap();
    dst.to_str().unwrap().to_owned()
}

#[test]
fn links_prefixes_and_relative_paths_are_denied() {
    let dir = TempDir::new("identity");
    let agent = unique("ident");
    let denied = copy_to(&dir, "bin/guard-denied");
    let tool = copy_to(&dir, "tools/sub/tool");
    let mkfs = copy_to(&dir, "bin/guard-mkfs.ext4");
    let innocent = copy_to(&dir, "bin/innocent");
    let symlink = dir.path("elsewhere/friendly-name");
    std::fs::create_dir_all(symlink.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&denied, &symlink).unwrap();
    let hardlink = dir.path("elsewhere/another-name");
    std::fs::hard_link(&denied, &hardlink).unwrap();
    let (symlink, hardlink) = (symlink.to_str().unwrap().to_owned(), hardlink.to_str().unwrap().to_owned());
    let tools = dir.path("tools");
    let tools_sub = tools.join("sub").to_str().unwrap().to_owned();
    let daemon = Daemon::start(
        &dir,
        &format!(
            "agents:\n  - name: {agent}\n    exec:\n      deny:\n        - path: {denied}\n        - path_prefix: {}\n        - basename_prefix: guard-mkfs\n",
            tools.display()
        ),
    );

    let cases: [(&str, Vec<&str>, &str); 5] = [
        ("symlink", vec![symlink.as_str()], "path: "),
        ("hardlink", vec![hardlink.as_str()], "path: "),
        ("prefix", vec![tool.as_str()], "path_prefix: "),
        ("basename-prefix", vec![mkfs.as_str()], "basename_prefix: guard-mkfs"),
        // Relative to the working directory: the filename does not start with the prefix, the
        // executed file's directory is the denied one.
        ("relative", vec!["sh", "-c", "cd \"$1\" && exec ./tool", "sh", tools_sub.as_str()], "path_prefix: "),
    ];
    for (name, cmd, rule) in &cases {
        let (killed, ran) = run_in(&agent, &dir, name, cmd);
        assert!(killed && !ran, "{name}: killed={killed} ran={ran}");
        let exe = if *name == "relative" { "./tool".to_owned() } else { cmd[0].to_owned() };
        let v = daemon.only_verdict(&agent, name, |v| field(v, "/process/file/path") == exe);
        assert_eq!(field(&v, "/unmapped/verdict"), "killed", "{name}");
        assert!(field(&v, "/unmapped/rule/matcher").starts_with(rule), "{name}: {v:#}");
    }
    // Not denied: a different binary, in the agent.
    let (killed, ran) = run_in(&agent, &dir, "innocent", &[&innocent]);
    assert!(!killed && ran, "innocent: killed={killed} ran={ran}");
    // Outside agents everything runs.
    for (name, cmd) in [("symlink", &symlink), ("hardlink", &hardlink), ("prefix", &tool), ("mkfs", &mkfs)] {
        assert!(runs_outside(&dir, name, &[cmd]), "{name} outside agents");
    }
    daemon.stop();
}

#[test]
fn grandchildren_and_self_made_sub_cgroups_are_enforced() {
    let dir = TempDir::new("lineage");
    let agent = unique("lineage");
    let denied = copy_to(&dir, "bin/guard-denied");
    let script = dir.path("run.sh");
    std::fs::write(&script, format!("#!/bin/sh\n{denied}\necho survived\n")).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let daemon = Daemon::start(&dir, &format!("agents:\n  - name: {agent}\n    exec:\n      deny:\n        - path: {denied}\n"));

    // shell -> script -> binary.
    let marker = dir.path("marker-grandchild");
    let (_, out) = launch(&agent, &["sh", "-c", script.to_str().unwrap()], &[("GUARD_MARKER", marker.to_str().unwrap())]);
    assert!(!marker.exists(), "the grandchild ran");
    assert!(String::from_utf8_lossy(&out.stdout).contains("survived"), "the script goes on after its child is killed");
    let v = daemon.only_verdict(&agent, "the grandchild", |v| field(v, "/process/file/path") == denied);
    assert_eq!(field(&v, "/unmapped/verdict"), "killed");
    // Its ancestry, nearest first: the script, the shell that ran it, then the launcher.
    let chain: Vec<(String, String)> = v["unmapped"]["ancestry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["pid"].to_string(), a["exe"].as_str().unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(chain.len(), 3, "{chain:?}");
    assert_eq!(chain[0].0, field(&v, "/process/parent_process/pid"));
    assert_eq!(chain[0].1, script.to_str().unwrap(), "{chain:?}");
    assert!(chain[1].1.ends_with("/sh"), "{chain:?}");
    assert!(chain[2].1.ends_with("/guard-agent"), "the chain ends at the launch: {chain:?}");

    // The workload makes a cgroup below its own, moves into it, and runs the binary there.
    let marker = dir.path("marker-subcgroup");
    let move_and_run = format!(
        "cg=$(sed -n 's/^0:://p' /proc/self/cgroup); root=$(awk '$9==\"cgroup2\"{{print $5; exit}}' /proc/self/mountinfo); \
         mkdir \"$root$cg/inner\" && echo $$ > \"$root$cg/inner/cgroup.procs\" && exec {denied}"
    );
    let (_, out) = launch(&agent, &["sh", "-c", &move_and_run], &[("GUARD_MARKER", marker.to_str().unwrap())]);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(!marker.exists(), "the binary ran in the sub-cgroup");
    let v = daemon.only_verdict(&agent, "the sub-cgroup exec", |v| field(v, "/process/file/path") == denied && field(v, "/unmapped/cgroup/path").ends_with("/inner"));
    assert!(field(&v, "/unmapped/cgroup/path").starts_with(&format!("/guard/{agent}/")), "{v:#}");
    assert!(Path::new(&denied).exists());
    daemon.stop();
}

#[test]
fn exec_verdicts_carry_argv_cwd_ids_and_the_files_identity() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = TempDir::new("details");
    let agent = unique("details");
    let bin = copy_to(&dir, "bin/guard-details");
    let work = dir.path("work dir");
    std::fs::create_dir_all(&work).unwrap();
    let daemon = Daemon::start(&dir, &format!("agents:\n  - name: {agent}\n"));

    let long = "x".repeat(5000);
    let cmd = "cd \"$1\" && exec \"$2\" one 'two words'";
    let (_, out) = launch(&agent, &["sh", "-c", cmd, "sh", work.to_str().unwrap(), &bin], &[]);
    assert!(out.status.success(), "{:?}", out.status);
    let v = daemon.only_verdict(&agent, "the exec", |v| field(v, "/process/file/path") == bin);
    let argv: Vec<&str> = v["unmapped"]["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(argv, [bin.as_str(), "one", "two words"]);
    assert_eq!(field(&v, "/unmapped/argv_truncated"), "false");
    assert_eq!(field(&v, "/process/working_directory"), work.to_str().unwrap());
    assert_eq!(field(&v, "/process/name"), "guard-details");
    assert_eq!(field(&v, "/unmapped/euid"), "0");
    let loginuid = std::fs::read_to_string("/proc/self/loginuid").unwrap();
    let expected = if loginuid.trim() == u32::MAX.to_string() { String::new() } else { loginuid.trim().to_owned() };
    assert_eq!(field(&v, "/unmapped/loginuid"), expected, "the audit login uid is inherited");
    assert_eq!(field(&v, "/unmapped/exe_identity/ino"), std::fs::metadata(&bin).unwrap().ino().to_string());

    // An argv longer than the kernel carries is cut and says so.
    let (_, out) = launch(&agent, &[&bin, &long], &[]);
    assert!(out.status.success());
    let v = daemon.only_verdict(&agent, "the long exec", |v| field(v, "/process/file/path") == bin && field(v, "/unmapped/argv_truncated") == "true");
    // Arguments and the NULs between them; a cut argv has no NUL after its last piece.
    let args = v["unmapped"]["argv"].as_array().unwrap();
    let carried: usize = args.iter().map(|a| a.as_str().unwrap().len()).sum::<usize>() + args.len() - 1;
    assert_eq!(carried, guard_common::ARGV_LEN, "exactly the first ARGV_LEN bytes of argv");
    daemon.stop();
}
