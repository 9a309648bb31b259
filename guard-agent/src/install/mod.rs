//! `guard-agent install` / `uninstall`: puts this binary, its systemd units and the default
//! configuration in place, or takes them away.
//!
//! One layout serves every use, so there is one source of truth for where things go: a host
//! install (root `/`, prefix `/usr/local`, units in /etc/systemd/system, where the admin's units
//! live), the .deb (`--root STAGE --prefix /usr`, units in /usr/lib/systemd/system, where
//! packages put theirs) and tests (`--root` a scratch directory, as any user).
//!
//! Install is idempotent: what is already right is not rewritten (mtimes stay). Configuration
//! files become the admin's once installed, as dpkg conffiles do: a changed one is kept by
//! install and by uninstall (unless `--purge`). What install created is recorded (see
//! [`state`]), so uninstall removes exactly that and leaves pre-existing directories alone.
mod fsops;
mod state;
mod systemd;
mod uninstall;

pub use uninstall::uninstall;

use std::{
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use fsops::Change;
use state::State;

/// The service unit, with `@BINARY@` where the installed binary's path goes.
const SERVICE_TEMPLATE: &str = include_str!("guard-agent.service");
const SLICE_TEXT: &str = include_str!("guard-agents.slice");
const CONFIG_TEXT: &str = crate::config::DEFAULT_CONFIG;
const POLICY_TEXT: &str = crate::policy::DEFAULT_POLICY;

pub const SERVICE: &str = "guard-agent.service";
pub const SLICE: &str = "guard-agents.slice";
const CONFIG_DIR: &str = "/etc/guard";
const POLICY_DIR: &str = "/etc/guard/policy.d";
const CONFIG_FILE: &str = crate::config::DEFAULT_CONFIG_PATH;
const POLICY_FILE: &str = "/etc/guard/policy.d/00-default.yaml";
/// Daemon state: spool, keys, and install's own record.
const STATE_DIR: &str = "/var/lib/guard";
/// The verdict log.
const LOG_DIR: &str = "/var/log/guard";
const STATE_FILE: &str = "/var/lib/guard/install-state";
/// The audit log's checkpoint signing key (see `config/guard.yaml`).
const AUDIT_KEY: &str = "/var/lib/guard/audit.key";

/// Where things go: the target system's root directory and the binary's prefix there.
#[derive(Debug)]
pub struct Layout {
    root: PathBuf,
    prefix: PathBuf,
}

impl Layout {
    pub fn new(root: &Path, prefix: &Path) -> anyhow::Result<Self> {
        let text = prefix.to_str().context("--prefix must be UTF-8 (it is written into the unit)")?;
        let prefix = state::target_path(text).context("--prefix must be an absolute directory below /, like /usr/local")?;
        // `/usr/` and `/usr` are one prefix (and ExecStart= gets no `//`).
        let prefix: PathBuf = prefix.components().collect();
        // ExecStart= splits on whitespace and expands `%` and `$`: keep the path literal.
        if let Some(c) = text.chars().find(|c| c.is_whitespace() || "%$\\\"'".contains(*c)) {
            bail!("--prefix {text}: `{c}` cannot be written into ExecStart= as is; choose another prefix");
        }
        let root = root.canonicalize().with_context(|| format!("--root {}: no such directory", root.display()))?;
        if !root.is_dir() {
            bail!("--root {} is not a directory", root.display());
        }
        Ok(Self { root, prefix })
    }

    /// Installing into this machine's own `/` (systemd is told, and root is needed).
    pub fn on_host(&self) -> bool {
        self.root == Path::new("/")
    }

    /// A path of the target system (`/etc/guard`), as seen from here (`ROOT/etc/guard`).
    fn at(&self, target: &str) -> PathBuf {
        self.root.join(target.trim_start_matches('/'))
    }

    /// The inverse of [`Layout::at`].
    fn in_target(&self, here: &Path) -> PathBuf {
        Path::new("/").join(here.strip_prefix(&self.root).unwrap_or(here))
    }

    pub fn binary(&self) -> String {
        format!("{}/bin/guard-agent", self.prefix.display())
    }

    /// Packages put units in /usr/lib/systemd/system; anything installed by hand belongs in
    /// /etc/systemd/system.
    fn unit_dir(&self) -> &'static str {
        if self.prefix == Path::new("/usr") { "/usr/lib/systemd/system" } else { "/etc/systemd/system" }
    }

    fn check_privilege(&self, what: &str) -> anyhow::Result<()> {
        // SAFETY: geteuid has no preconditions.
        if self.on_host() && unsafe { libc::geteuid() } != 0 {
            bail!("{what} writes to / and needs root: run `sudo guard-agent {what}`, or give --root DIR to use another directory");
        }
        Ok(())
    }
}

/// The service unit for this layout.
pub fn service_text(layout: &Layout) -> String {
    SERVICE_TEMPLATE.replace("@BINARY@", &layout.binary())
}

enum Kind {
    Dir,
    /// This program's own binary.
    Binary,
    /// Rewritten on every install: ours, not the admin's.
    Unit(String),
    /// The admin's once installed.
    Conffile(&'static str),
}

/// One thing install puts in place, as a path in the target system.
struct Item {
    path: String,
    mode: u32,
    kind: Kind,
}

/// Everything install puts in place, in order: the state directory first (install's record goes
/// there), and directories before what they hold.
fn items(layout: &Layout) -> Vec<Item> {
    let unit_dir = layout.unit_dir();
    let item = |path: &str, mode, kind| Item { path: path.to_owned(), mode, kind };
    vec![
        item(STATE_DIR, 0o700, Kind::Dir),
        item(LOG_DIR, 0o750, Kind::Dir),
        item(CONFIG_DIR, 0o755, Kind::Dir),
        item(POLICY_DIR, 0o755, Kind::Dir),
        item(&layout.binary(), 0o755, Kind::Binary),
        item(&format!("{unit_dir}/{SERVICE}"), 0o644, Kind::Unit(service_text(layout))),
        item(&format!("{unit_dir}/{SLICE}"), 0o644, Kind::Unit(SLICE_TEXT.to_owned())),
        item(CONFIG_FILE, 0o644, Kind::Conffile(CONFIG_TEXT)),
        item(POLICY_FILE, 0o644, Kind::Conffile(POLICY_TEXT)),
    ]
}

/// What happened to one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Installed,
    Updated,
    Unchanged,
    /// A configuration file that differs from what install wrote.
    KeptModified,
    Removed,
    Absent,
    /// A directory that still holds something.
    Kept,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Installed => "installed",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
            Self::KeptModified => "kept (modified by admin)",
            Self::Removed => "removed",
            Self::Absent => "absent",
            Self::Kept => "kept",
        })
    }
}

impl From<Change> for Status {
    fn from(c: Change) -> Self {
        match c {
            Change::Created => Self::Installed,
            Change::Updated => Self::Updated,
            Change::Unchanged => Self::Unchanged,
        }
    }
}

/// One line per item, printed as it happens (so a failure part-way still shows what was done),
/// and kept for the tests.
pub struct Report {
    pub lines: Vec<(Status, PathBuf)>,
    print: bool,
}

impl Report {
    pub fn printing() -> Self {
        Self { lines: Vec::new(), print: true }
    }

    #[cfg(test)]
    fn quiet() -> Self {
        Self { lines: Vec::new(), print: false }
    }

    fn add(&mut self, status: Status, path: &Path, hint: Option<String>) {
        if self.print {
            let hint = hint.map(|h| format!(": {h}")).unwrap_or_default();
            println!("{status:<10} {}{hint}", path.display());
        }
        self.lines.push((status, path.to_path_buf()));
    }

    fn say(&self, text: &str) {
        if self.print {
            println!("{text}");
        }
    }
}

/// `guard-agent install`.
pub fn install(layout: &Layout, report: &mut Report) -> anyhow::Result<()> {
    layout.check_privilege("install")?;
    let state_file = layout.at(STATE_FILE);
    let before = State::read(&state_file)?;
    let mut state = before.clone();
    let done = items(layout).iter().try_for_each(|item| install_item(layout, item, &mut state, report));
    // Recorded even when a step failed, so uninstall still removes what was made.
    if state != before && state_file.parent().is_some_and(Path::is_dir) {
        state.write(&state_file)?;
    }
    done?;
    if layout.on_host() {
        audit_key(report)?;
    }
    if layout.on_host() && systemd::running() {
        systemd::systemctl(&["daemon-reload"])?;
        report.say("systemd: reloaded units");
    }
    Ok(())
}

/// The audit log's signing key, made once per host (never in a staging tree: a package must
/// not ship one key to every host). Its public key is printed: keep it off this host, it is
/// what proves the log unaltered (`guard-agent audit verify --pubkey`).
fn audit_key(report: &Report) -> anyhow::Result<()> {
    let key = std::path::Path::new(AUDIT_KEY);
    if key.exists() {
        report.say(&format!("audit key: {AUDIT_KEY} exists, kept (public key in {AUDIT_KEY}.pub)"));
        return Ok(());
    }
    let public = crate::audit::create_key(key)?;
    report.say(&format!("audit key: created {AUDIT_KEY}; public key (keep a copy elsewhere): {public}"));
    Ok(())
}

fn install_item(layout: &Layout, item: &Item, state: &mut State, report: &mut Report) -> anyhow::Result<()> {
    let path = layout.at(&item.path);
    let status = match &item.kind {
        Kind::Dir => make_dir(layout, &path, item.mode, state)?.into(),
        Kind::Binary => {
            make_parent(layout, &path, state)?;
            fsops::put_file(&path, &own_binary()?, item.mode)?.into()
        }
        Kind::Unit(text) => {
            make_parent(layout, &path, state)?;
            fsops::put_file(&path, text.as_bytes(), item.mode)?.into()
        }
        Kind::Conffile(text) => {
            make_parent(layout, &path, state)?;
            install_conffile(&path, &item.path, text.as_bytes(), item.mode, state)?
        }
    };
    let hint = (status == Status::KeptModified).then(|| "the new default was not installed over it".to_owned());
    report.add(status, &path, hint);
    Ok(())
}

/// One of guard's directories (it gets `mode` even if it exists), recording what it creates.
fn make_dir(layout: &Layout, dir: &Path, mode: u32, state: &mut State) -> anyhow::Result<Change> {
    fsops::ensure_dir(&layout.root, dir, mode, &mut |made| {
        state.dirs.insert(layout.in_target(made));
    })
}

/// The directory a file goes in; an existing one (e.g. /usr/local/bin) is not touched.
fn make_parent(layout: &Layout, file: &Path, state: &mut State) -> anyhow::Result<()> {
    let parent = file.parent().with_context(|| format!("{} has no parent", file.display()))?;
    if !parent.is_dir() {
        make_dir(layout, parent, 0o755, state)?;
    }
    Ok(())
}

/// This program's binary, read through /proc/self/exe: that works even when the file it was
/// started from has since been replaced or deleted (an upgrade in progress).
fn own_binary() -> anyhow::Result<Vec<u8>> {
    std::fs::read("/proc/self/exe").context("reading this program's binary (/proc/self/exe) to copy it")
}

/// A configuration file is written when missing, and replaced only if it is the unmodified
/// default of an earlier install; a file the admin changed is kept.
fn install_conffile(path: &Path, target: &str, new: &[u8], mode: u32, state: &mut State) -> anyhow::Result<Status> {
    let status = match fsops::read_if_exists(path)? {
        None => {
            fsops::write_atomic(path, new, mode)?;
            Status::Installed
        }
        Some(old) if old == new => Status::Unchanged,
        Some(old) if state.untouched(Path::new(target), &old) => {
            fsops::write_atomic(path, new, mode)?;
            Status::Updated
        }
        Some(_) => return Ok(Status::KeptModified),
    };
    state.conffiles.insert(target.into(), state::sha256(new));
    Ok(status)
}

/// What to do after an install.
pub fn next_steps(layout: &Layout) -> String {
    if !layout.on_host() {
        return format!("staged under {}: systemd was not told, nothing was started.\n", layout.root.display());
    }
    let start = if systemd::running() {
        format!("systemctl enable --now {SERVICE}")
    } else {
        format!("systemd is not running here; start it by hand: {} daemon --config {CONFIG_FILE}", layout.binary())
    };
    format!(
        "\nguard is installed, not enabled or started. Next:\n  \
         1. review the policy in {POLICY_FILE}: it decides what gets killed on this host\n     \
            (check it: guard-agent policy check {POLICY_DIR})\n  \
         2. {start}\n\
         Agent services run under enforcement in {SLICE} (Slice={SLICE} in a drop-in, or\n\
         systemd-run --slice={SLICE} ...).\n"
    )
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, fs, os::unix::fs::MetadataExt as _};

    use super::*;

    /// A scratch root, removed on drop.
    struct Root(PathBuf);

    impl Root {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("guard-install-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn layout(&self, prefix: &str) -> Layout {
            Layout::new(&self.0, Path::new(prefix)).unwrap()
        }

        fn path(&self, target: &str) -> PathBuf {
            self.0.join(target.trim_start_matches('/'))
        }

        /// Every path below the root with its mode, size and mtime.
        fn listing(&self) -> BTreeMap<PathBuf, (u32, u64, i64, i64)> {
            fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, (u32, u64, i64, i64)>) {
                for e in fs::read_dir(dir).unwrap() {
                    let p = e.unwrap().path();
                    let m = fs::symlink_metadata(&p).unwrap();
                    out.insert(p.clone(), (m.mode(), m.size(), m.mtime(), m.mtime_nsec()));
                    if m.is_dir() {
                        walk(&p, out);
                    }
                }
            }
            let mut out = BTreeMap::new();
            walk(&self.0, &mut out);
            out
        }
    }

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn install_quiet(layout: &Layout) -> Vec<(Status, PathBuf)> {
        let mut r = Report::quiet();
        install(layout, &mut r).unwrap();
        r.lines
    }

    fn uninstall_quiet(layout: &Layout, purge: bool) -> Vec<(Status, PathBuf)> {
        let mut r = Report::quiet();
        uninstall(layout, purge, &mut r).unwrap();
        r.lines
    }

    fn status_of(lines: &[(Status, PathBuf)], path: &Path) -> Status {
        lines.iter().find(|(_, p)| p == path).unwrap_or_else(|| panic!("no line for {}: {lines:?}", path.display())).0
    }

    #[test]
    fn the_prefix_decides_where_units_go_and_bad_arguments_are_refused() {
        let root = Root::new("layout");
        assert_eq!(root.layout("/usr").unit_dir(), "/usr/lib/systemd/system");
        assert_eq!(root.layout("/usr/local").unit_dir(), "/etc/systemd/system");
        assert_eq!(root.layout("/usr/").unit_dir(), "/usr/lib/systemd/system");
        assert_eq!(root.layout("/usr/").binary(), "/usr/bin/guard-agent");
        assert_eq!(root.layout("/usr/").unit_dir(), "/usr/lib/systemd/system");
        assert_eq!(root.layout("/opt/guard").binary(), "/opt/guard/bin/guard-agent");
        for (prefix, why) in [("usr/local", "absolute directory"), ("/usr/../tmp", "absolute directory"), ("/", "absolute directory"), ("/opt/my guard", "ExecStart"), ("/opt/%h", "ExecStart")] {
            let err = format!("{:#}", Layout::new(&root.0, Path::new(prefix)).unwrap_err());
            assert!(err.contains(why), "{prefix}: {err}");
        }
        let err = format!("{:#}", Layout::new(&root.path("missing"), Path::new("/usr")).unwrap_err());
        assert!(err.contains("no such directory"), "{err}");
    }

    #[test]
    fn the_unit_runs_the_installed_binary_with_the_installed_config() {
        let root = Root::new("unit");
        let text = service_text(&root.layout("/usr"));
        assert!(!text.contains('@'), "a placeholder is left: {text}");
        let exec: Vec<&str> = text.lines().filter(|l| l.starts_with("ExecStart=")).collect();
        assert_eq!(exec, [format!("ExecStart=/usr/bin/guard-agent daemon --config {CONFIG_FILE}")]);
        for line in ["Type=notify", "NotifyAccess=main", "WatchdogSec=30s", "Restart=always", "NoNewPrivileges=yes", "ProtectSystem=strict"] {
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
        // Both would make enforcement impossible (read-only cgroupfs / bpffs).
        assert!(!text.lines().any(|l| l.starts_with("ProtectControlGroups=") || l.starts_with("ProtectKernelTunables=")));
    }

    #[test]
    fn install_is_idempotent_and_keeps_a_modified_config() {
        let root = Root::new("idem");
        let layout = root.layout("/usr/local");
        let first = install_quiet(&layout);
        assert!(first.iter().all(|(s, _)| *s == Status::Installed), "{first:?}");
        assert_eq!(first.len(), 9);
        assert_eq!(fs::read_to_string(root.path(CONFIG_FILE)).unwrap(), CONFIG_TEXT);
        assert_eq!(fs::read(root.path("/usr/local/bin/guard-agent")).unwrap(), own_binary().unwrap());
        let before = root.listing();
        let second = install_quiet(&layout);
        assert!(second.iter().all(|(s, _)| *s == Status::Unchanged), "{second:?}");
        assert_eq!(root.listing(), before, "a second install changed something");

        fs::write(root.path(CONFIG_FILE), "policy: /srv/mine\n").unwrap();
        let third = install_quiet(&layout);
        assert_eq!(status_of(&third, &root.path(CONFIG_FILE)), Status::KeptModified);
        assert_eq!(fs::read_to_string(root.path(CONFIG_FILE)).unwrap(), "policy: /srv/mine\n");
    }

    #[test]
    fn an_untouched_old_default_is_updated_but_an_edited_one_is_not() {
        let root = Root::new("upgrade");
        let layout = root.layout("/usr/local");
        install_quiet(&layout);
        // As if an earlier version had installed another default, unmodified since.
        let old = "# an older default\n";
        fs::write(root.path(POLICY_FILE), old).unwrap();
        let mut state = State::read(&root.path(STATE_FILE)).unwrap();
        state.conffiles.insert(POLICY_FILE.into(), state::sha256(old.as_bytes()));
        state.write(&root.path(STATE_FILE)).unwrap();
        let lines = install_quiet(&layout);
        assert_eq!(status_of(&lines, &root.path(POLICY_FILE)), Status::Updated);
        assert_eq!(fs::read_to_string(root.path(POLICY_FILE)).unwrap(), POLICY_TEXT);
    }

    #[test]
    fn uninstall_leaves_nothing_it_made_and_nothing_it_did_not_make_is_removed() {
        let root = Root::new("uninstall");
        // A parent that was there before install must survive, even empty.
        fs::create_dir_all(root.path("/usr/local/bin")).unwrap();
        let layout = root.layout("/usr/local");
        install_quiet(&layout);
        let lines = uninstall_quiet(&layout, false);
        assert_eq!(status_of(&lines, &root.path(LOG_DIR)), Status::Removed);
        let left: Vec<_> = root.listing().into_keys().collect();
        assert_eq!(left, [root.path("/usr"), root.path("/usr/local"), root.path("/usr/local/bin")]);
        // Uninstalling again finds nothing and fails on nothing.
        let again = uninstall_quiet(&layout, false);
        assert!(again.iter().all(|(s, _)| *s == Status::Absent), "{again:?}");
    }

    #[test]
    fn modified_config_and_logs_stay_without_purge_and_go_with_it() {
        let root = Root::new("purge");
        let layout = root.layout("/usr");
        install_quiet(&layout);
        fs::write(root.path(CONFIG_FILE), "policy: /srv/mine\n").unwrap();
        fs::write(root.path("/var/log/guard/verdicts.jsonl"), "{}\n").unwrap();
        let lines = uninstall_quiet(&layout, false);
        assert_eq!(status_of(&lines, &root.path(CONFIG_FILE)), Status::KeptModified);
        assert_eq!(status_of(&lines, &root.path(POLICY_FILE)), Status::Removed);
        assert_eq!(status_of(&lines, &root.path(LOG_DIR)), Status::Kept);
        assert!(root.path(CONFIG_FILE).exists() && root.path("/var/log/guard/verdicts.jsonl").exists());
        assert!(!root.path("/usr/bin/guard-agent").exists());
        // What install made stays recorded while something of guard's stays...
        assert_eq!(status_of(&lines, &root.path(STATE_DIR)), Status::Kept);
        let lines = uninstall_quiet(&layout, true);
        assert_eq!(status_of(&lines, &root.path(CONFIG_FILE)), Status::Removed);
        assert_eq!(status_of(&lines, &root.path(LOG_DIR)), Status::Removed);
        // ...so the purge removes every directory install made, and nothing is left.
        assert!(root.listing().is_empty(), "left: {:?}", root.listing().keys());
    }

    #[test]
    fn kept_state_is_recorded_so_a_later_purge_removes_every_parent_made() {
        let root = Root::new("state");
        let layout = root.layout("/usr/local");
        install_quiet(&layout);
        fs::write(root.path("/var/lib/guard/spool"), "x").unwrap();
        let lines = uninstall_quiet(&layout, false);
        assert_eq!(status_of(&lines, &root.path(STATE_DIR)), Status::Kept);
        assert!(root.path(STATE_FILE).exists(), "the record of what install made was lost");
        uninstall_quiet(&layout, true);
        assert!(root.listing().is_empty(), "left: {:?}", root.listing().keys());
    }

    #[test]
    fn a_file_where_a_directory_belongs_is_a_clear_error() {
        let root = Root::new("blocked");
        fs::create_dir_all(root.path("/etc")).unwrap();
        fs::write(root.path(CONFIG_DIR), "not a directory").unwrap();
        let err = install(&root.layout("/usr/local"), &mut Report::quiet()).unwrap_err();
        assert!(format!("{err:#}").contains("/etc/guard exists and is not a directory"), "{err:#}");
        // What it made before failing is recorded and goes with uninstall.
        fs::remove_file(root.path(CONFIG_DIR)).unwrap();
        uninstall_quiet(&root.layout("/usr/local"), false);
        let left: Vec<_> = root.listing().into_keys().collect();
        assert_eq!(left, [root.path("/etc")]);
    }

    #[test]
    fn links_below_a_root_are_refused_and_directories_that_were_there_are_kept() {
        let root = Root::new("links");
        let elsewhere = Root::new("links-target");
        fs::create_dir_all(root.path("/var/lib")).unwrap();
        std::os::unix::fs::symlink(&elsewhere.0, root.path("/var/lib/guard")).unwrap();
        let mut r = Report::quiet();
        let err = install(&root.layout("/usr/local"), &mut r).unwrap_err();
        assert!(format!("{err:#}").contains("is a symbolic link"), "{err:#}");
        assert_eq!(fs::read_dir(&elsewhere.0).unwrap().count(), 0, "install wrote through the link");

        let root = Root::new("preexisting");
        fs::create_dir_all(root.path("/var/log/guard")).unwrap();
        fs::write(root.path("/var/log/guard/old.jsonl"), "{}\n").unwrap();
        let layout = root.layout("/usr/local");
        install_quiet(&layout);
        let lines = uninstall_quiet(&layout, true);
        assert_eq!(status_of(&lines, &root.path("/var/log/guard")), Status::Kept, "{lines:?}");
        assert!(root.path("/var/log/guard/old.jsonl").exists(), "--purge removed a directory install did not make");
    }
}
