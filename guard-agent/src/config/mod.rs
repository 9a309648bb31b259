//! The daemon's settings file (`guard-agent daemon --config FILE`, installed as
//! `/etc/guard/guard.yaml`): policy location, sockets, kernel resource sizes, verdict sinks and
//! metrics. Every key is optional; flags on the command line win. Errors are
//! `file:line:column: message`, like policy errors.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
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
    /// Extra masking regexes (a group named `secret` marks what to mask).
    pub mask_patterns: Option<Vec<String>>,
    pub audit_log: Option<AuditLogConfig>,
    /// Where container runtimes keep their data (`containers:`), for container identity.
    pub containers: Option<crate::container::Roots>,
}

/// The tamper-evident verdict log (`audit_log:`).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditLogConfig {
    pub dir: PathBuf,
    /// The Ed25519 signing key for checkpoints (`guard-agent audit keygen`); without one,
    /// checkpoints are unsigned.
    pub key: Option<PathBuf>,
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
    pub max_file_bytes: u64,
}

/// Where verdicts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    /// One JSON line per verdict on standard output (the journal, under systemd).
    Stdout,
    /// One JSON line per verdict appended to a file (created 0640).
    File { path: PathBuf, rotation: Rotation },
    /// Splunk HEC or Elasticsearch `_bulk`, through a bounded on-disk spool (see `sinks`).
    Network(Box<NetworkSink>),
}

impl SinkConfig {
    pub fn name(&self) -> String {
        match self {
            Self::Stdout => "stdout".into(),
            Self::File { path, .. } => format!("file:{}", path.display()),
            Self::Network(n) => n.name.clone(),
        }
    }
}

/// A network sink: where it sends, how it batches, and its spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSink {
    /// `name:` or `TYPE:HOST:PORT`; the `sink` label of its metrics.
    pub name: String,
    pub vendor: Vendor,
    /// The full endpoint: `.../services/collector/event` or `.../_bulk`.
    pub url: String,
    pub gzip: bool,
    pub batch_max_events: usize,
    pub batch_max_bytes: usize,
    pub batch_max_wait: Duration,
    /// Of one request, connect to last response byte.
    pub timeout: Duration,
    /// Longest wait between two tries of a batch (without a longer `Retry-After`).
    pub backoff_max: Duration,
    /// A PEM file of CA certificates trusted besides the system's.
    pub tls_ca: Option<PathBuf>,
    /// Default: `<state_dir>/spool/<name>`.
    pub spool_dir: Option<PathBuf>,
    pub spool_max_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vendor {
    SplunkHec { token: Secret, index: Option<String>, source: String, sourcetype: String },
    Elasticsearch { index: String, auth: Option<EsAuth> },
    /// RFC 5424 over TCP (`tcp://HOST:PORT`) or TLS (`tls://HOST:PORT`), octet-counted.
    Syslog { facility: u8, tls: bool, host: String, port: u16 },
    /// A Kafka topic (see `kafka`); `url` is `kafka://BROKERS/TOPIC`, for show.
    Kafka(Box<Kafka>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EsAuth {
    Basic { username: String, password: Secret },
    ApiKey(Secret),
}

/// A credential, given inline or (preferred) as a file read when the daemon starts. Never
/// printed: its `Debug` says only where it comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Inline(String),
    File(PathBuf),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Secret(<inline, redacted>)"),
            Self::File(p) => write!(f, "Secret(file {})", p.display()),
        }
    }
}

impl Secret {
    /// The secret itself (a file's content without surrounding whitespace).
    pub fn reveal(&self) -> std::io::Result<String> {
        match self {
            Self::Inline(s) => Ok(s.clone()),
            Self::File(p) => {
                let text = std::fs::read_to_string(p)?;
                let t = text.trim();
                if t.is_empty() {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is empty", p.display())));
                }
                Ok(t.to_owned())
            }
        }
    }
}

mod kafka;
pub use kafka::Kafka;
mod settings;
pub use settings::{DEFAULT_RING_BUFFER_KIB, Rotation, Settings, facility, map_entries, ring_buffer_kib};

const KEYS: &[&str] = &[
    "policy", "admin_socket", "launch_socket", "launch_group", "ring_buffer_kib", "map_entries",
    "observe_all_execs", "sinks", "metrics", "state_dir", "mask", "audit_log", "containers",
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
        ring_buffer_kib: m.get("ring_buffer_kib").map(|n| number(&p, n, "ring_buffer_kib", ring_buffer_kib)).transpose()?,
        map_entries: m.get("map_entries").map(|n| number(&p, n, "map_entries", map_entries)).transpose()?,
        observe_all_execs: m.get("observe_all_execs").map(|n| boolean(&p, n, "observe_all_execs")).transpose()?,
        sinks: m.get("sinks").map(|n| sinks(&p, n)).transpose()?,
        metrics: m.get("metrics").map(|n| metrics(&p, n)).transpose()?,
        state_dir: path("state_dir")?,
        mask_patterns: m.get("mask").map(|n| mask(&p, n)).transpose()?,
        audit_log: m.get("audit_log").map(|n| audit_log(&p, n)).transpose()?,
        containers: m.get("containers").map(|n| containers(&p, n)).transpose()?,
    })
}

/// `containers:` the runtimes' data directories (each optional; the defaults are the runtimes').
fn containers(p: &Parser<'_>, node: &Node) -> Result<crate::container::Roots, PolicyError> {
    let m = p.map(node, "`containers`", &["docker_root", "containerd_state", "crio_root", "pod_logs"])?;
    let mut roots = crate::container::Roots::default();
    for (key, slot) in [("docker_root", &mut roots.docker), ("containerd_state", &mut roots.containerd), ("crio_root", &mut roots.crio), ("pod_logs", &mut roots.pod_logs)] {
        if let Some(n) = m.get(key) {
            *slot = absolute(p, n, key)?;
        }
    }
    Ok(roots)
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

/// Keys every network sink takes.
const NETWORK_KEYS: &[&str] = &[
    "type", "name", "url", "gzip", "batch_max_events", "batch_max_bytes", "batch_max_wait", "timeout",
    "backoff_max", "tls_ca", "spool_dir", "spool_max_bytes",
];
const HEC_KEYS: &[&str] = &["token", "token_file", "index", "source", "sourcetype"];
const ES_KEYS: &[&str] = &["index", "username", "password_file", "api_key_file"];
const SYSLOG_KEYS: &[&str] = &["facility"];
pub const HEC_PATH: &str = "/services/collector/event";

fn sinks(p: &Parser<'_>, node: &Node) -> Result<Vec<SinkConfig>, PolicyError> {
    let mut out: Vec<SinkConfig> = Vec::new();
    let all: Vec<&str> = ["path", "rotate_bytes", "rotate_age", "keep"].iter().chain(NETWORK_KEYS).chain(HEC_KEYS).chain(ES_KEYS).chain(SYSLOG_KEYS).chain(kafka::KEYS).copied().collect();
    for item in p.seq(node, "`sinks`")? {
        // Every key any sink takes first (so a typo gets a `did you mean`), then the type's own.
        let m = p.map(item, "a sink", &all)?;
        let ty_node = m.require("type", item, p)?;
        let ty = p.str(ty_node, "`type`")?;
        let keys = |own: &[&'static str]| -> Vec<&'static str> { NETWORK_KEYS.iter().chain(own).copied().collect() };
        let sink = match ty {
            "stdout" => {
                p.map(item, "a `stdout` sink", &["type"])?;
                SinkConfig::Stdout
            }
            "file" => {
                let m = p.map(item, "a `file` sink", &["type", "path", "rotate_bytes", "rotate_age", "keep"])?;
                let d = Rotation::default();
                let rotation = Rotation {
                    max_bytes: m.get("rotate_bytes").map(|n| size(p, n, "rotate_bytes")).transpose()?.unwrap_or(d.max_bytes),
                    max_age: m.get("rotate_age").map(|n| duration(p, n, "rotate_age")).transpose()?.or(d.max_age),
                    keep: match m.get("keep") {
                        Some(n) => u32::try_from(size(p, n, "keep")?).map_err(|_| p.err(n.pos, "`keep` is too large"))?,
                        None => d.keep,
                    },
                };
                SinkConfig::File { path: absolute(p, m.require("path", item, p)?, "path")?, rotation }
            }
            "splunk_hec" => {
                let m = p.map(item, "a `splunk_hec` sink", &keys(HEC_KEYS))?;
                let token = match (m.get("token"), m.get("token_file")) {
                    (Some(t), None) => Secret::Inline(p.nonempty_str(t, "`token`")?.to_owned()),
                    (None, Some(f)) => Secret::File(absolute(p, f, "token_file")?),
                    (Some(t), Some(_)) => return Err(p.err(t.pos, "give `token_file` (preferred) or `token`, not both")),
                    (None, None) => return Err(p.err(item.pos, "a `splunk_hec` sink needs `token_file` (preferred) or `token`")),
                };
                let text = |key: &str, default: &str| -> Result<String, PolicyError> {
                    m.get(key).map_or(Ok(default.to_owned()), |n| p.nonempty_str(n, &format!("`{key}`")).map(str::to_owned))
                };
                let vendor = Vendor::SplunkHec {
                    token,
                    index: m.get("index").map(|n| p.nonempty_str(n, "`index`").map(str::to_owned)).transpose()?,
                    source: text("source", "guard")?,
                    sourcetype: text("sourcetype", "guard:ocsf")?,
                };
                network(p, item, &m, ty, vendor)?
            }
            "elasticsearch" => {
                let m = p.map(item, "an `elasticsearch` sink", &keys(ES_KEYS))?;
                let index_node = m.require("index", item, p)?;
                let index = p.nonempty_str(index_node, "`index`")?;
                if index.starts_with(['_', '-', '+']) || index.contains(['"', '\\', '/', '*', '?', '<', '>', '|', ' ', ',', '#', ':']) || index != index.to_lowercase() {
                    return Err(p.err(index_node.pos, format!("`{index}` is not a valid Elasticsearch index or data stream name (lowercase, no `\\/*?\"<>| ,#:`, not starting with `_`, `-` or `+`)")));
                }
                let auth = match (m.get("username"), m.get("password_file"), m.get("api_key_file")) {
                    (None, None, None) => None,
                    (Some(u), Some(pw), None) => Some(EsAuth::Basic {
                        username: p.nonempty_str(u, "`username`")?.to_owned(),
                        password: Secret::File(absolute(p, pw, "password_file")?),
                    }),
                    (None, None, Some(k)) => Some(EsAuth::ApiKey(Secret::File(absolute(p, k, "api_key_file")?))),
                    (Some(u), None, None) => return Err(p.err(u.pos, "`username` needs `password_file`")),
                    (None, Some(pw), None) => return Err(p.err(pw.pos, "`password_file` needs `username`")),
                    (_, _, Some(k)) => return Err(p.err(k.pos, "give `api_key_file` or `username` with `password_file`, not both")),
                };
                network(p, item, &m, ty, Vendor::Elasticsearch { index: index.to_owned(), auth })?
            }
            "syslog" => {
                let m = p.map(item, "a `syslog` sink", &keys(SYSLOG_KEYS))?;
                let url_node = m.require("url", item, p)?;
                let (tls, host, port) = syslog_url(p.nonempty_str(url_node, "`url`")?).map_err(|e| p.err(url_node.pos, format!("`url`: {e}")))?;
                let facility = match m.get("facility") {
                    Some(n) => {
                        let name = p.str(n, "`facility`")?;
                        facility(name)
                            .ok_or_else(|| p.err(n.pos, format!("unknown facility `{name}` (e.g. authpriv, auth, daemon, local0..local7)")))?
                    }
                    None => facility("authpriv").unwrap_or(10),
                };
                network(p, item, &m, ty, Vendor::Syslog { facility, tls, host, port })?
            }
            "kafka" => {
                // No `url` (brokers and a topic instead) and no `gzip` (`compression`).
                let own: Vec<&str> = NETWORK_KEYS.iter().filter(|k| !matches!(**k, "url" | "gzip")).chain(kafka::KEYS).copied().collect();
                let m = p.map(item, "a `kafka` sink", &own)?;
                let k = kafka::parse(p, item, &m)?;
                network(p, item, &m, ty, Vendor::Kafka(Box::new(k)))?
            }
            other => return Err(p.err(ty_node.pos, format!("unknown sink type `{other}`; valid types: stdout, file, splunk_hec, elasticsearch, syslog, kafka"))),
        };
        if out.iter().any(|s| *s == sink || s.name() == sink.name()) {
            return Err(p.err(item.pos, format!("sink `{}` is listed twice (give each network sink its own `name`)", sink.name())));
        }
        if let SinkConfig::Network(n) = &sink {
            let same_spool = out.iter().any(|s| matches!(s, SinkConfig::Network(o) if o.spool_dir.is_some() && o.spool_dir == n.spool_dir));
            if same_spool {
                return Err(p.err(item.pos, format!("sink `{}` has the same `spool_dir` as another sink", n.name)));
            }
        }
        out.push(sink);
    }
    Ok(out)
}

/// The keys every network sink shares.
fn network(p: &Parser<'_>, item: &Node, m: &crate::policy::parse::Map<'_>, ty: &str, vendor: Vendor) -> Result<SinkConfig, PolicyError> {
    let (endpoint, host, port) = match &vendor {
        Vendor::Kafka(k) => {
            let (host, port) = k.brokers[0].rsplit_once(':').map_or((k.brokers[0].as_str(), 9092), |(h, p)| (h, p.parse().unwrap_or(9092)));
            (k.endpoint(), host.trim_start_matches('[').trim_end_matches(']').to_owned(), port)
        }
        Vendor::Syslog { host, port, .. } => (p.nonempty_str(m.require("url", item, p)?, "`url`")?.to_owned(), host.clone(), *port),
        _ => {
            let url_node = m.require("url", item, p)?;
            let raw = p.nonempty_str(url_node, "`url`")?;
            let url = Url::parse(raw).map_err(|e| p.err(url_node.pos, format!("`url`: {e}")))?;
            let endpoint = match &vendor {
                Vendor::SplunkHec { .. } if url.path.is_empty() => format!("{}{HEC_PATH}", url.base()),
                Vendor::Elasticsearch { .. } if !url.path.ends_with("/_bulk") => format!("{}{}/_bulk", url.base(), url.path),
                _ => format!("{}{}", url.base(), url.path),
            };
            (endpoint, url.host, url.port)
        }
    };
    let name = match m.get("name") {
        Some(n) => {
            let name = p.nonempty_str(n, "`name`")?;
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
                return Err(p.err(n.pos, format!("sink name `{name}` may only use letters, digits, `-`, `_`, `.` and `:` (it names the spool directory)")));
            }
            name.to_owned()
        }
        None => format!("{ty}:{host}:{port}"),
    };
    let get = |key: &str| m.get(key);
    let size_of = |key: &str, default: u64, min: u64, max: u64| -> Result<u64, PolicyError> {
        let Some(n) = get(key) else { return Ok(default) };
        let v = size(p, n, key)?;
        if v < min || v > max {
            return Err(p.err(n.pos, format!("`{key}` must be between {} and {}", show_size(min), show_size(max))));
        }
        Ok(v)
    };
    let duration_of = |key: &str, default: Duration, min: Duration, max: Duration| -> Result<Duration, PolicyError> {
        let Some(n) = get(key) else { return Ok(default) };
        let v = duration(p, n, key)?;
        if v < min || v > max {
            return Err(p.err(n.pos, format!("`{key}` must be between {min:?} and {max:?}")));
        }
        Ok(v)
    };
    Ok(SinkConfig::Network(Box::new(NetworkSink {
        name,
        vendor,
        url: endpoint,
        gzip: get("gzip").map(|n| boolean(p, n, "gzip")).transpose()?.unwrap_or(true),
        batch_max_events: size_of("batch_max_events", 500, 1, 100_000)? as usize,
        batch_max_bytes: size_of("batch_max_bytes", 1 << 20, 1 << 10, 100 << 20)? as usize,
        batch_max_wait: duration_of("batch_max_wait", Duration::from_secs(1), Duration::ZERO, Duration::from_secs(60))?,
        timeout: duration_of("timeout", Duration::from_secs(10), Duration::from_millis(100), Duration::from_secs(600))?,
        backoff_max: duration_of("backoff_max", Duration::from_secs(30), Duration::from_millis(100), Duration::from_secs(3600))?,
        tls_ca: get("tls_ca").map(|n| absolute(p, n, "tls_ca")).transpose()?,
        spool_dir: get("spool_dir").map(|n| absolute(p, n, "spool_dir")).transpose()?,
        spool_max_bytes: size_of("spool_max_bytes", 256 << 20, 1 << 20, 1 << 40)?,
    })))
}

/// `tcp://HOST[:PORT]` (default 514) or `tls://HOST[:PORT]` (default 6514): (tls, host, port).
fn syslog_url(s: &str) -> Result<(bool, String, u16), String> {
    let (tls, rest) = match s.split_once("://") {
        Some(("tcp", r)) => (false, r),
        Some(("tls", r)) => (true, r),
        _ => return Err(format!("`{s}` is not tcp://HOST[:PORT] or tls://HOST[:PORT]")),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.ends_with(']') || h.starts_with('[') => {
            (h.trim_start_matches('[').trim_end_matches(']').to_owned(), p.parse::<u16>().map_err(|_| format!("bad port `{p}`"))?)
        }
        _ => (rest.to_owned(), if tls { 6514 } else { 514 }),
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) || port == 0 {
        return Err(format!("`{s}` is not tcp://HOST[:PORT] or tls://HOST[:PORT]"));
    }
    Ok((tls, host, port))
}

/// `http[s]://HOST[:PORT][/PATH]`: what a sink URL may be (no user info, query or fragment).
#[derive(Debug, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Without a trailing `/`; empty for the root.
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("`{s}` must start with https:// (or http://)"));
        };
        if rest.contains(['?', '#', '@', ' ']) {
            return Err(format!("`{s}` may not have user info, a query or a fragment"));
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (h, after) = v6.split_once(']').ok_or_else(|| format!("`{s}`: unclosed `[`"))?;
                (format!("[{h}]"), after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (authority.to_owned(), None),
            },
        };
        if host.is_empty() || host == "[]" {
            return Err(format!("`{s}` has no host"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("`{s}`: `{p}` is not a port"))?,
            None if https => 443,
            None => 80,
        };
        Ok(Self { https, host, port, path: path.trim_end_matches('/').to_owned() })
    }

    /// `scheme://host:port`.
    pub fn base(&self) -> String {
        format!("{}://{}:{}", if self.https { "https" } else { "http" }, self.host, self.port)
    }
}

/// `1048576`, `512KiB`, `1MiB`, `2GiB` (also `K`/`M`/`G`, `KB`/`MB`/`GB` as powers of 1024).
fn size(p: &Parser<'_>, node: &Node, key: &str) -> Result<u64, PolicyError> {
    let t = p.str(node, &format!("`{key}`"))?;
    let bad = || p.err(node.pos, format!("`{key}`: `{t}` is not a size like `500`, `512KiB`, `1MiB` or `2GiB`"));
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let shift = match unit.trim() {
        "" => 0,
        "K" | "KB" | "KiB" | "k" | "kB" => 10,
        "M" | "MB" | "MiB" => 20,
        "G" | "GB" | "GiB" => 30,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift).ok_or_else(bad)
}

fn show_size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => n.to_string(),
    }
}

/// `0`, `250ms`, `10s`, `2m`, `1h`.
fn duration(p: &Parser<'_>, node: &Node, key: &str) -> Result<Duration, PolicyError> {
    let t = p.str(node, &format!("`{key}`"))?;
    let bad = || p.err(node.pos, format!("`{key}`: `{t}` is not a duration like `250ms`, `10s`, `2m` or `1h`"));
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(bad()),
    })
}

/// `mask: { patterns: [REGEX...] }`, each checked by the masker itself.
fn mask(p: &Parser<'_>, node: &Node) -> Result<Vec<String>, PolicyError> {
    let m = p.map(node, "`mask`", &["patterns"])?;
    let list = m.require("patterns", node, p)?;
    let mut out = Vec::new();
    for item in p.seq(list, "`patterns`")? {
        let pattern = p.nonempty_str(item, "a pattern")?.to_owned();
        crate::mask::Masker::new(std::slice::from_ref(&pattern)).map_err(|e| p.err(item.pos, e))?;
        out.push(pattern);
    }
    Ok(out)
}

fn audit_log(p: &Parser<'_>, node: &Node) -> Result<AuditLogConfig, PolicyError> {
    let m = p.map(node, "`audit_log`", &["dir", "key", "checkpoint_every", "checkpoint_interval", "max_file_bytes"])?;
    let dir = absolute(p, m.require("dir", node, p)?, "dir")?;
    let key = m.get("key").map(|n| absolute(p, n, "key")).transpose()?;
    let checkpoint_every = m.get("checkpoint_every").map(|n| size(p, n, "checkpoint_every")).transpose()?.unwrap_or(1000);
    let checkpoint_interval = m.get("checkpoint_interval").map(|n| duration(p, n, "checkpoint_interval")).transpose()?.unwrap_or(Duration::from_secs(60));
    let max_file_bytes = m.get("max_file_bytes").map(|n| size(p, n, "max_file_bytes")).transpose()?.unwrap_or(64 << 20);
    if checkpoint_interval.is_zero() {
        return Err(p.err(node.pos, "`checkpoint_interval` must be more than 0"));
    }
    Ok(AuditLogConfig { dir, key, checkpoint_every, checkpoint_interval, max_file_bytes })
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
mod tests;
