//! The settings of a `kafka` sink (see `sinks::kafka` for what it does with them):
//!
//! ```yaml
//! - type: kafka
//!   brokers: [kafka-1.example:9093, kafka-2.example:9093]   # or one string, comma-separated
//!   topic: guard-verdicts
//!   security_protocol: sasl_ssl    # plaintext | ssl | sasl_plaintext | sasl_ssl
//!                                  # [sasl_ssl with SASL settings, else ssl]
//!   tls_ca: /etc/guard/kafka-ca.pem          # trusted besides the system's CAs
//!   tls_cert: /etc/guard/kafka-client.pem    # a client certificate (with tls_key)
//!   tls_key: /etc/guard/kafka-client.key
//!   sasl_mechanism: SCRAM-SHA-512  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
//!   sasl_username: guard
//!   sasl_password_file: /etc/guard/kafka-password   # (or `sasl_password:`)
//!   compression: lz4               # none | gzip | snappy | lz4 | zstd
//! ```
//!
//! Plus the keys every network sink takes but `url` and `gzip` (see `config`).
use std::path::PathBuf;

use super::{Secret, absolute};
use crate::policy::{PolicyError, parse::Parser, yaml::{Node, Value}};

/// The keys of a `kafka` sink besides the shared ones.
pub const KEYS: &[&str] = &[
    "brokers", "topic", "security_protocol", "tls_cert", "tls_key", "sasl_mechanism", "sasl_username",
    "sasl_password", "sasl_password_file", "compression",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kafka {
    /// `HOST:PORT`, at least one.
    pub brokers: Vec<String>,
    pub topic: String,
    /// librdkafka's `security.protocol`: `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: &'static str,
    /// A client certificate and its key (PEM), for brokers that authenticate clients by TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub sasl: Option<Sasl>,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    pub compression: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: &'static str,
    pub username: String,
    pub password: Secret,
}

impl Kafka {
    /// Whether the brokers are reached over TLS.
    pub fn tls(&self) -> bool {
        self.security_protocol.ends_with("ssl")
    }

    /// `kafka://HOST:PORT,.../TOPIC`: what `status` and the log show.
    pub fn endpoint(&self) -> String {
        format!("kafka://{}/{}", self.brokers.join(","), self.topic)
    }
}

const PROTOCOLS: [&str; 4] = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];
const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];
const COMPRESSIONS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// One of `allowed`, as the static string itself.
fn one_of(p: &Parser<'_>, node: &Node, key: &str, allowed: &[&'static str]) -> Result<&'static str, PolicyError> {
    let s = p.str(node, &format!("`{key}`"))?;
    allowed.iter().find(|a| **a == s).copied().ok_or_else(|| p.err(node.pos, format!("`{key}` must be one of {}, not `{s}`", allowed.join(", "))))
}

/// `HOST:PORT` (IPv6 as `[ADDR]:PORT`); the port defaults to 9092.
fn broker(s: &str) -> Result<String, String> {
    let s = s.trim();
    let bad = || format!("broker `{s}` is not HOST:PORT");
    let (host, port) = match s.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            (format!("[{h}]"), after.strip_prefix(':'))
        }
        None => match s.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (s.to_owned(), None),
        },
    };
    if host.is_empty() || host == "[]" || host.contains(['/', '@', ' ', ',', '=']) || s.contains("://") {
        return Err(bad());
    }
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("broker `{s}`: `{p}` is not a port"))?,
        None => 9092,
    };
    Ok(format!("{host}:{port}"))
}

/// A topic name as Kafka allows it: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn topic(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 249 || s == "." || s == ".." || !s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(format!("`{s}` is not a Kafka topic name (1 to 249 letters, digits, `.`, `_` or `-`)"));
    }
    Ok(())
}

/// Reads the kafka-only keys of a sink mapping (already checked for unknown keys).
pub fn parse(p: &Parser<'_>, item: &Node, m: &crate::policy::parse::Map<'_>) -> Result<Kafka, PolicyError> {
    let brokers_node = m.require("brokers", item, p)?;
    let texts: Vec<(&Node, &str)> = match &brokers_node.value {
        Value::Seq(items) => items.iter().map(|n| p.nonempty_str(n, "a broker").map(|s| (n, s))).collect::<Result<_, _>>()?,
        _ => {
            let s = p.nonempty_str(brokers_node, "`brokers`")?;
            s.split(',').map(|b| (brokers_node, b)).collect()
        }
    };
    if texts.is_empty() {
        return Err(p.err(brokers_node.pos, "`brokers` is empty: give at least one HOST:PORT"));
    }
    let brokers = texts.iter().map(|(n, s)| broker(s).map_err(|e| p.err(n.pos, format!("`brokers`: {e}")))).collect::<Result<Vec<_>, _>>()?;
    let topic_node = m.require("topic", item, p)?;
    let topic_name = p.str(topic_node, "`topic`")?;
    topic(topic_name).map_err(|e| p.err(topic_node.pos, format!("`topic`: {e}")))?;

    let sasl_keys = ["sasl_mechanism", "sasl_username", "sasl_password", "sasl_password_file"];
    let first_sasl = sasl_keys.iter().find_map(|k| m.get(k));
    let first_tls = ["tls_ca", "tls_cert", "tls_key"].iter().find_map(|k| m.get(k).map(|n| (*k, n)));
    let security_protocol = match m.get("security_protocol") {
        Some(n) => {
            let proto = one_of(p, n, "security_protocol", &PROTOCOLS)?;
            if let (false, Some(s)) = (proto.starts_with("sasl_"), first_sasl) {
                return Err(p.err(s.pos, format!("SASL settings need `security_protocol: sasl_ssl` (or sasl_plaintext), not `{proto}`")));
            }
            if let (false, Some((k, t))) = (proto.ends_with("ssl"), first_tls) {
                return Err(p.err(t.pos, format!("`{k}` needs `security_protocol: ssl` or `sasl_ssl`, not `{proto}`")));
            }
            proto
        }
        None if first_sasl.is_some() => "sasl_ssl",
        None => "ssl",
    };
    let sasl = if security_protocol.starts_with("sasl_") {
        let mechanism = one_of(p, m.require("sasl_mechanism", item, p)?, "sasl_mechanism", &MECHANISMS)?;
        let username = p.nonempty_str(m.require("sasl_username", item, p)?, "`sasl_username`")?.to_owned();
        let password = match (m.get("sasl_password"), m.get("sasl_password_file")) {
            (Some(t), None) => Secret::Inline(p.nonempty_str(t, "`sasl_password`")?.to_owned()),
            (None, Some(f)) => Secret::File(absolute(p, f, "sasl_password_file")?),
            (Some(t), Some(_)) => return Err(p.err(t.pos, "give `sasl_password_file` (preferred) or `sasl_password`, not both")),
            (None, None) => return Err(p.err(item.pos, "SASL needs `sasl_password_file` (preferred) or `sasl_password`")),
        };
        Some(Sasl { mechanism, username, password })
    } else {
        None
    };
    let tls_cert = m.get("tls_cert").map(|n| absolute(p, n, "tls_cert")).transpose()?;
    let tls_key = m.get("tls_key").map(|n| absolute(p, n, "tls_key")).transpose()?;
    match (m.get("tls_cert"), m.get("tls_key")) {
        (Some(n), None) => return Err(p.err(n.pos, "`tls_cert` needs `tls_key` (the client certificate's private key)")),
        (None, Some(n)) => return Err(p.err(n.pos, "`tls_key` needs `tls_cert`")),
        _ => {}
    }
    let compression = m.get("compression").map(|n| one_of(p, n, "compression", &COMPRESSIONS)).transpose()?.unwrap_or("lz4");
    Ok(Kafka { brokers, topic: topic_name.to_owned(), security_protocol, tls_cert, tls_key, sasl, compression })
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use super::super::{SinkConfig, Vendor, parse};
    use super::*;

    fn kafka(text: &str) -> (crate::config::NetworkSink, Kafka) {
        let c = parse("g.yaml", text).unwrap();
        let SinkConfig::Network(n) = c.sinks.unwrap().remove(0) else { panic!() };
        let Vendor::Kafka(k) = &n.vendor else { panic!("{n:?}") };
        let k = (**k).clone();
        (*n, k)
    }

    #[test]
    fn kafka_sinks_parse_with_secure_defaults() {
        let (n, k) = kafka("sinks:\n  - type: kafka\n    brokers: [k1.example:9093, \"[::1]:9094\", k3]\n    topic: guard.verdicts\n    tls_ca: /etc/guard/ca.pem\n");
        assert_eq!(k.brokers, ["k1.example:9093", "[::1]:9094", "k3:9092"]);
        assert_eq!((k.topic.as_str(), k.security_protocol, k.compression), ("guard.verdicts", "ssl", "lz4"));
        assert_eq!((n.name.as_str(), n.url.as_str()), ("kafka:k1.example:9093", "kafka://k1.example:9093,[::1]:9094,k3:9092/guard.verdicts"));
        assert_eq!(n.tls_ca.as_deref(), Some(Path::new("/etc/guard/ca.pem")));
        assert_eq!((n.batch_max_events, n.timeout, n.spool_max_bytes), (500, Duration::from_secs(10), 256 << 20));
        assert!(k.sasl.is_none() && k.tls());
        // SASL makes it sasl_ssl; a comma-separated string is a list too.
        let (n, k) = kafka("sinks:\n  - type: kafka\n    name: siem-kafka\n    brokers: a:1,b:2\n    topic: t\n    sasl_mechanism: SCRAM-SHA-512\n    sasl_username: guard\n    sasl_password_file: /etc/guard/kafka-pw\n    tls_cert: /c.pem\n    tls_key: /k.pem\n    compression: zstd\n    spool_dir: /var/spool/guard-kafka\n");
        assert_eq!((n.name.as_str(), k.brokers.as_slice(), k.security_protocol, k.compression), ("siem-kafka", &["a:1".to_owned(), "b:2".to_owned()][..], "sasl_ssl", "zstd"));
        assert_eq!(k.sasl, Some(Sasl { mechanism: "SCRAM-SHA-512", username: "guard".into(), password: Secret::File("/etc/guard/kafka-pw".into()) }));
        assert_eq!((k.tls_cert.as_deref(), k.tls_key.as_deref()), (Some(Path::new("/c.pem")), Some(Path::new("/k.pem"))));
        let (_, k) = kafka("sinks:\n  - type: kafka\n    brokers: [127.0.0.1:9092]\n    topic: t\n    security_protocol: plaintext\n");
        assert!(!k.tls());
    }

    #[test]
    fn kafka_sink_errors_have_positions() {
        let err = |t: &str| parse("g.yaml", t).unwrap_err().to_string();
        let base = "sinks:\n  - type: kafka\n    brokers: [k:9092]\n    topic: t\n";
        assert!(parse("g.yaml", base).is_ok());
        let e = err("sinks:\n  - type: kafka\n    topic: t\n");
        assert!(e.starts_with("g.yaml:2:5: missing required key `brokers`"), "{e}");
        let e = err("sinks:\n  - type: kafka\n    brokers: [k:9092, \"k:x\"]\n    topic: t\n");
        assert!(e.starts_with("g.yaml:3:23: `brokers`: broker `k:x`: `x` is not a port"), "{e}");
        assert!(err("sinks:\n  - type: kafka\n    brokers: []\n    topic: t\n").contains("`brokers` is empty"));
        assert!(err("sinks:\n  - type: kafka\n    brokers: kafka://k:9092\n    topic: t\n").contains("is not HOST:PORT"));
        let e = err("sinks:\n  - type: kafka\n    brokers: [k]\n    topic: a/b\n");
        assert!(e.starts_with("g.yaml:4:12: `topic`: `a/b` is not a Kafka topic name"), "{e}");
        assert!(err("sinks:\n  - type: kafka\n    brokers: [k]\n").contains("missing required key `topic`"));
        let e = err(&format!("{base}    url: https://k\n"));
        assert!(e.starts_with("g.yaml:5:5: unknown key `url` in a `kafka` sink"), "{e}");
        assert!(err(&format!("{base}    gzip: true\n")).contains("unknown key `gzip` in a `kafka` sink"));
        let e = err(&format!("{base}    security_protocol: tls\n"));
        assert!(e.starts_with("g.yaml:5:24: `security_protocol` must be one of plaintext, ssl, sasl_plaintext, sasl_ssl, not `tls`"), "{e}");
        let e = err(&format!("{base}    security_protocol: plaintext\n    tls_ca: /ca.pem\n"));
        assert!(e.starts_with("g.yaml:6:13: `tls_ca` needs `security_protocol: ssl` or `sasl_ssl`"), "{e}");
        let e = err(&format!("{base}    security_protocol: ssl\n    sasl_username: u\n"));
        assert!(e.starts_with("g.yaml:6:20: SASL settings need `security_protocol: sasl_ssl`"), "{e}");
        let e = err(&format!("{base}    sasl_mechanism: GSSAPI\n    sasl_username: u\n    sasl_password_file: /p\n"));
        assert!(e.starts_with("g.yaml:5:21: `sasl_mechanism` must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"), "{e}");
        assert!(err(&format!("{base}    sasl_mechanism: PLAIN\n    sasl_username: u\n")).contains("needs `sasl_password_file`"));
        assert!(err(&format!("{base}    security_protocol: sasl_ssl\n    sasl_username: u\n    sasl_password_file: /p\n")).contains("missing required key `sasl_mechanism`"));
        assert!(err(&format!("{base}    sasl_mechanism: PLAIN\n    sasl_username: u\n    sasl_password: x\n    sasl_password_file: /p\n")).contains("not both"));
        assert!(err(&format!("{base}    sasl_mechanism: PLAIN\n    sasl_username: u\n    sasl_password_file: rel\n")).contains("absolute path"));
        let e = err(&format!("{base}    tls_cert: /c.pem\n"));
        assert!(e.starts_with("g.yaml:5:15: `tls_cert` needs `tls_key`"), "{e}");
        assert!(err(&format!("{base}    compression: brotli\n")).contains("`compression` must be one of none, gzip, snappy, lz4, zstd"));
        assert!(err(&format!("{base}    batch_max_events: 0\n")).contains("between 1 and"));
        // An inline password is never printed.
        let c = parse("g.yaml", &format!("{base}    sasl_mechanism: PLAIN\n    sasl_username: u\n    sasl_password: hunter2-SECRET\n")).unwrap();
        assert!(!format!("{c:?}").contains("hunter2-SECRET"));
    }
}
