//! `guard-agent install` / `uninstall` and the systemd units they write: the layout and its
//! modes, units `systemd-analyze verify` accepts, idempotence, an uninstall that leaves the root
//! as it was, and a daemon that enforces with exactly the capabilities the unit grants.
//!
//! Run by `cargo xtask test`. Everything but the capability test works as any user (install
//! writes only into a scratch `--root`); that one needs root and starts a daemon.
use std::{
    collections::BTreeMap,
    os::unix::{
        fs::{MetadataExt as _, PermissionsExt as _},
        process::{CommandExt as _, ExitStatusExt as _},
    },
    path::{Path, PathBuf},
    process::{Command, Output},
};

use guard_tests::{Daemon, TempDir, agent_bin, agent_cmd, field, launch, unique};

const DEFAULT_POLICY: &str = include_str!("../../guard-agent/src/policy/default.yaml");
const MARKER: &str = env!("CARGO_BIN_EXE_guard-test-marker");
const SERVICE: &str = "guard-agent.service";
const SLICE: &str = "guard-agents.slice";
const NOBODY: u32 = 65534;

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs guard-agent and requires success; returns its stdout.
fn ok(args: &[&str]) -> String {
    let out = agent_cmd(args);
    assert!(out.status.success(), "guard-agent {args:?}: {}\n{}{}", out.status, text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn install(root: &Path, prefix: &str) -> String {
    ok(&["install", "--root", root.to_str().unwrap(), "--prefix", prefix])
}

fn uninstall(root: &Path, extra: &[&str]) -> String {
    let mut args = vec!["uninstall", "--root", root.to_str().unwrap()];
    args.extend_from_slice(extra);
    ok(&args)
}

/// Every path below `root` (relative) with its mode, size and mtime (seconds, nanoseconds).
fn listing(root: &Path) -> BTreeMap<PathBuf, (u32, u64, i64, i64)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (u32, u64, i64, i64)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            out.insert(path.strip_prefix(root).unwrap().to_path_buf(), (m.mode(), m.size(), m.mtime(), m.mtime_nsec()));
            if m.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The item lines of install's or uninstall's output (the next-steps text is not one).
fn item_lines(stdout: &str) -> Vec<&str> {
    stdout.lines().take_while(|l| !l.is_empty() && !l.starts_with("staged under")).collect()
}

const DIR: u32 = libc::S_IFDIR;
const FILE: u32 = libc::S_IFREG;

#[test]
fn install_lays_out_binary_units_and_config_with_their_modes() {
    let root = TempDir::new("layout");
    install(&root.0, "/usr/local");
    let modes: BTreeMap<PathBuf, u32> = listing(&root.0).into_iter().map(|(p, (mode, ..))| (p, mode)).collect();
    let want: BTreeMap<PathBuf, u32> = [
        ("etc", DIR | 0o755),
        ("etc/guard", DIR | 0o755),
        ("etc/guard/guard.yaml", FILE | 0o644),
        ("etc/guard/policy.d", DIR | 0o755),
        ("etc/guard/policy.d/00-default.yaml", FILE | 0o644),
        ("etc/systemd", DIR | 0o755),
        ("etc/systemd/system", DIR | 0o755),
        ("etc/systemd/system/guard-agent.service", FILE | 0o644),
        ("etc/systemd/system/guard-agents.slice", FILE | 0o644),
        ("usr", DIR | 0o755),
        ("usr/local", DIR | 0o755),
        ("usr/local/bin", DIR | 0o755),
        ("usr/local/bin/guard-agent", FILE | 0o755),
        ("var", DIR | 0o755),
        ("var/lib", DIR | 0o755),
        ("var/lib/guard", DIR | 0o700),
        ("var/lib/guard/install-state", FILE | 0o600),
        ("var/log", DIR | 0o755),
        ("var/log/guard", DIR | 0o750),
    ]
    .into_iter()
    .map(|(p, m)| (PathBuf::from(p), m))
    .collect();
    let show = |m: &BTreeMap<PathBuf, u32>| m.iter().map(|(p, m)| format!("{m:o} {}\n", p.display())).collect::<String>();
    assert_eq!(show(&modes), show(&want));

    // The binary is this build's, and it runs from where it was put.
    let bin = root.path("usr/local/bin/guard-agent");
    assert!(std::fs::read(&bin).unwrap() == std::fs::read(agent_bin()).unwrap(), "the installed binary differs");
    let out = Command::new(&bin).arg("--version").output().unwrap();
    assert!(out.status.success() && text(&out.stdout).starts_with("guard-agent "), "{out:?}");
    // The installed policy is valid, and the config is the embedded default.
    ok(&["policy", "check", root.path("etc/guard/policy.d").to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(root.path("etc/guard/guard.yaml")).unwrap(), include_str!("../../guard-agent/src/config/guard.yaml"));
    assert_eq!(std::fs::read_to_string(root.path("etc/guard/policy.d/00-default.yaml")).unwrap(), DEFAULT_POLICY);

    let unit = std::fs::read_to_string(root.path("etc/systemd/system/guard-agent.service")).unwrap();
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=/usr/local/bin/guard-agent daemon --config /etc/guard/guard.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=30s",
        "Restart=always",
        "RestartSec=2s",
        "OOMScoreAdjust=-900",
        "LimitMEMLOCK=infinity",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "RuntimeDirectory=guard",
        "StateDirectory=guard",
        "LogsDirectory=guard",
        "MemoryDenyWriteExecute=yes",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks `{line}`");
    }
    // ProtectControlGroups= / ProtectKernelTunables= make cgroupfs / bpffs read-only (no
    // enforcement); KillMode= stays the default; Delegate= and AmbientCapabilities= are not needed.
    for key in ["ProtectControlGroups=", "ProtectKernelTunables=", "KillMode=", "Delegate=", "AmbientCapabilities="] {
        assert!(!unit.lines().any(|l| l.starts_with(key)), "the unit sets {key}");
    }
    let slice = std::fs::read_to_string(root.path("etc/systemd/system/guard-agents.slice")).unwrap();
    assert!(slice.lines().any(|l| l == "[Slice]") && slice.lines().any(|l| l == "After=guard-agent.service"), "{slice}");

    let complaints = verify(&root.0, &[("etc/systemd/system", SERVICE), ("etc/systemd/system", SLICE)]);
    assert!(complaints.is_empty(), "systemd-analyze verify complains about our units:\n{}", complaints.join("\n"));
}

#[test]
fn the_packaged_prefix_puts_units_in_usr_lib() {
    let root = TempDir::new("usr");
    install(&root.0, "/usr");
    let unit = std::fs::read_to_string(root.path("usr/lib/systemd/system/guard-agent.service")).unwrap();
    assert!(unit.lines().any(|l| l == "ExecStart=/usr/bin/guard-agent daemon --config /etc/guard/guard.yaml"));
    assert!(root.path("usr/bin/guard-agent").is_file() && !root.path("etc/systemd").exists());
    let complaints = verify(&root.0, &[("usr/lib/systemd/system", SERVICE), ("usr/lib/systemd/system", SLICE)]);
    assert!(complaints.is_empty(), "{}", complaints.join("\n"));
}

/// `systemd-analyze verify` of installed units: the lines of its output about them.
///
/// `verify --root=ROOT` does not work for this (systemd 252): the units' default dependencies
/// (sysinit.target, basic.target, ...) are looked up inside ROOT, which has none, so every unit
/// fails with "Unit sysinit.target not found". So the files are verified by path, against this
/// host's units, from copies whose ExecStart= names the binary inside ROOT (verify checks that
/// it exists and is executable). Everything else is verified as installed.
fn verify(root: &Path, units: &[(&str, &str)]) -> Vec<String> {
    let copies = TempDir::new("verify");
    let mut paths = Vec::new();
    for (dir, name) in units {
        let text = std::fs::read_to_string(root.join(dir).join(name)).unwrap();
        let text = text.replace("ExecStart=/", &format!("ExecStart={}/", root.display()));
        let copy = copies.path(name);
        std::fs::write(&copy, text).unwrap();
        paths.push(copy);
    }
    let out = Command::new("systemd-analyze").arg("verify").args(&paths).output().expect("run systemd-analyze (systemd is needed)");
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    // Unrelated units of this host may draw warnings; only ours count.
    let ours = |l: &&str| l.contains(SERVICE) || l.contains(SLICE) || l.contains("guard.slice") || l.contains(copies.0.to_str().unwrap());
    all.lines().filter(ours).map(str::to_owned).collect()
}

#[test]
fn verify_catches_a_broken_unit() {
    // The check above is only worth something if a bad unit makes it fail.
    let root = TempDir::new("broken");
    install(&root.0, "/usr/local");
    let unit = root.path("etc/systemd/system/guard-agent.service");
    let text = std::fs::read_to_string(&unit).unwrap().replace("Type=notify", "Type=notify\nWatchdogSecs=30s");
    std::fs::write(&unit, text).unwrap();
    let complaints = verify(&root.0, &[("etc/systemd/system", SERVICE)]);
    assert!(complaints.iter().any(|l| l.contains("WatchdogSecs")), "{complaints:?}");
}

#[test]
fn a_second_install_changes_nothing() {
    let root = TempDir::new("twice");
    let first = install(&root.0, "/usr/local");
    assert!(item_lines(&first).iter().all(|l| l.starts_with("installed ")), "{first}");
    let before = listing(&root.0);
    let second = install(&root.0, "/usr/local");
    let lines = item_lines(&second);
    assert_eq!(lines.len(), 9, "{second}");
    assert!(lines.iter().all(|l| l.starts_with("unchanged ")), "{second}");
    assert_eq!(listing(&root.0), before, "the second install changed modes, sizes or mtimes");
}

#[test]
fn uninstall_leaves_the_root_as_it_was_and_keeps_what_the_admin_changed() {
    let root = TempDir::new("uninstall");
    install(&root.0, "/usr/local");
    uninstall(&root.0, &[]);
    assert!(listing(&root.0).is_empty(), "left behind: {:?}", listing(&root.0).keys());

    // A directory that was there before install stays, even empty (with a new mtime: the binary
    // came and went).
    std::fs::create_dir_all(root.path("usr/local/bin")).unwrap();
    let modes = |root: &Path| listing(root).into_iter().map(|(p, (mode, ..))| (p, mode)).collect::<Vec<_>>();
    let before = modes(&root.0);
    install(&root.0, "/usr/local");
    uninstall(&root.0, &[]);
    assert_eq!(modes(&root.0), before);
    std::fs::remove_dir_all(root.path("usr")).unwrap();

    // An edited config and a verdict log survive uninstall; --purge removes them.
    install(&root.0, "/usr/local");
    std::fs::write(root.path("etc/guard/guard.yaml"), "policy: /srv/policy\n").unwrap();
    std::fs::write(root.path("var/log/guard/verdicts.jsonl"), "{}\n").unwrap();
    let out = uninstall(&root.0, &[]);
    assert!(out.lines().any(|l| l.starts_with("kept (modified by admin) ") && l.contains("etc/guard/guard.yaml")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("kept ") && l.contains("var/log/guard") && l.contains("evidence")), "{out}");
    assert_eq!(std::fs::read_to_string(root.path("etc/guard/guard.yaml")).unwrap(), "policy: /srv/policy\n");
    assert!(root.path("var/log/guard/verdicts.jsonl").exists() && !root.path("usr/local/bin/guard-agent").exists());
    uninstall(&root.0, &["--purge"]);
    assert!(listing(&root.0).is_empty(), "left behind after --purge: {:?}", listing(&root.0).keys());
}

#[test]
fn any_user_can_install_into_their_own_root_but_only_root_into_slash() {
    let root = TempDir::new("nobody");
    let as_user = |args: &[&str]| -> Output {
        let mut cmd = Command::new(agent_bin());
        cmd.args(args);
        if euid() == 0 {
            // std drops root's supplementary groups along with the uid.
            cmd.uid(NOBODY).gid(NOBODY);
        }
        cmd.output().unwrap()
    };
    if euid() == 0 {
        std::os::unix::fs::chown(&root.0, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let dir = root.0.to_str().unwrap();
    let out = as_user(&["install", "--root", dir]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = as_user(&["uninstall", "--root", dir, "--purge"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(listing(&root.0).is_empty());

    // Into the real / without root: refused up front, with what to do instead.
    for cmd in ["install", "uninstall"] {
        let out = as_user(&[cmd]);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains(&format!("needs root: run `sudo guard-agent {cmd}`")), "{}", text(&out.stderr));
    }
    // Bad arguments are errors, not panics.
    let out = as_user(&["install", "--root", dir, "--prefix", "relative"]);
    assert!(out.status.code() == Some(1) && text(&out.stderr).contains("--prefix must be an absolute directory"), "{out:?}");
}

/// Capability numbers (linux/capability.h) of the names a unit may grant.
fn cap_bit(name: &str) -> u32 {
    match name {
        "CAP_CHOWN" => 0,
        "CAP_DAC_OVERRIDE" => 1,
        "CAP_DAC_READ_SEARCH" => 2,
        "CAP_FOWNER" => 3,
        "CAP_KILL" => 5,
        "CAP_SETGID" => 6,
        "CAP_SETUID" => 7,
        "CAP_NET_ADMIN" => 12,
        "CAP_SYS_PTRACE" => 19,
        "CAP_SYS_ADMIN" => 21,
        "CAP_SYS_RESOURCE" => 24,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        other => panic!("{other}: add it to cap_bit"),
    }
}

/// A capability set from /proc/PID/status (`CapEff:` etc.).
fn proc_caps(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status.lines().find_map(|l| l.strip_prefix(field)).unwrap_or_else(|| panic!("no {field} for {pid}"));
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

#[test]
fn the_daemon_enforces_with_exactly_the_capabilities_the_unit_grants() {
    assert_eq!(euid(), 0, "this test starts the daemon: run it as root (cargo xtask test)");
    let root = TempDir::new("caps-root");
    install(&root.0, "/usr/local");
    let unit = std::fs::read_to_string(root.path("etc/systemd/system/guard-agent.service")).unwrap();
    let caps: Vec<&str> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet=")
        .split_whitespace()
        .collect();
    let mask = caps.iter().fold(0u64, |m, c| m | 1 << cap_bit(c));
    // As systemd starts it: root, with no capability outside the bounding set.
    let bounding = format!("--bounding-set=-all,{}", caps.iter().map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase())).collect::<Vec<_>>().join(","));
    let wrapper = ["setpriv", bounding.as_str(), "--inh-caps=-all", "--ambient-caps=-all", "--"];

    let _cleanup = DetachIfFailed;
    let dir = TempDir::new("caps");
    // `nobody` must reach the stand-in rm and write its marker.
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let rm = dir.path("bin/rm");
    std::fs::create_dir_all(rm.parent().unwrap()).unwrap();
    std::fs::copy(MARKER, &rm).unwrap();
    let rm = rm.to_str().unwrap().to_owned();

    // First daemon: leaves its enforcement pinned when it stops, as the service does.
    let daemon = Daemon::start_under(&dir, DEFAULT_POLICY, &wrapper, &["--launch-group", "nogroup"]);
    assert_eq!(proc_caps(daemon.pid(), "CapEff:"), mask, "the daemon runs with other capabilities than the unit's {caps:?}");
    assert_eq!(proc_caps(daemon.pid(), "CapBnd:"), mask);
    // CAP_CHOWN: the launch socket went to the launch group.
    let sock = std::fs::metadata("/run/guard/launch.sock").unwrap();
    assert_eq!((sock.gid(), sock.mode() & 0o777), (NOBODY, 0o660));
    let agent = unique("caps");
    killed_by_the_kernel(&daemon, &agent);
    killed_after_a_hold_as_nobody(&daemon, &agent, &dir, &rm);
    let status = ok(&["status"]);
    assert!(status.contains("enforcement: tracepoint tier"), "{status}");
    ok(&["reload"]);
    killed_by_the_kernel(&daemon, &agent);
    daemon.stop_keeping_pins();

    // Second daemon: adopts the pinned generation, enforces, and detaches on exit, all with the
    // same capabilities.
    let daemon = Daemon::start_under(&dir, DEFAULT_POLICY, &wrapper, &["--detach-on-exit"]);
    assert!(daemon.stderr_text().contains("adopted=true"), "{}", daemon.stderr_text());
    killed_by_the_kernel(&daemon, &agent);
    daemon.stop();

    // A condition on the working directory of another user's process: the daemon reads
    // /proc/PID/cwd (CAP_SYS_PTRACE), or the kernel's copy from exec time.
    let work = dir.path("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
    let policy = format!(
        "agents:\n  - name: cwd\n    match:\n      cgroup: guard/{agent}\n    exec:\n      deny:\n        - basename: rm\n          cwd_prefix: {}\n",
        work.display()
    );
    let daemon = Daemon::start_under(&dir, &policy, &wrapper, &["--detach-on-exit", "--launch-group", "nogroup"]);
    let marker = dir.path("marker-cwd");
    let out = launch_as_nobody(&agent, &[&rm, "x"], &work, &marker);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "rm in {}: {:?} {}", work.display(), out.status, text(&out.stderr));
    assert!(!marker.exists(), "the rm under the denied directory ran");
    // Elsewhere the same rm runs: the kill above was the cwd condition's doing.
    let out = launch_as_nobody(&agent, &[&rm, "x"], Path::new("/"), &marker);
    assert!(out.status.success() && marker.exists(), "rm outside the denied directory: {:?} {}", out.status, text(&out.stderr));
    daemon.stop();
}

/// The first daemon leaves its enforcement pinned on purpose; if the test fails before the
/// second one detaches it, this does, so no later test finds it.
struct DetachIfFailed;

impl Drop for DetachIfFailed {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        if Path::new(guard_tests::PIN_DIR).exists() {
            let out = agent_cmd(&["detach"]);
            eprintln!("cleanup: guard-agent detach: {}{}", text(&out.stdout), text(&out.stderr));
        }
        // A daemon that failed part-way leaves agent cgroups (emptied by the kill on timeout).
        remove_empty_dirs(&guard_tests::cgroup2_root().join("guard"));
    }
}

/// Removes `dir` and the directories below it, deepest first; ones still in use stay.
fn remove_empty_dirs(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_empty_dirs(&entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// `shred` (denied by name in the default policy) dies by SIGKILL at exec, with a verdict.
fn killed_by_the_kernel(daemon: &Daemon, agent: &str) {
    let (launcher, out) = launch(agent, &["shred", "--version"], &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "shred was not killed: {:?} {}", out.status, text(&out.stdout));
    let v = daemon.await_verdict("shred killed", 10, |v| {
        field(v, "/process/file/name") == "shred" && field(v, "/process/parent_process/pid") == launcher.to_string()
    });
    assert_eq!(field(&v, "/unmapped/verdict"), "killed");
}

/// A destructive `rm` (a stand-in that only writes a marker) launched by `nobody` is held at exec
/// and killed by the daemon: signalling another user's process needs CAP_KILL.
fn killed_after_a_hold_as_nobody(daemon: &Daemon, agent: &str, dir: &TempDir, rm: &str) {
    let marker = dir.path("marker-rm");
    let out = launch_as_nobody(agent, &[rm, "-rf", "--no-preserve-root", "/tmp/guard-caps-x"], Path::new("/"), &marker);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{:?} {}", out.status, text(&out.stderr));
    assert!(!marker.exists(), "the held rm ran");
    let v = daemon.await_verdict("nobody's rm killed", 10, |v| field(v, "/process/file/path") == rm && field(v, "/unmapped/verdict") == "killed");
    assert_eq!(field(&v, "/unmapped/session/user/uid"), NOBODY.to_string());
}

/// `guard-agent launch --agent AGENT -- CMD` as `nobody` in `cwd`, with `$GUARD_MARKER`. Bounded:
/// a held process the daemon cannot kill would otherwise keep the launcher waiting forever.
fn launch_as_nobody(agent: &str, cmd: &[&str], cwd: &Path, marker: &Path) -> Output {
    let mut child = Command::new(agent_bin())
        .args(["launch", "--agent", agent, "--"])
        .args(cmd)
        .env("GUARD_MARKER", marker)
        .current_dir(cwd)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            // Kill the workload (held, so stopped) and its launcher, so nothing outlives the test.
            let _ = std::fs::write(guard_tests::cgroup2_root().join("guard").join(agent).join("cgroup.kill"), "1");
            let _ = child.kill();
            panic!("`launch {cmd:?}` as nobody did not finish within 20 s: a held process was never killed (CAP_KILL?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}
