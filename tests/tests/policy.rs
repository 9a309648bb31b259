//! Policy language v1 end to end: argv rules decided while the process is held at exec, holds
//! approved, denied and timed out, the hold gate, hot reload, `policy explain` against what the
//! daemon does, launch identity, non-root launches and processes moved out of their cgroup.
use std::{
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    process::Command,
    time::{Duration, Instant},
};

use guard_tests::{Daemon, TempDir, agent_cmd, assert_no_sessions, field, launch, launch_with, spawn_launch, unique};
use serde_json::Value;

const MARKER: &str = env!("CARGO_BIN_EXE_guard-test-marker");
const DEFAULT_POLICY: &str = include_str!("../../guard-agent/src/policy/default.yaml");

/// Copies the marker program to `dir/rel`, executable by anyone.
fn install_marker(dir: &TempDir, rel: &str) -> String {
    let dst = dir.path(rel);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(MARKER, &dst).unwrap();
    dst.to_str().unwrap().to_owned()
}

fn exec_of(v: &Value, path: &str) -> bool {
    v["class_uid"] == 1007 && field(v, "/process/file/path") == path
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn default_policy_kills_destructive_rm_and_lets_ordinary_rm_run_with_identity_in_verdicts() {
    let dir = TempDir::new("rm");
    // A stand-in `rm`: it writes its marker from its first instruction on, and deletes nothing.
    let rm = install_marker(&dir, "bin/rm");
    let daemon = Daemon::start(&dir, DEFAULT_POLICY);
    let agent = unique("claude");

    let marker = dir.path("marker-destructive");
    let (_, out) = launch_with(
        &["--label", "principal=alice@example.com", "--label", "ticket=OPS-12"],
        &agent,
        &[&rm, "-rf", "--no-preserve-root", "/tmp/x"],
        &[("GUARD_MARKER", marker.to_str().unwrap())],
    );
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{:?} {}", out.status, stderr(&out));
    assert!(!marker.exists(), "the held rm ran before it was judged");
    let v = daemon.await_verdict("killed rm", 10, |v| exec_of(v, &rm) && field(v, "/unmapped/verdict") == "killed");
    assert!(field(&v, "/unmapped/rule/matcher").contains("--no-preserve-root"), "{v:#}");
    assert_eq!(field(&v, "/unmapped/rule/section"), "exec.deny");
    assert_eq!(field(&v, "/unmapped/hold/decision"), "policy");
    assert_eq!(field(&v, "/unmapped/agent"), "coding-agent");
    // Identity: session, labels, launching user, host, policy hash.
    assert_eq!(field(&v, "/unmapped/session/launch_name"), agent);
    assert_eq!(field(&v, "/unmapped/session/labels/principal"), "alice@example.com");
    assert_eq!(field(&v, "/unmapped/session/labels/ticket"), "OPS-12");
    assert_eq!(field(&v, "/unmapped/session/user/uid"), "0");
    assert_eq!(field(&v, "/unmapped/session/user/name"), "root");
    assert_eq!(field(&v, "/unmapped/cgroup/path"), format!("/guard/{agent}/{}", field(&v, "/unmapped/session/id")));
    assert!(!field(&v, "/device/hostname").is_empty());
    assert_eq!(field(&v, "/unmapped/policy_hash").len(), 64);

    let marker = dir.path("marker-build");
    let (_, out) = launch(&agent, &[&rm, "-rf", "./build"], &[("GUARD_MARKER", marker.to_str().unwrap())]);
    assert!(out.status.success(), "{:?} {}", out.status, stderr(&out));
    assert!(marker.exists(), "rm -rf ./build did not run");
    let v = daemon.await_verdict("allowed rm", 10, |v| exec_of(v, &rm) && field(v, "/unmapped/verdict") == "allowed");
    assert_eq!(field(&v, "/unmapped/rule"), "");
    assert_eq!(field(&v, "/process/cmd_line"), format!("{rm} -rf ./build"));
    assert_no_sessions(&agent);
    daemon.stop();
}

fn hold_policy(agent: &str) -> String {
    format!(
        "agents:\n  - name: {agent}\n    exec:\n      hold:\n        - basename: guard-held\n          approve_timeout: 60s\n          message: needs a person\n        - basename: guard-held-short\n          approve_timeout: 1s\n"
    )
}

#[test]
fn a_held_process_continued_by_its_parent_is_killed_at_its_first_system_call() {
    let dir = TempDir::new("gate");
    let agent = unique("gate");
    let held = install_marker(&dir, "bin/guard-held");
    let daemon = Daemon::start(&dir, &hold_policy(&agent));
    let marker = dir.path("marker");
    let script = format!("{held} & sleep 1; kill -CONT $!; wait $!; echo status=$?");
    let (_, out) = launch(&agent, &["sh", "-c", &script], &[("GUARD_MARKER", marker.to_str().unwrap())]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("status=137"), "the continued process was not SIGKILLed: {stdout} {}", stderr(&out));
    assert!(!marker.exists(), "the held process ran its own code");
    let held_v = daemon.await_verdict("held", 10, |v| exec_of(v, &held) && field(v, "/unmapped/verdict") == "held");
    let id = field(&held_v, "/unmapped/hold/id");
    let v = daemon.await_verdict("gate kill", 10, |v| exec_of(v, &held) && field(v, "/unmapped/verdict") == "killed");
    assert_eq!(field(&v, "/unmapped/hold/id"), id);
    assert_eq!(field(&v, "/unmapped/hold/decision"), "gate");
    assert!(field(&v, "/unmapped/reason").contains("continued while held"), "{v:#}");
    daemon.stop();
}

#[test]
fn approve_deny_and_timeout_do_what_they_say() {
    let dir = TempDir::new("approve");
    let agent = unique("approve");
    let held = install_marker(&dir, "bin/guard-held");
    let short = install_marker(&dir, "bin/guard-held-short");
    let daemon = Daemon::start(&dir, &hold_policy(&agent));

    for approve in [true, false] {
        let marker = dir.path(if approve { "marker-approved" } else { "marker-denied" });
        let child = spawn_launch(&[], &agent, &[&held, if approve { "approve-me" } else { "deny-me" }], &[("GUARD_MARKER", marker.to_str().unwrap())]);
        let arg = if approve { "approve-me" } else { "deny-me" };
        let v = daemon.await_verdict("held", 10, |v| exec_of(v, &held) && field(v, "/unmapped/verdict") == "held" && field(v, "/process/cmd_line").ends_with(arg));
        let id = field(&v, "/unmapped/hold/id");
        assert_eq!(field(&v, "/unmapped/rule/message"), "needs a person");
        guard_tests::process::await_stopped(field(&v, "/process/pid").parse().expect("pid"));
        assert!(!marker.exists(), "ran while held");
        // `status` lists the pending hold, in both forms.
        let status = agent_cmd(&["status", "--json"]);
        let status: Value = serde_json::from_slice(&status.stdout).expect("status --json");
        let holds = status["holds"].as_array().expect("holds");
        assert!(holds.iter().any(|h| h["id"].to_string() == id && h["argv"][1] == arg), "{status:#}");
        // The gate looks in HELD only while the kernel's count of holds is not 0.
        assert!(status["counters"]["held_in_kernel"].as_u64().is_some_and(|n| n >= 1), "{status:#}");
        let text = String::from_utf8_lossy(&agent_cmd(&["status"]).stdout).into_owned();
        assert!(text.contains(&format!("#{id} pid")), "{text}");

        let out = agent_cmd(&[if approve { "approve" } else { "deny" }, &id]);
        assert!(out.status.success(), "{}", stderr(&out));
        let out = child.wait_with_output().unwrap();
        let final_verdict = if approve { "allowed" } else { "killed" };
        let v = daemon.await_verdict("decided", 10, |v| {
            exec_of(v, &held) && field(v, "/unmapped/verdict") == final_verdict && field(v, "/unmapped/hold/id") == id
        });
        assert_eq!(field(&v, "/unmapped/hold/decision"), if approve { "approved" } else { "denied" });
        assert_eq!(field(&v, "/unmapped/hold/by/uid"), "0");
        assert!(v["unmapped"]["hold"]["at"].as_u64().unwrap() > 1_600_000_000_000, "{v:#}");
        if approve {
            assert!(out.status.success(), "{:?}", out.status);
            assert!(marker.exists(), "approved but did not run");
        } else {
            assert_eq!(out.status.signal(), Some(libc::SIGKILL));
            assert!(!marker.exists(), "denied but ran");
        }
    }
    // Deciding a hold twice, or one that never existed, is an error.
    let out = agent_cmd(&["approve", "999999"]);
    assert!(!out.status.success() && stderr(&out).contains("no pending hold 999999"), "{}", stderr(&out));

    let marker = dir.path("marker-timeout");
    let start = Instant::now();
    let (_, out) = launch(&agent, &[&short], &[("GUARD_MARKER", marker.to_str().unwrap())]);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL));
    assert!(start.elapsed() >= Duration::from_secs(1), "killed before its timeout");
    assert!(!marker.exists());
    let v = daemon.await_verdict("timeout", 10, |v| exec_of(v, &short) && field(v, "/unmapped/verdict") == "killed");
    assert_eq!(field(&v, "/unmapped/hold/decision"), "timeout");
    // Every hold ended (approved and run, denied, timed out): the count the gate checks before
    // its lookup is back to 0, so other processes' system calls stop at one array read again.
    let status: Value = serde_json::from_slice(&agent_cmd(&["status", "--json"]).stdout).expect("status --json");
    assert_eq!(status["counters"]["held_in_kernel"], 0, "{status:#}");
    daemon.stop();
}

#[test]
fn reload_swaps_policies_and_a_broken_file_keeps_the_old_one() {
    let dir = TempDir::new("reload");
    let agent = unique("reload");
    let a = install_marker(&dir, "bin/guard-a");
    let b = install_marker(&dir, "bin/guard-b");
    let v1 = format!("agents:\n  - name: {agent}\n    exec:\n      deny:\n        - basename: guard-a\n");
    let v2 = format!("agents:\n  - name: {agent}\n    exec:\n      deny:\n        - basename: guard-a\n        - basename: guard-b\n");
    let daemon = Daemon::start(&dir, &v1);
    let policy = dir.path("policy.yaml");
    let reloads = |n: usize| daemon.verdicts(|v| v["class_uid"] == 6002 && field(v, "/unmapped/policy/error").is_empty()).len() >= n;

    let (_, out) = launch(&agent, &[&b], &[]);
    assert!(out.status.success(), "guard-b is allowed under v1");
    std::fs::write(&policy, &v2).unwrap();
    daemon.signal(libc::SIGHUP);
    let r = daemon.await_verdict("reload", 10, |v| v["class_uid"] == 6002);
    let h2 = field(&r, "/unmapped/policy_hash");
    let h1 = field(&r, "/unmapped/policy/previous_hash");
    assert_ne!(h1, h2);
    let (_, out) = launch(&agent, &[&b], &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "v2 is in force for the next exec");
    let v = daemon.await_verdict("killed b", 10, |v| exec_of(v, &b) && field(v, "/unmapped/verdict") == "killed");
    assert_eq!(field(&v, "/unmapped/policy_hash"), h2);

    // A changed file is picked up without a signal.
    std::fs::write(&policy, format!("{v2}# touched\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reloads(2) {
        assert!(Instant::now() < deadline, "file change not picked up");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A broken file: an error verdict, and the policy in force stays.
    let failures_before = daemon.verdicts(|v| v["class_uid"] == 6002 && !field(v, "/unmapped/policy/error").is_empty()).len();
    std::fs::write(&policy, format!("agents:\n  - name: {agent}\n    exec:\n      deny:\n        - basenme: guard-b\n")).unwrap();
    daemon.signal(libc::SIGHUP);
    let e = daemon.await_verdict("reload error", 10, |v| {
        v["class_uid"] == 6002 && !field(v, "/unmapped/policy/error").is_empty()
    });
    assert_eq!(failures_before, 0);
    assert!(field(&e, "/unmapped/policy/error").starts_with(&format!("{}:5:11: unknown key `basenme`", policy.display())), "{e:#}");
    assert_eq!(field(&e, "/status_id"), "2");
    let in_force = field(&e, "/unmapped/policy_hash");
    let (launcher, out) = launch(&agent, &[&a], &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "the old policy is still enforced");
    // Verdicts arrive asynchronously: wait for this exec's (its parent is the launcher).
    let last = daemon.await_verdict("the last exec", 10, |v| exec_of(v, &a) && field(v, "/process/parent_process/pid") == launcher.to_string());
    assert_eq!(field(&last, "/unmapped/policy_hash"), in_force);
    daemon.stop();
}

/// An exec loop across 50 reloads between two kinds of policy: P kills guard-a and guard-b by
/// basename, Q lets guard-a run and kills guard-b by path. Each round's text differs (a
/// comment), so every generation has its own hash. The kernel's effect is the ground truth:
/// each exec's exit status is logged by the loop, in exec order. Every verdict must name the
/// generation that decided in the kernel: a killed guard-a a P round, a guard-a that ran a Q
/// round, guard-b's rule the one of its round's kind, and rounds never going back in exec
/// order. guard-b is killed by every exec (no moment without a policy).
#[test]
fn verdicts_name_the_policy_generation_that_decided_in_the_kernel_across_50_reloads() {
    const ROUNDS: usize = 50;
    let dir = TempDir::new("generations");
    let agent = unique("gens");
    let a = install_marker(&dir, "bin/guard-a");
    let b = install_marker(&dir, "bin/guard-b");
    let text = |round: usize| {
        let rules = if round.is_multiple_of(2) {
            "        - basename: guard-a\n        - basename: guard-b\n".to_owned()
        } else {
            format!("        - path: {b}\n")
        };
        format!("# round {round}\nagents:\n  - name: {agent}\n    exec:\n      deny:\n{rules}")
    };
    let daemon = Daemon::start(&dir, &text(0));
    let policy = dir.path("policy.yaml");
    let status: Value = serde_json::from_slice(&agent_cmd(&["status", "--json"]).stdout).expect("status --json");
    // Round -> the hash of its policy, and back.
    let mut hashes = vec![status["policy"]["hash"].as_str().expect("policy hash").to_owned()];
    // Round -> its generation (each reload is one).
    let mut generations = vec![status["policy"]["generation"].as_u64().expect("policy generation")];

    let stop = dir.path("stop");
    let log = dir.path("execs.log");
    // Paced (at most 100 execs a second): enough for several execs under every generation, few
    // enough that the harness validating every line keeps up. The pause is not an exec.
    let script = [
        "import os, subprocess, sys, time",
        "stop, log, bins = sys.argv[1], open(sys.argv[2], 'a'), sys.argv[3:]",
        "while not os.path.exists(stop):",
        "    for x in bins:",
        "        p = subprocess.Popen([x], stdout=subprocess.DEVNULL)",
        "        log.write(f'{x} {p.pid} {p.wait()}\\n'); log.flush()",
        "    time.sleep(0.02)",
    ]
    .join("\n");
    let (stop_s, log_s) = (stop.display().to_string(), log.display().to_string());
    let looper = spawn_launch(&[], &agent, &["python3", "-c", &script, &stop_s, &log_s, &a, &b], &[]);
    let exec_in = |round: usize, hashes: &[String]| {
        daemon.await_verdict(&format!("an exec of guard-a under round {round}"), 20, |v| exec_of(v, &a) && field(v, "/unmapped/policy_hash") == hashes[round]);
    };
    exec_in(0, &hashes);
    let staged = dir.path("policy.yaml.new");
    for round in 1..=ROUNDS {
        // Replaced whole (rename), so the daemon's own change poll never reads half a file.
        std::fs::write(&staged, text(round)).unwrap();
        std::fs::rename(&staged, &policy).unwrap();
        daemon.signal(libc::SIGHUP);
        // The poll may reload the same text again: the round's reload is the first new hash.
        let reload = daemon.await_verdict(&format!("reload {round}"), 10, |v| {
            v["class_uid"] == 6002 && !hashes.contains(&field(v, "/unmapped/policy_hash"))
        });
        assert_eq!(field(&reload, "/unmapped/policy/error"), "", "round {round}: {reload:#}");
        hashes.push(field(&reload, "/unmapped/policy_hash"));
        generations.push(reload["unmapped"]["policy_generation"].as_u64().expect("reload generation"));
        // The loop runs under every generation: wait for one of its execs under this one.
        exec_in(round, &hashes);
    }
    std::fs::write(&stop, "").unwrap();
    let out = looper.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    let distinct: std::collections::BTreeSet<&String> = hashes.iter().collect();
    assert_eq!(distinct.len(), ROUNDS + 1, "every round has its own hash");
    let round_of = |hash: &str| hashes.iter().position(|h| h == hash);

    // (binary, pid, exit status: -9 when killed by SIGKILL) in exec order, as the kernel left them.
    let execs: Vec<(String, String, i32)> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].to_owned(), f[1].to_owned(), f[2].parse().unwrap())
        })
        .collect();
    assert!(execs.len() > 2 * ROUNDS, "only {} execs", execs.len());
    // Each exec's verdict, by (binary, pid); they arrive asynchronously.
    let deadline = Instant::now() + Duration::from_secs(20);
    let verdicts = loop {
        let seen: std::collections::HashMap<(String, String), Value> = daemon
            .verdicts(|v| exec_of(v, &a) || exec_of(v, &b))
            .into_iter()
            .map(|v| ((field(&v, "/process/file/path"), field(&v, "/process/pid")), v))
            .collect();
        let missing: Vec<_> = execs.iter().filter(|(bin, pid, _)| !seen.contains_key(&(bin.clone(), pid.clone()))).collect();
        if missing.is_empty() {
            break seen;
        }
        assert!(Instant::now() < deadline, "no verdict for {} execs, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut last_round = 0;
    for (i, (bin, pid, status)) in execs.iter().enumerate() {
        let v = &verdicts[&(bin.clone(), pid.clone())];
        let hash = field(v, "/unmapped/policy_hash");
        let round = round_of(&hash).unwrap_or_else(|| panic!("exec {i}: a hash of no round: {v:#}"));
        let generation = v["unmapped"]["policy_generation"].as_u64().unwrap_or_else(|| panic!("exec {i}: no generation: {v:#}"));
        assert!(round >= last_round, "exec {i} ({bin}, pid {pid}) names round {round} after an earlier exec named round {last_round}: {v:#}");
        last_round = round;
        let verdict = field(v, "/unmapped/verdict");
        let rule = field(v, "/unmapped/rule/matcher");
        if *bin == b {
            assert_eq!(*status, -libc::SIGKILL, "guard-b ran (pid {pid}): a moment without a policy");
            assert_eq!(verdict, "killed", "{v:#}");
            let expect = if round % 2 == 0 { "basename: guard-b".to_owned() } else { format!("path: {b}") };
            assert_eq!(rule, expect, "exec {i}: round {round}'s rule: {v:#}");
        } else if *status == -libc::SIGKILL {
            assert_eq!(verdict, "killed", "{v:#}");
            assert_eq!(round % 2, 0, "guard-a was killed in the kernel, yet its verdict names round {round} (a policy that allows it): {v:#}");
            assert_eq!(rule, "basename: guard-a", "{v:#}");
        } else {
            assert_eq!(*status, 0, "guard-a (pid {pid}) exited {status}");
            assert_eq!(verdict, "allowed", "{v:#}");
            assert_eq!(round % 2, 1, "guard-a ran, yet its verdict names round {round} (a policy that kills it): {v:#}");
        }
        assert_eq!(generation, generations[round], "exec {i}: the generation of round {round}: {v:#}");
    }
    let status: Value = serde_json::from_slice(&agent_cmd(&["status", "--json"]).stdout).expect("status --json");
    assert_eq!(status["policy"]["unattributed"], 0, "{status:#}");
    daemon.stop();
}

#[test]
fn broken_policy_corpus_reports_file_line_column() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/broken");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    assert!(files.len() >= 15, "only {} broken policies", files.len());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let expect = text.lines().next().and_then(|l| l.strip_prefix("# expect: ")).unwrap_or_else(|| panic!("{}: no `# expect:` line", f.display()));
        let out = agent_cmd(&["policy", "check", f.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{} was accepted", f.display());
        assert_eq!(stderr(&out).trim(), format!("{}:{expect}", f.display()), "{}", f.display());
    }
}

#[test]
fn policy_explain_agrees_with_the_daemon() {
    let dir = TempDir::new("explain");
    let agent = unique("explain");
    let bin = |name: &str| install_marker(&dir, &format!("bin/{name}"));
    let (rm, dd, git, tool, shred, mkfs, safe) = (bin("rm"), bin("dd"), bin("git"), bin("tool"), bin("shred"), bin("mkfs.ext4"), bin("safe"));
    let policy = format!(
        "agents:\n  - name: {agent}\n    exec:\n      deny:\n        - basename: shred\n        - basename_prefix: mkfs\n        - basename: rm\n          argv_any: [\"--no-preserve-root\", \"/\"]\n        - basename: dd\n          argv_glob: [\"of=/dev/sd*\"]\n        - basename: git\n          argv_all: [push, --force]\n        - basename: tool\n          action: audit\n        - basename: tool\n          argv_any: [--evil]\n        - basename: safe\n          uid: [4242]\n"
    );
    let daemon = Daemon::start(&dir, &policy);
    let policy_file = dir.path("policy.yaml");
    let commands: Vec<Vec<&str>> = vec![
        vec![&rm, "-rf", "--no-preserve-root", "/tmp/x"],
        vec![&rm, "-rf", "/"],
        vec![&rm, "-rf", "./build"],
        vec![&rm, "file"],
        vec![&rm],
        vec![&dd, "if=/dev/zero", "of=/dev/sda"],
        vec![&dd, "if=a", "of=b"],
        vec![&dd, "of=/dev/sdb1", "bs=1M"],
        vec![&git, "push", "--force", "origin"],
        vec![&git, "push", "origin"],
        vec![&git, "status"],
        vec![&git, "--force", "push"],
        vec![&tool],
        vec![&tool, "--evil"],
        vec![&tool, "--good"],
        vec![&shred, "-u", "f"],
        vec![&mkfs, "/dev/sdz"],
        vec![&safe],
        vec![&safe, "--anything"],
        vec!["sh", "-c", "exit 0"],
    ];
    assert!(commands.len() >= 20);
    for cmd in commands {
        let mut args = vec!["policy", "explain", "--json", policy_file.to_str().unwrap(), "--"];
        args.extend(cmd.iter().copied());
        let out = agent_cmd(&args);
        assert!(out.status.success(), "explain {cmd:?}: {}", stderr(&out));
        let explained: Value = serde_json::from_slice(&out.stdout).unwrap();
        let (launcher, run) = launch(&agent, &cmd, &[]);
        let path = if cmd[0].starts_with('/') { cmd[0].to_owned() } else { field(&explained, "/filename") };
        let v = daemon.await_verdict(&format!("{cmd:?}"), 10, |v| {
            exec_of(v, &path) && field(v, "/process/parent_process/pid") == launcher.to_string() && field(v, "/unmapped/verdict") != "held"
        });
        assert_eq!(field(&v, "/unmapped/verdict"), field(&explained, "/verdict"), "{cmd:?}: daemon {v:#} vs explain {explained:#}");
        assert_eq!(field(&v, "/unmapped/rule/location"), field(&explained, "/rule/location"), "{cmd:?}");
        // What the kernel did agrees too.
        let killed = run.status.signal() == Some(libc::SIGKILL);
        assert_eq!(killed, field(&explained, "/verdict") == "killed", "{cmd:?}: {:?}", run.status);
    }
    daemon.stop();
}

#[test]
fn non_root_launch_cannot_leave_its_cgroup_and_a_root_workload_that_leaves_stays_enforced() {
    let dir = TempDir::new("nonroot");
    // `nobody` must reach the marker and write its file.
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let agent = unique("nonroot");
    let denied = install_marker(&dir, "bin/guard-denied");
    let policy = format!("agents:\n  - name: {agent}\n    exec:\n      deny:\n        - basename: guard-denied\n");
    let daemon = Daemon::start_with(&dir, &policy, &["--detach-on-exit", "--launch-group", "nogroup"]);
    let root = guard_tests::cgroup2_root();
    let marker = dir.path("marker-nobody");
    let script = format!(
        "echo $$ > {root}/cgroup.procs; echo root=$?; echo $$ > {root}/guard/cgroup.procs; echo guard=$?; cat /proc/self/cgroup; exec {denied}",
        root = root.display()
    );
    let out = Command::new(guard_tests::agent_bin())
        .args(["launch", "--agent", &agent, "--label", "who=nobody", "--", "sh", "-c", &script])
        .env("GUARD_MARKER", &marker)
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("root=0") && !stdout.contains("guard=0"), "nobody moved itself: {stdout} {}", stderr(&out));
    assert_eq!(stderr(&out).matches("Permission denied").count(), 2, "{}", stderr(&out));
    assert!(stdout.contains(&format!("0::/guard/{agent}/")), "{stdout}");
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{:?} {stdout} {}", out.status, stderr(&out));
    assert!(!marker.exists());
    let v = daemon.await_verdict("nobody's kill", 10, |v| exec_of(v, &denied) && field(v, "/unmapped/verdict") == "killed");
    assert_eq!(field(&v, "/unmapped/session/user/uid"), "65534", "{v}");
    assert_eq!(field(&v, "/unmapped/session/user/name"), "nobody");
    assert_eq!(field(&v, "/unmapped/session/labels/who"), "nobody");

    // Root can move its workload out; the kernel keeps it under its policy and says so.
    let marker = dir.path("marker-root");
    let script = format!("echo $$ > {}/cgroup.procs && cat /proc/self/cgroup && exec {denied}", root.display());
    let (_, out) = launch(&agent, &["sh", "-c", &script], &[("GUARD_MARKER", marker.to_str().unwrap())]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("0::/\n"), "the workload did not move out: {stdout}");
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "moved out and ran unpoliced: {stdout}");
    assert!(!marker.exists());
    let moved = daemon.await_verdict("moved out", 10, |v| field(v, "/unmapped/operation") == "moved_out");
    assert_eq!(field(&moved, "/unmapped/moved/to"), "/");
    assert_eq!(field(&moved, "/unmapped/agent"), agent);
    let v = daemon.await_verdict("kill after moving out", 10, |v| {
        exec_of(v, &denied) && field(v, "/unmapped/verdict") == "killed" && field(v, "/unmapped/cgroup/path") == "/"
    });
    assert!(field(&v, "/unmapped/reason").contains("moved out"), "{v:#}");
    assert_eq!(field(&v, "/unmapped/agent"), agent);
    daemon.stop();
}

#[test]
fn a_restarted_daemon_kills_what_its_predecessor_held() {
    let dir = TempDir::new("restart");
    let agent = unique("restart");
    let held = install_marker(&dir, "bin/guard-held");
    let policy = hold_policy(&agent);
    let daemon = Daemon::start_with(&dir, &policy, &[]);
    let marker = dir.path("marker");
    let child = spawn_launch(&[], &agent, &[&held], &[("GUARD_MARKER", marker.to_str().unwrap())]);
    let v = daemon.await_verdict("held", 10, |v| exec_of(v, &held) && field(v, "/unmapped/verdict") == "held");
    // The daemon dies: the process stays stopped (the pinned gate still guards it) ...
    daemon.kill_hard();
    guard_tests::process::await_stopped(field(&v, "/process/pid").parse().expect("pid"));
    assert!(!marker.exists());
    // ... and the next daemon kills it (fail closed) rather than guess.
    let daemon = Daemon::start(&dir, &policy);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{:?}", out.status);
    assert!(!marker.exists());
    assert!(daemon.stderr_text().contains("killed a process held by a previous daemon"), "{}", daemon.stderr_text());
    daemon.stop();
}

/// Runs `bin` in the cgroup `dir` (made by the test, as systemd would): killed before its marker?
fn killed_in(dir: &std::path::Path, bin: &str, marker: &std::path::Path) -> bool {
    let mut cmd = Command::new(bin);
    cmd.env("GUARD_MARKER", marker);
    let out = guard_tests::run_in_cgroup(dir, cmd);
    out.status.signal() == Some(libc::SIGKILL) && !marker.exists()
}

#[test]
fn systemd_unit_globs_match_existing_and_new_cgroups() {
    let dir = TempDir::new("unit");
    let agent = unique("unit");
    let denied = install_marker(&dir, "bin/guard-denied");
    let root = guard_tests::cgroup2_root();
    let slice = root.join(format!("{agent}.slice"));
    let existing = slice.join(format!("{agent}-old.service"));
    std::fs::create_dir_all(&existing).unwrap();
    let policy = format!(
        "agents:\n  - name: {agent}\n    match:\n      systemd_unit: \"{agent}-*.service\"\n    exec:\n      deny:\n        - basename: guard-denied\n"
    );
    let daemon = Daemon::start(&dir, &policy);
    assert!(killed_in(&existing, &denied, &dir.path("m-old")), "a unit cgroup that existed at start is not enforced");
    let fresh = slice.join(format!("{agent}-new.service"));
    std::fs::create_dir(&fresh).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !daemon.stderr_text().contains(&format!("{agent}-new.service")) {
        assert!(Instant::now() < deadline, "the new unit cgroup was not picked up: {}", daemon.stderr_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(killed_in(&fresh, &denied, &dir.path("m-new")), "a new unit cgroup is not enforced");
    let other = slice.join("unrelated.service");
    std::fs::create_dir(&other).unwrap();
    // The daemon handles cgroup events in order: once a matching cgroup made after `other` is
    // registered, `other` has been seen (and, if wrongly matched, registered) too.
    let later = slice.join(format!("{agent}-later.service"));
    std::fs::create_dir(&later).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !daemon.stderr_text().contains(&format!("{agent}-later.service")) {
        assert!(Instant::now() < deadline, "the later unit cgroup was not picked up: {}", daemon.stderr_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!daemon.stderr_text().contains("unrelated.service"), "{}", daemon.stderr_text());
    assert!(!killed_in(&other, &denied, &dir.path("m-other")), "a cgroup the glob does not match is enforced");
    let v = daemon.await_verdict("unit kill", 10, |v| exec_of(v, &denied) && field(v, "/unmapped/verdict") == "killed");
    assert_eq!(field(&v, "/unmapped/agent"), agent);
    for d in [&existing, &fresh, &other, &later, &slice] {
        std::fs::remove_dir(d).unwrap();
    }
    daemon.stop();
}
