//! The daemon's settings file (`guard-agent daemon --config FILE`, installed as
//! `/etc/guard/guard.yaml`): policy location, sockets, kernel resource sizes, verdict sinks and
//! metrics. Every key is optional; flags on the command line win. Errors are
//! `file:line:column: message`, like policy errors.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use crate::policy::{
    self, PolicyError,
    parse::Parser,
    yaml::{self, Node},
};

/// The settings file `guard-agent install` writes.
pub const DEFAULT_CONFIG: &str = include_str!("guard.yaml");
pub const DEFAULT_CONFIG_PATH: &str = "/etc/guard/guard.yaml";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub policy: Option<PathBuf>,
    pub admin_socket: Option<PathBuf>,
    pub launch_socket: Option<PathBuf>,
    pub launch_group: Option<String>,
    pub ring_buffer_kib: Option<u32>,
    pub map_entries: Option<u32>,
    pub observe_all_execs: Option<bool>,
    pub sinks: Option<Vec<SinkConfig>>,
    pub metrics: Option<SocketAddr>,
    pub state_dir: Option<PathBuf>,
}

/// Where verdicts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    /// One JSON line per verdict on standard output (the journal, under systemd).
    Stdout,
    /// One JSON line per verdict appended to a file (created 0640).
    File { path: PathBuf },
}

impl SinkConfig {
    pub fn name(&self) -> String {
        match self {
            Self::Stdout => "stdout".into(),
            Self::File { path } => format!("file:{}", path.display()),
        }
    }
}

const KEYS: &[&str] = &[
    "policy", "admin_socket", "launch_socket", "launch_group", "ring_buffer_kib", "map_entries",
    "observe_all_execs", "sinks", "metrics", "state_dir",
];

pub fn load(path: &Path) -> Result<Config, PolicyError> {
    let text = policy::read_text(path, "settings file")?;
    parse(&path.display().to_string(), &text)
}

pub fn parse(file: &str, text: &str) -> Result<Config, PolicyError> {
    let p = Parser { file };
    let Some(root) = yaml::parse(text).map_err(|e| p.err(e.pos, format!("YAML syntax error: {}", e.message)))? else {
        return Ok(Config::default());
    };
    let m = p.map(&root, "the settings", KEYS)?;
    let path = |key: &str| -> Result<Option<PathBuf>, PolicyError> {
        m.get(key).map(|n| absolute(&p, n, key)).transpose()
    };
    Ok(Config {
        policy: path("policy")?,
        admin_socket: path("admin_socket")?,
        launch_socket: path("launch_socket")?,
        launch_group: m.get("launch_group").map(|n| p.nonempty_str(n, "`launch_group`").map(str::to_owned)).transpose()?,
        ring_buffer_kib: m.get("ring_buffer_kib").map(|n| number(&p, n, "ring_buffer_kib", crate::cli::daemon::ring_buffer_kib)).transpose()?,
        map_entries: m.get("map_entries").map(|n| number(&p, n, "map_entries", crate::cli::daemon::map_entries)).transpose()?,
        observe_all_execs: m.get("observe_all_execs").map(|n| boolean(&p, n, "observe_all_execs")).transpose()?,
        sinks: m.get("sinks").map(|n| sinks(&p, n)).transpose()?,
        metrics: m.get("metrics").map(|n| metrics(&p, n)).transpose()?,
        state_dir: path("state_dir")?,
    })
}

fn absolute(p: &Parser<'_>, node: &Node, key: &str) -> Result<PathBuf, PolicyError> {
    let s = p.nonempty_str(node, &format!("`{key}`"))?;
    if !s.starts_with('/') {
        return Err(p.err(node.pos, format!("`{key}` must be an absolute path, not `{s}`")));
    }
    Ok(PathBuf::from(s))
}

/// A number checked by the same function as the command-line flag.
fn number(p: &Parser<'_>, node: &Node, key: &str, check: fn(&str) -> Result<u32, String>) -> Result<u32, PolicyError> {
    let s = p.str(node, &format!("`{key}`"))?;
    check(s).map_err(|e| p.err(node.pos, format!("`{key}`: {e}")))
}

fn boolean(p: &Parser<'_>, node: &Node, key: &str) -> Result<bool, PolicyError> {
    match p.str(node, &format!("`{key}`"))? {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(p.err(node.pos, format!("`{key}` must be `true` or `false`, not `{other}`"))),
    }
}

fn sinks(p: &Parser<'_>, node: &Node) -> Result<Vec<SinkConfig>, PolicyError> {
    let mut out = Vec::new();
    for item in p.seq(node, "`sinks`")? {
        let m = p.map(item, "a sink", &["type", "path"])?;
        let ty_node = m.require("type", item, &p)?;
        let sink = match p.str(ty_node, "`type`")? {
            "stdout" => {
                if let Some(n) = m.get("path") {
                    return Err(p.err(n.pos, "a `stdout` sink takes no `path`"));
                }
                SinkConfig::Stdout
            }
            "file" => SinkConfig::File { path: absolute(p, m.require("path", item, p)?, "path")? },
            other => return Err(p.err(ty_node.pos, format!("unknown sink type `{other}`; valid types: stdout, file"))),
        };
        if out.contains(&sink) {
            return Err(p.err(item.pos, format!("sink `{}` is listed twice", sink.name())));
        }
        out.push(sink);
    }
    Ok(out)
}

fn metrics(p: &Parser<'_>, node: &Node) -> Result<SocketAddr, PolicyError> {
    let m = p.map(node, "`metrics`", &["listen"])?;
    let n = m.require("listen", node, p)?;
    parse_listen(p.str(n, "`listen`")?).map_err(|e| p.err(n.pos, format!("`metrics.listen`: {e}")))
}

/// A metrics address: `IP:PORT`. Anything off loopback is allowed but warned about by the
/// daemon (the endpoint has no authentication).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| format!("`{s}` is not an address like 127.0.0.1:9464 or [::1]:9464"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_default_parses() {
        let c = parse("guard.yaml", DEFAULT_CONFIG).unwrap();
        assert_eq!(c.policy.as_deref(), Some(Path::new("/etc/guard/policy.d")));
        assert_eq!(c.sinks, Some(vec![SinkConfig::File { path: "/var/log/guard/verdicts.jsonl".into() }]));
        assert_eq!(c.metrics, None);
        assert_eq!(c.ring_buffer_kib, Some(1024));
        assert_eq!(c.state_dir.as_deref(), Some(Path::new("/var/lib/guard")));
    }

    #[test]
    fn errors_have_positions_and_say_what_is_wrong() {
        let err = |t: &str| parse("g.yaml", t).unwrap_err().to_string();
        assert_eq!(err("polcy: /x\n").split(": ").next(), Some("g.yaml:1:1"));
        assert!(err("polcy: /x\n").contains("did you mean `policy`"), "{}", err("polcy: /x\n"));
        assert!(err("policy: rel/x\n").contains("absolute path"));
        assert!(err("ring_buffer_kib: 1000\n").starts_with("g.yaml:1:18: `ring_buffer_kib`"), "{}", err("ring_buffer_kib: 1000\n"));
        assert!(err("map_entries: -1\n").contains("map_entries"));
        assert!(err("observe_all_execs: yes\n").contains("`true` or `false`"));
        assert!(err("sinks:\n  - type: kafka\n").contains("unknown sink type `kafka`"));
        assert!(err("sinks:\n  - type: file\n").contains("missing required key `path`"));
        assert!(err("sinks:\n  - type: stdout\n  - type: stdout\n").contains("twice"));
        assert!(err("metrics:\n  listen: localhost\n").contains("127.0.0.1:9464"));
        assert!(err("[1, 2]\n").contains("must be a mapping"));
        assert_eq!(parse("g.yaml", "").unwrap(), Config::default());
    }
}
