//! Policy: YAML -> validated model ([`parse`]) -> kernel map entries ([`compile`]).
pub mod compile;
pub mod delete_budget;
pub mod eval;
pub mod exfil;
pub mod files;
pub mod lint;
pub mod network;
pub mod parse;
pub mod source;
pub mod yaml;

use std::{fmt, net::IpAddr, path::Path, time::Duration};

use sha2::{Digest as _, Sha256};

pub use yaml::Pos;

/// The policy built into the binary, used when the daemon is given none.
pub const DEFAULT_POLICY: &str = include_str!("default.yaml");
/// The name the embedded policy goes by in errors and verdicts.
pub const DEFAULT_POLICY_NAME: &str = "<embedded default policy>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Decisions are carried out.
    Enforce,
    /// Decisions are reported as `would-*` and nothing is stopped.
    Audit,
}

#[derive(Debug, Clone)]
pub struct Policy {
    /// Where the policy came from (a file path or [`DEFAULT_POLICY_NAME`]).
    pub source: String,
    /// SHA-256 of the policy text, hex: every verdict names the policy that decided it.
    pub hash: String,
    pub mode: Mode,
    /// `mode` was written (not defaulted): a policy directory must agree on it.
    pub mode_set: bool,
    pub agents: Vec<Agent>,
}

#[derive(Debug, Clone)]
pub struct Agent {
    pub name: String,
    /// The file the agent is defined in.
    pub file: String,
    pub pos: Pos,
    /// `None`: the global mode applies.
    pub mode: Option<Mode>,
    pub cgroups: Vec<CgroupMatch>,
    /// `match.container` and `match.pod`: container cgroups, registered when they appear.
    pub containers: Vec<crate::container::matcher::ContainerMatch>,
    /// `exec.deny`, `exec.hold` and `exec.allow` rules, in document order.
    pub exec: Vec<ExecRule>,
    /// Where `exec.allow` is, if the agent has one: execs no allow rule matches are then killed.
    pub exec_allowlist: Option<Pos>,
    pub network: Network,
    /// `exfil`: byte budgets, sensitive paths, DNS tunnel limits.
    pub exfil: Option<exfil::Exfil>,
    /// `files`: protected paths.
    pub files: Option<files::Files>,
    /// `files.delete_budget`.
    pub delete_budget: Option<delete_budget::DeleteBudget>,
}

/// Which cgroups a `match.cgroup` glob or `match.systemd_unit` covers, relative to the cgroup
/// v2 root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMatch {
    /// The literal part of the glob, without leading or trailing `/`: a directory the kernel
    /// registration covers (`glob` is `None`), or where matching cgroups are looked for.
    pub dir: String,
    /// `dir` itself is matched (a glob with no wildcard).
    pub this: bool,
    /// Every cgroup below `dir` is matched (a trailing `/*` or `/**`).
    pub below: bool,
    /// A glob with wildcards inside (or a systemd unit): each existing and each new cgroup
    /// whose path matches is registered, with everything below it.
    pub glob: Option<String>,
    /// As written, for messages.
    pub text: String,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecMatcher {
    /// The filename passed to `execve` exactly, and the file it names (by identity, so links
    /// to it are matched too).
    Path(String),
    /// Filenames starting with this (a directory, ending in `/`), and files below that
    /// directory by identity.
    PathPrefix(String),
    /// The name the binary was invoked as, or the executed file's own name.
    Basename(String),
    /// Names (as for `Basename`) starting with this.
    BasenamePrefix(String),
}

impl ExecMatcher {
    pub const KEYS: [&'static str; 4] = ["path", "path_prefix", "basename", "basename_prefix"];
}

impl fmt::Display for ExecMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(p) => write!(f, "path: {p}"),
            Self::PathPrefix(p) => write!(f, "path_prefix: {p}"),
            Self::Basename(b) => write!(f, "basename: {b}"),
            Self::BasenamePrefix(b) => write!(f, "basename_prefix: {b}"),
        }
    }
}

/// What a matching exec rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExecAction {
    /// Killed before its first instruction (`kill`, or `deny`: without BPF LSM an exec cannot
    /// fail with EPERM, so a denied exec is killed).
    Kill,
    /// Stopped at exec until a person approves (`guard-agent approve ID`), denied on timeout.
    Hold,
    /// Reported, not stopped.
    Audit,
    /// On the allow list (`exec.allow`).
    Allow,
}

impl ExecAction {
    pub fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Hold => "hold",
            Self::Audit => "audit",
            Self::Allow => "allow",
        }
    }
}

/// Conditions on the command line and context, checked by the daemon while the new image is
/// stopped. All given conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Some argument (after argv[0]) is exactly one of these.
    pub argv_any: Vec<String>,
    /// Each of these is exactly some argument.
    pub argv_all: Vec<String>,
    /// Some argument matches one of these globs (`*`, `?`, `[...]`, `{a,b}`).
    pub argv_glob: Vec<String>,
    /// The working directory is this directory or below it.
    pub cwd_prefix: Option<String>,
    /// The effective uid is one of these.
    pub uid: Vec<u32>,
    /// What a database client is about to run (gathered while it is stopped at exec: argv,
    /// files, stdin; see `crate::sql`) is one of these.
    pub sql: Vec<SqlCheck>,
}

/// A condition on the statements a database client will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlCheck {
    /// A statement destroys data (`DROP`, `TRUNCATE`, `DELETE`/`UPDATE` without `WHERE`, ...).
    Destructive,
    /// Not everything it will run can be seen (a terminal, a pipe still being written, ...).
    Uninspectable,
}

impl SqlCheck {
    pub fn name(self) -> &'static str {
        match self {
            Self::Destructive => "destructive",
            Self::Uninspectable => "uninspectable",
        }
    }
}

impl Conditions {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl fmt::Display for Conditions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[String]| v.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ");
        if !self.argv_any.is_empty() {
            write!(f, " argv_any: [{}]", list(&self.argv_any))?;
        }
        if !self.argv_all.is_empty() {
            write!(f, " argv_all: [{}]", list(&self.argv_all))?;
        }
        if !self.argv_glob.is_empty() {
            write!(f, " argv_glob: [{}]", list(&self.argv_glob))?;
        }
        if let Some(c) = &self.cwd_prefix {
            write!(f, " cwd_prefix: {c}")?;
        }
        if !self.uid.is_empty() {
            write!(f, " uid: {:?}", self.uid)?;
        }
        if !self.sql.is_empty() {
            write!(f, " sql: [{}]", self.sql.iter().map(|c| c.name()).collect::<Vec<_>>().join(", "))?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct ExecRule {
    /// `exec.deny`, `exec.hold` or `exec.allow`.
    pub section: &'static str,
    pub matcher: ExecMatcher,
    pub conditions: Conditions,
    pub action: ExecAction,
    /// For `hold`: how long to wait for a person before denying.
    pub approve_timeout: Duration,
    /// Shown in the verdict, for the person reading it.
    pub message: Option<String>,
    pub pos: Pos,
}

impl ExecRule {
    /// Decided by the daemon while the new image is stopped, not by the kernel alone.
    pub fn needs_daemon(&self) -> bool {
        self.action == ExecAction::Hold || !self.conditions.is_empty()
    }
}

/// How long a `hold` waits for approval unless the rule says otherwise.
pub const DEFAULT_APPROVE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetAction {
    Allow,
    Deny,
}

#[derive(Debug, Clone)]
pub struct Network {
    pub default: NetAction,
    /// Raw (`SOCK_RAW`) and packet (`AF_PACKET`) sockets; denied unless set to allow.
    pub raw_sockets: NetAction,
    /// Allow and deny rules in document order.
    pub rules: Vec<NetRule>,
    /// `allow: - host:` rules: addresses learned from the agent's own DNS answers.
    pub hosts: Vec<HostRule>,
    /// How long a learned address outlives its DNS record's TTL.
    pub dns_grace: Duration,
}

impl Default for Network {
    fn default() -> Self {
        Self { default: NetAction::Allow, raw_sockets: NetAction::Deny, rules: Vec::new(), hosts: Vec::new(), dns_grace: DEFAULT_DNS_GRACE }
    }
}

/// Connections open when a record expires stay open; the grace covers clients that resolve
/// once and reconnect a little later.
pub const DEFAULT_DNS_GRACE: Duration = Duration::from_secs(30);

/// `network.allow: - host: api.example.com` (or `*.example.com`).
#[derive(Debug, Clone)]
pub struct HostRule {
    pub pattern: crate::dns::HostPattern,
    /// Inclusive ranges; empty means every port.
    pub ports: Vec<(u16, u16)>,
    pub message: Option<String>,
    pub pos: Pos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits cleared).
    pub addr: IpAddr,
    pub len: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[derive(Debug, Clone)]
pub struct NetRule {
    pub action: NetAction,
    pub cidr: Cidr,
    /// Inclusive ranges; empty means every port.
    pub ports: Vec<(u16, u16)>,
    pub message: Option<String>,
    pub pos: Pos,
}

/// A policy error: where, and what. Displays as `file:line:column: message`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}:{}:{}: {message}", pos.line, pos.col)]
pub struct PolicyError {
    pub file: String,
    pub pos: Pos,
    pub message: String,
}

/// Reads and validates a policy file, or a directory of them (`*.yaml`, merged in name order).
/// What is accepted as a path, and the size limit, are in [`source`].
pub fn load(path: &Path) -> Result<Policy, PolicyError> {
    if !path.is_dir() {
        return load_file(path);
    }
    load_dir(path)
}

/// [`load`] for a reload: the path must still be what it was when the daemon started, a file
/// (`dir` false) or a directory. A file replaced by a directory (or the other way round) is
/// refused rather than taken as a different kind of policy source: the daemon keeps the
/// policy in force, and a restart is how to change the kind.
pub fn reload(path: &Path, dir: bool) -> Result<Policy, PolicyError> {
    let err = |message: String| PolicyError { file: path.display().to_string(), pos: Pos { line: 1, col: 1 }, message };
    match (dir, std::fs::metadata(path)) {
        (false, Ok(m)) if m.is_dir() => {
            Err(err("the policy file is now a directory; the daemon was started with a policy file and keeps its policy (restart it to use a policy directory)".into()))
        }
        (true, Ok(m)) if !m.is_dir() => Err(err(format!(
            "the policy directory is now {}; the daemon was started with a policy directory and keeps its policy (restart it to use a single file)",
            source::kind_name(m.file_type())
        ))),
        (true, Err(e)) => Err(err(source::cannot_open(path, "policy directory", &e))),
        _ => load(path),
    }
}

fn load_dir(path: &Path) -> Result<Policy, PolicyError> {
    let dir_err = |message: String| PolicyError { file: path.display().to_string(), pos: Pos { line: 1, col: 1 }, message };
    // Every `*.yaml` entry counts, whatever it is: one that is not a regular file (a FIFO, a
    // dangling link) is an error, not silently left out of the policy.
    let mut files: Vec<_> = std::fs::read_dir(path)
        .map_err(|e| dir_err(format!("cannot read the policy directory: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(dir_err("the policy directory holds no *.yaml file".into()));
    }
    let mut merged: Option<Policy> = None;
    let mut hasher = Sha256::new();
    for f in &files {
        let p = load_file(f)?;
        hasher.update(f.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
        hasher.update([0]);
        hasher.update(p.hash.as_bytes());
        merged = Some(match merged {
            None => p,
            Some(mut m) => {
                for a in p.agents {
                    if let Some(first) = m.agents.iter().find(|x| x.name == a.name) {
                        return Err(PolicyError {
                            file: f.display().to_string(),
                            pos: a.pos,
                            message: format!("agent `{}` is already defined in {}:{}", a.name, first.file, first.pos.line),
                        });
                    }
                    m.agents.push(a);
                }
                if p.mode_set {
                    if m.mode_set && m.mode != p.mode {
                        return Err(PolicyError {
                            file: f.display().to_string(),
                            pos: Pos { line: 1, col: 1 },
                            message: "`mode` differs from an earlier file of the policy directory; set it once or per agent".into(),
                        });
                    }
                    m.mode = p.mode;
                    m.mode_set = true;
                }
                m
            }
        });
    }
    let mut p = merged.ok_or_else(|| dir_err("no policy".into()))?;
    p.source = path.display().to_string();
    p.hash = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(p)
}

/// Reads and validates one policy file.
pub fn load_file(path: &Path) -> Result<Policy, PolicyError> {
    let text = read_text(path, "policy file")?;
    parse::parse(&path.display().to_string(), &text)
}

/// Reads a UTF-8 text file (see [`source::read_text`]).
pub(crate) fn read_text(path: &Path, what: &str) -> Result<String, PolicyError> {
    source::read_text(path, what)
}

/// An agent name names a cgroup directory: letters, digits, `-`, `_` and `.`, not leading `.`.
pub fn valid_agent_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The embedded default policy.
pub fn default_policy() -> Policy {
    parse::parse(DEFAULT_POLICY_NAME, DEFAULT_POLICY).expect("the embedded default policy is valid (unit-tested)")
}

pub(crate) fn hash_text(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
