//! Policy: YAML -> validated model ([`parse`]) -> kernel map entries ([`compile`]).
pub mod compile;
pub mod parse;
pub mod yaml;

use std::{fmt, net::IpAddr, path::Path};

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
    pub agents: Vec<Agent>,
}

#[derive(Debug, Clone)]
pub struct Agent {
    pub name: String,
    pub pos: Pos,
    /// `None`: the global mode applies.
    pub mode: Option<Mode>,
    pub cgroups: Vec<CgroupMatch>,
    pub exec_deny: Vec<ExecRule>,
    pub network: Network,
}

/// Which cgroups a `match.cgroup` glob covers, relative to the cgroup v2 root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMatch {
    /// The literal part of the glob, without leading or trailing `/`.
    pub dir: String,
    /// `dir` itself is matched (a glob with no wildcard).
    pub this: bool,
    /// Every cgroup below `dir` is matched (a trailing `/*` or `/**`).
    pub below: bool,
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

#[derive(Debug, Clone)]
pub struct ExecRule {
    pub matcher: ExecMatcher,
    /// Shown in the verdict, for the person reading it.
    pub message: Option<String>,
    pub pos: Pos,
}

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

/// Reads and validates a policy file.
pub fn load_file(path: &Path) -> Result<Policy, PolicyError> {
    let file = path.display().to_string();
    let text = std::fs::read(path).map_err(|e| PolicyError {
        file: file.clone(),
        pos: Pos { line: 1, col: 1 },
        message: format!("cannot read the policy file: {e}"),
    })?;
    let text = String::from_utf8(text).map_err(|e| {
        let upto = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = upto.iter().filter(|b| **b == b'\n').count() + 1;
        let col = upto.iter().rev().take_while(|b| **b != b'\n').count() + 1;
        PolicyError { file: file.clone(), pos: Pos { line, col }, message: "the policy file is not valid UTF-8".into() }
    })?;
    parse::parse(&file, &text)
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
