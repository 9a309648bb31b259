//! `cargo xtask deb`: a Debian package of guard-agent, and the checks `cargo xtask test` runs on
//! one.
//!
//! The package's files are laid out by `guard-agent install --root STAGE --prefix /usr` itself,
//! so there is one source of truth for where things go. The package ships no /var: postinst
//! makes /var/lib/guard and /var/log/guard (runtime state is not a packaged file; dpkg would
//! otherwise warn about every non-empty one at removal), and purge removes them.
use std::{
    fmt::Display,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

const PACKAGE: &str = "guard-agent";
/// The workspace version (xtask inherits it from [workspace.package]).
const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const DEFAULT_MAINTAINER: &str = "guard maintainers <guard-maintainers@localhost>";
const CONFFILES: [&str; 2] = ["/etc/guard/guard.yaml", "/etc/guard/policy.d/00-default.yaml"];
const UNIT_DIR: &str = "usr/lib/systemd/system";
const UNITS: [&str; 2] = ["guard-agent.service", "guard-agents.slice"];

/// Every file the package holds, with the mode `dpkg-deb -c` shows for it.
const FILES: [(&str, &str); 5] = [
    ("usr/bin/guard-agent", "-rwxr-xr-x"),
    ("usr/lib/systemd/system/guard-agent.service", "-rw-r--r--"),
    ("usr/lib/systemd/system/guard-agents.slice", "-rw-r--r--"),
    ("etc/guard/guard.yaml", "-rw-r--r--"),
    ("etc/guard/policy.d/00-default.yaml", "-rw-r--r--"),
];

const POSTINST: &str = r#"#!/bin/sh
# guard-agent postinst: makes the state and log directories and tells systemd about the unit.
# It never enables or starts guard: the policy decides what gets killed on this host, so an
# admin reviews it first.
set -e

if [ "$1" = configure ]; then
    # Daemon state (0700) and the verdict log (0750). The unit's StateDirectory= and
    # LogsDirectory= make them too; made here so a daemon started by hand finds them.
    install -d -m 0700 -o root -g root /var/lib/guard
    install -d -m 0750 -o root -g root /var/log/guard
    # The audit log's signing key: one per host, made here, never shipped in the package.
    if ! [ -e /var/lib/guard/audit.key ]; then
        /usr/bin/guard-agent audit keygen --out /var/lib/guard/audit.key
        echo "  keep a copy of that public key off this host: guard-agent audit verify --pubkey needs it"
    fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        # An upgrade restarts a running daemon on the new binary (enforcement stays pinned in
        # the kernel meanwhile; the new daemon takes it over). try-restart never starts a
        # stopped one.
        if [ -n "$2" ]; then
            systemctl try-restart guard-agent.service
        fi
    fi
    if ! [ -d /run/systemd/system ] || ! systemctl is-enabled --quiet guard-agent.service; then
        echo "guard-agent is installed, not enabled or started. Next:"
        echo "  1. review the policy in /etc/guard/policy.d/00-default.yaml: it decides what gets"
        echo "     killed on this host (check it: guard-agent policy check /etc/guard/policy.d)"
        echo "  2. systemctl enable --now guard-agent"
    fi
fi
exit 0
"#;

const PRERM: &str = r#"#!/bin/sh
# guard-agent prerm: on removal, stops guard and detaches its enforcement. An upgrade leaves it
# running (postinst restarts it on the new binary).
set -e

if [ "$1" = remove ]; then
    if [ -d /run/systemd/system ]; then
        systemctl disable --now guard-agent.service
    fi
    # A stopped daemon leaves its programs pinned and enforcing; a removed package must not
    # leave enforcement that no binary could detach. This fails, and so stops the removal,
    # while a daemon still runs outside systemd.
    if [ -d /sys/fs/bpf/guard ]; then
        /usr/bin/guard-agent detach
    fi
fi
exit 0
"#;

const POSTRM: &str = r#"#!/bin/sh
# guard-agent postrm.
#   remove: systemd forgets the unit. /var/lib/guard, /var/log/guard (verdict logs are evidence)
#           and configuration files stay.
#   purge:  they go too, as with `guard-agent uninstall --purge`: copy /var/log/guard first if
#           the verdicts may be needed.
set -e

case "$1" in
    remove)
        if [ -d /run/systemd/system ]; then
            systemctl daemon-reload
        fi
        ;;
    purge)
        rm -rf /var/lib/guard /var/log/guard
        # dpkg removed the configuration files it shipped; policies an admin added stay.
        rmdir /etc/guard/policy.d /etc/guard 2>/dev/null || true
        ;;
esac
exit 0
"#;

/// A directory under the system temp dir, removed with everything in it on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("guard-xtask-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // dpkg-deb wants 0755 package roots and control directories, whatever the umask.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).with_context(|| format!("chmod {}", dir.display()))?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `cmd`, returning its stdout; fails with its stderr.
fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `cargo xtask deb`: builds the package into `out` and returns its path.
pub fn build(root: &Path, binary: Option<&Path>, out: &Path, maintainer: &str) -> anyhow::Result<PathBuf> {
    let binary = match binary {
        Some(b) => b.canonicalize().with_context(|| format!("--binary {}", b.display()))?,
        None => {
            crate::cargo(root, &["build", "--release", "--package", PACKAGE]).context("building guard-agent (`cargo xtask setup` installs what the eBPF build needs)")?;
            root.join("target/release").join(PACKAGE)
        }
    };
    check_binary_version(&binary)?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?.trim().to_owned();
    let stage = Scratch::new("deb-stage")?;
    stage_files(&binary, stage.path())?;
    let depends = shlib_depends(&stage.path().join("usr/bin").join(PACKAGE))?;
    write_control(stage.path(), &arch, &depends, maintainer)?;
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let deb = out.join(format!("{PACKAGE}_{VERSION}_{arch}.deb"));
    output(Command::new("dpkg-deb").args(["--root-owner-group", "--build"]).arg(stage.path()).arg(&deb))?;
    Ok(deb)
}

/// The package's version is the workspace's; the binary must say the same.
fn check_binary_version(binary: &Path) -> anyhow::Result<()> {
    let said = output(Command::new(binary).arg("--version"))?;
    if said.trim() != format!("{PACKAGE} {VERSION}") {
        bail!("{} says `{}`, but the workspace version is {VERSION}: a binary from another build?", binary.display(), said.trim());
    }
    Ok(())
}

/// Lays the files out with the binary's own `install`, then keeps exactly the packaged files
/// (the state directories and install's own record are not package content).
fn stage_files(binary: &Path, stage: &Path) -> anyhow::Result<()> {
    output(Command::new(binary).args(["install", "--prefix", "/usr", "--root"]).arg(stage)).context("staging with `guard-agent install`")?;
    fs::remove_dir_all(stage.join("var")).context("removing the staged /var")?;
    let staged = files_below(stage)?;
    let expected: Vec<PathBuf> = FILES.iter().map(|(p, _)| PathBuf::from(p)).collect();
    if staged != expected {
        bail!("`guard-agent install` laid out {staged:?}, but the package expects {expected:?}: update FILES in xtask/src/deb.rs");
    }
    Ok(())
}

/// Regular files below `dir`, relative, in the order of [`FILES`] when they match it.
fn files_below(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(base, &path, out)?;
            } else {
                out.push(path.strip_prefix(base)?.to_path_buf());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    let rank = |p: &PathBuf| FILES.iter().position(|(f, _)| Path::new(f) == p).unwrap_or(usize::MAX);
    out.sort_by_key(|p| (rank(p), p.clone()));
    Ok(out)
}

/// What `dpkg-shlibdeps` says the binary needs (it wants a debian/control to exist, so it runs
/// in a scratch directory that has a minimal one).
fn shlib_depends(binary: &Path) -> anyhow::Result<String> {
    let scratch = Scratch::new("shlibdeps")?;
    fs::create_dir(scratch.path().join("debian"))?;
    fs::write(scratch.path().join("debian/control"), format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n"))?;
    let said = output(Command::new("dpkg-shlibdeps").args(["-O", "-e"]).arg(binary).current_dir(scratch.path()))?;
    let depends = said.lines().find_map(|l| l.strip_prefix("shlibs:Depends=")).context("dpkg-shlibdeps printed no shlibs:Depends")?;
    if !depends.contains("libc6") {
        bail!("dpkg-shlibdeps found no libc6 dependency in `{depends}`");
    }
    Ok(depends.to_owned())
}

fn write_control(stage: &Path, arch: &str, depends: &str, maintainer: &str) -> anyhow::Result<()> {
    let debian = stage.join("DEBIAN");
    fs::create_dir(&debian).context("creating DEBIAN")?;
    fs::set_permissions(&debian, fs::Permissions::from_mode(0o755))?;
    let installed_kib: u64 = FILES.iter().map(|(p, _)| fs::metadata(stage.join(p)).map(|m| m.len().div_ceil(1024))).sum::<Result<u64, _>>()?;
    let control = format!(
        "Package: {PACKAGE}\n\
         Version: {VERSION}\n\
         Architecture: {arch}\n\
         Maintainer: {maintainer}\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}\n\
         Section: admin\n\
         Priority: optional\n\
         Description: kernel-boundary enforcement for AI-agent workloads\n \
         guard stops destructive commands and forbidden connections of AI-agent\n \
         workloads at the kernel boundary (eBPF), and reports every decision as a\n \
         JSON verdict.\n \
         .\n \
         The guard-agent service is installed but neither enabled nor started:\n \
         review /etc/guard/policy.d/00-default.yaml, then run\n \
         `systemctl enable --now guard-agent`. Agent services run under\n \
         enforcement in guard-agents.slice.\n"
    );
    let conffiles: String = CONFFILES.iter().map(|c| format!("{c}\n")).collect();
    for (name, text, mode) in [("control", control.as_str(), 0o644), ("conffiles", &conffiles, 0o644), ("postinst", POSTINST, 0o755), ("prerm", PRERM, 0o755), ("postrm", POSTRM, 0o755)] {
        let path = debian.join(name);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Counts checks and collects every failure, so one run reports all that is wrong.
#[derive(Default)]
struct Checks {
    done: usize,
    failed: Vec<String>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: impl Display) {
        self.done += 1;
        if !ok {
            self.failed.push(what.to_string());
        }
    }

    fn finish(self, deb: &Path) -> anyhow::Result<usize> {
        if self.failed.is_empty() {
            return Ok(self.done);
        }
        bail!("{} of {} checks failed for {}:\n  {}", self.failed.len(), self.done, deb.display(), self.failed.join("\n  "));
    }
}

/// Checks a built package from the outside, as dpkg sees it. Returns how many checks passed.
pub fn check(deb: &Path) -> anyhow::Result<usize> {
    let mut c = Checks::default();
    check_contents(&mut c, deb)?;
    check_control(&mut c, deb)?;
    let root = Scratch::new("deb-extract")?;
    output(Command::new("dpkg").arg("-x").arg(deb).arg(root.path()))?;
    check_extracted(&mut c, root.path())?;
    let control = Scratch::new("deb-control")?;
    output(Command::new("dpkg-deb").arg("-e").arg(deb).arg(control.path().join("DEBIAN")))?;
    check_scripts(&mut c, &control.path().join("DEBIAN"))?;
    c.finish(deb)
}

/// `dpkg-deb -c`: each file with its mode, everything root-owned, no /var.
fn check_contents(c: &mut Checks, deb: &Path) -> anyhow::Result<()> {
    let listing = output(Command::new("dpkg-deb").arg("-c").arg(deb))?;
    // `-rwxr-xr-x root/root  89704552 2025-11-21 12:54 ./usr/bin/guard-agent`
    let entries: Vec<(&str, &str, &str)> = listing
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 6).then(|| (f[0], f[1], f[5]))
        })
        .collect();
    for (path, mode) in FILES {
        let found = entries.iter().find(|(_, _, p)| p.trim_start_matches("./") == path);
        c.check(found.is_some_and(|(m, o, _)| *m == mode && *o == "root/root"), format_args!("dpkg-deb -c: ./{path} {mode} root/root, got {found:?}"));
    }
    c.check(entries.iter().all(|(_, o, _)| *o == "root/root"), "dpkg-deb -c: every entry is root/root");
    c.check(!entries.iter().any(|(_, _, p)| p.starts_with("./var")), "dpkg-deb -c: no /var in the package (postinst makes it)");
    let files = entries.iter().filter(|(m, ..)| m.starts_with('-')).count();
    c.check(files == FILES.len(), format_args!("dpkg-deb -c: {} files, got {files}", FILES.len()));
    Ok(())
}

/// `dpkg-deb -I`: the control fields, the conffiles, executable maintainer scripts.
fn check_control(c: &mut Checks, deb: &Path) -> anyhow::Result<()> {
    let info = output(Command::new("dpkg-deb").arg("-I").arg(deb))?;
    let field = |name: &str| info.lines().find_map(|l| l.trim_start().strip_prefix(&format!("{name}: "))).map(str::to_owned);
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?.trim().to_owned();
    for (name, want) in [("Package", PACKAGE), ("Version", VERSION), ("Architecture", arch.as_str()), ("Section", "admin"), ("Priority", "optional")] {
        let got = field(name);
        c.check(got.as_deref() == Some(want), format_args!("dpkg-deb -I: {name}: {want}, got {got:?}"));
    }
    for name in ["Maintainer", "Description", "Installed-Size"] {
        c.check(field(name).is_some_and(|v| !v.is_empty()), format_args!("dpkg-deb -I: {name} is set"));
    }
    let depends = field("Depends").unwrap_or_default();
    c.check(depends.split(", ").any(|d| d.starts_with("libc6")), format_args!("dpkg-deb -I: Depends on libc6, got `{depends}`"));
    // The Kafka sink links the system's librdkafka (rdkafka's `dynamic-linking`).
    c.check(depends.split(", ").any(|d| d.starts_with("librdkafka1")), format_args!("dpkg-deb -I: Depends on librdkafka1, got `{depends}`"));
    for script in ["postinst", "prerm", "postrm"] {
        // `  1234 bytes,    40 lines   *  postinst             #!/bin/sh` (`*`: executable)
        let executable = info.lines().any(|l| l.split_whitespace().collect::<Vec<_>>().windows(2).any(|w| w == ["*", script]));
        c.check(executable, format_args!("dpkg-deb -I: {script} is present and executable"));
    }
    let conffiles = output(Command::new("dpkg-deb").arg("-I").arg(deb).arg("conffiles"))?;
    c.check(conffiles.lines().eq(CONFFILES), format_args!("conffiles: {CONFFILES:?}, got {conffiles:?}"));
    Ok(())
}

/// `dpkg -x`: the modes on disk, a binary that runs, units `systemd-analyze verify` accepts.
fn check_extracted(c: &mut Checks, root: &Path) -> anyhow::Result<()> {
    for (path, mode) in FILES {
        let want = if mode == "-rwxr-xr-x" { 0o755 } else { 0o644 };
        let got = fs::metadata(root.join(path)).map(|m| m.permissions().mode() & 0o7777).ok();
        c.check(got == Some(want), format_args!("dpkg -x: {path} has mode {want:o}, got {got:?}"));
    }
    let bin = root.join("usr/bin").join(PACKAGE);
    let version = Command::new(&bin).arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    c.check(version.as_deref().ok() == Some(&format!("{PACKAGE} {VERSION}")), format_args!("the extracted binary runs: {version:?}"));
    let unit = fs::read_to_string(root.join(UNIT_DIR).join(UNITS[0])).unwrap_or_default();
    c.check(unit.lines().any(|l| l == "ExecStart=/usr/bin/guard-agent daemon --config /etc/guard/guard.yaml"), "the unit runs /usr/bin/guard-agent with /etc/guard/guard.yaml");
    let complaints = verify_units(root)?;
    c.check(complaints.is_empty(), format_args!("systemd-analyze verify: {complaints:?}"));
    Ok(())
}

/// `systemd-analyze verify` of the extracted units: its lines about them. `--root=` does not
/// work for this (systemd 252 then looks for sysinit.target and the other default dependencies
/// inside the root, which has none), so copies are verified by path against this host's units,
/// with ExecStart= naming the extracted binary (verify checks that it is executable).
fn verify_units(root: &Path) -> anyhow::Result<Vec<String>> {
    let copies = Scratch::new("deb-verify")?;
    let mut paths = Vec::new();
    for unit in UNITS {
        let text = fs::read_to_string(root.join(UNIT_DIR).join(unit)).with_context(|| format!("reading the extracted {unit}"))?;
        let copy = copies.path().join(unit);
        fs::write(&copy, text.replace("ExecStart=/", &format!("ExecStart={}/", root.display())))?;
        paths.push(copy);
    }
    let out = Command::new("systemd-analyze").arg("verify").args(&paths).output().context("running systemd-analyze verify")?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // This host's other units may draw warnings of their own; only ours count.
    let ours = |l: &&str| UNITS.iter().any(|u| l.contains(u)) || l.contains("guard.slice") || l.contains(&*copies.path().to_string_lossy());
    Ok(text.lines().filter(ours).map(str::to_owned).collect())
}

/// The maintainer scripts parse, and postinst never enables or starts guard: outside `echo`
/// lines, systemctl is only asked to reload units, restart a daemon that already runs, or say
/// whether it is enabled.
fn check_scripts(c: &mut Checks, control: &Path) -> anyhow::Result<()> {
    for script in ["postinst", "prerm", "postrm"] {
        let parses = Command::new("sh").arg("-n").arg(control.join(script)).status().is_ok_and(|s| s.success());
        c.check(parses, format_args!("{script} is valid sh (sh -n)"));
    }
    let postinst = fs::read_to_string(control.join("postinst")).context("reading the extracted postinst")?;
    let commands: Vec<&str> = postinst.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.starts_with("echo ")).collect();
    let verbs: Vec<&str> = commands.iter().flat_map(|l| systemctl_verbs(l)).collect();
    let allowed = ["daemon-reload", "try-restart", "is-enabled"];
    c.check(verbs.iter().all(|v| allowed.contains(v)), format_args!("postinst runs systemctl only for {allowed:?}, got {verbs:?}"));
    let starters = ["deb-systemd-invoke", "deb-systemd-helper", "invoke-rc.d", "service"];
    c.check(!commands.iter().any(|l| l.split_whitespace().any(|w| starters.contains(&w))), "postinst uses no other way to start a service");
    c.check(postinst.lines().any(|l| l.trim().starts_with("echo ") && l.contains("systemctl enable --now guard-agent")), "postinst tells the admin how to start guard");
    let prerm = fs::read_to_string(control.join("prerm")).context("reading the extracted prerm")?;
    c.check(prerm.contains("systemctl disable --now guard-agent.service") && prerm.contains("guard-agent detach"), "prerm stops guard and detaches its enforcement on removal");
    Ok(())
}

/// The verbs of every `systemctl` call in a shell line (`systemctl --quiet is-enabled x`).
fn systemctl_verbs(line: &str) -> Vec<&str> {
    let words: Vec<&str> = line.split(|c: char| c.is_whitespace() || c == ';' || c == '(').filter(|w| !w.is_empty()).collect();
    words
        .iter()
        .enumerate()
        .filter(|(_, w)| **w == "systemctl")
        .filter_map(|(i, _)| words[i + 1..].iter().find(|w| !w.starts_with('-')).copied())
        .collect()
}

/// `cargo xtask test`'s package step: builds a .deb from `binary` into a scratch directory and
/// checks it. Returns how many checks passed.
pub fn build_and_check(root: &Path, binary: &Path) -> anyhow::Result<usize> {
    let out = Scratch::new("deb-out")?;
    let deb = build(root, Some(binary), out.path(), DEFAULT_MAINTAINER)?;
    check(&deb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemctl_verbs_skip_options_and_find_every_call() {
        assert_eq!(systemctl_verbs("systemctl daemon-reload"), ["daemon-reload"]);
        assert_eq!(systemctl_verbs("if ! systemctl --quiet is-enabled x; then systemctl start x; fi"), ["is-enabled", "start"]);
        assert!(systemctl_verbs("install -d /var/lib/guard").is_empty());
    }

    /// The checks are worth something only if a bad package fails them: one that enables the
    /// service, has a config with the wrong mode, a unit that ignores the installed config, and
    /// does not depend on librdkafka1.
    #[test]
    fn check_reports_everything_wrong_with_a_bad_package() {
        let stage = Scratch::new("bad-stage").unwrap();
        for (path, _) in FILES {
            let file = stage.path().join(path);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            let text = match path {
                "usr/bin/guard-agent" => format!("#!/bin/sh\necho '{PACKAGE} {VERSION}'\n"),
                p if p.ends_with(".service") => "[Service]\nExecStart=/usr/bin/guard-agent daemon\n".to_owned(),
                p if p.ends_with(".slice") => "[Slice]\n".to_owned(),
                _ => "x: 1\n".to_owned(),
            };
            fs::write(&file, text).unwrap();
            let mode = if path.ends_with("guard.yaml") { 0o600 } else if path.contains("/bin/") { 0o755 } else { 0o644 };
            fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
        }
        for dir in ["etc", "etc/guard", "etc/guard/policy.d", "usr", "usr/bin", "usr/lib", "usr/lib/systemd", UNIT_DIR] {
            fs::set_permissions(stage.path().join(dir), fs::Permissions::from_mode(0o755)).unwrap();
        }
        write_control(stage.path(), "all", "libc6", DEFAULT_MAINTAINER).unwrap();
        let postinst = stage.path().join("DEBIAN/postinst");
        fs::write(&postinst, POSTINST.replace("systemctl daemon-reload", "systemctl daemon-reload\n        systemctl enable guard-agent.service")).unwrap();
        let out = Scratch::new("bad-out").unwrap();
        let deb = out.path().join("bad.deb");
        output(Command::new("dpkg-deb").args(["--root-owner-group", "--build"]).arg(stage.path()).arg(&deb)).unwrap();

        let err = format!("{:#}", check(&deb).unwrap_err());
        for wanted in [
            "./etc/guard/guard.yaml -rw-r--r-- root/root",
            "dpkg -x: etc/guard/guard.yaml has mode 644",
            "Architecture: ",
            "the unit runs /usr/bin/guard-agent with /etc/guard/guard.yaml",
            "postinst runs systemctl only for",
            "Depends on librdkafka1, got `libc6`",
        ] {
            assert!(err.contains(wanted), "no `{wanted}` in:\n{err}");
        }
        assert!(err.starts_with("6 of "), "{err}");
    }

    #[test]
    fn postinst_never_enables_or_starts() {
        let commands = POSTINST.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.starts_with("echo "));
        let verbs: Vec<&str> = commands.flat_map(systemctl_verbs).collect();
        assert_eq!(verbs, ["daemon-reload", "try-restart", "is-enabled"]);
    }
}
