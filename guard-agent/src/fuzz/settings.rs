//! The settings file (`guard.yaml`): parses or gives a `file:line:column` error inside the
//! file; what parses is what the daemon can start with (its mask patterns compile).
use super::{Rng, Target, mutate};
use crate::config::{self, SinkConfig};

const FILE: &str = "guard.yaml";

/// Every key of the settings, and every sink type with its options.
const FULL: &str = r#"policy: /etc/guard/policy.d
admin_socket: /run/guard/guard.sock
launch_socket: /run/guard/launch.sock
launch_group: guard-launch
state_dir: /var/lib/guard
ring_buffer_kib: 1024
map_entries: 16384
observe_all_execs: false
sinks:
  - type: stdout
  - type: file
    path: /var/log/guard/verdicts.jsonl
    rotate_bytes: 64MiB
    rotate_age: 1h
    keep: 10
  - type: syslog
    url: tls://siem.example.com:6514
    tls_ca: /etc/guard/siem-ca.pem
    facility: authpriv
  - type: splunk_hec
    name: hec
    url: https://splunk.example.com:8088
    token_file: /etc/guard/hec-token
    index: security
    source: guard
    sourcetype: "guard:ocsf"
  - type: elasticsearch
    url: https://es.example.com:9200
    index: guard-verdicts
    username: guard
    password_file: /etc/guard/es-password
    gzip: true
    batch_max_events: 500
    batch_max_bytes: 1MiB
    batch_max_wait: 1s
    timeout: 10s
    backoff_max: 5m
    spool_dir: /var/spool/guard/es
    spool_max_bytes: 1GiB
  - type: kafka
    brokers: [kafka-1.example.com:9093, "[::1]:9094", kafka-3]
    topic: guard-verdicts
    security_protocol: sasl_ssl
    tls_ca: /etc/guard/kafka-ca.pem
    tls_cert: /etc/guard/kafka-client.pem
    tls_key: /etc/guard/kafka-client.key
    sasl_mechanism: SCRAM-SHA-512
    sasl_username: guard
    sasl_password_file: /etc/guard/kafka-password
    compression: zstd
    batch_max_events: 1000
audit_log:
  dir: /var/log/guard/audit
  key: /var/lib/guard/audit.key
  checkpoint_every: 1000
  checkpoint_interval: 60s
  max_file_bytes: 64MiB
metrics:
  listen: 127.0.0.1:9464
"#;

const KEYS: &[&str] = &[
    "policy", "admin_socket", "launch_socket", "launch_group", "ring_buffer_kib", "map_entries", "observe_all_execs", "sinks",
    "metrics", "state_dir", "mask", "audit_log", "type", "name", "url", "gzip", "batch_max_events", "batch_max_bytes", "batch_max_wait",
    "timeout", "backoff_max", "tls_ca", "spool_dir", "spool_max_bytes", "token", "token_file", "index", "source", "sourcetype",
    "username", "password_file", "api_key_file", "facility", "path", "rotate_bytes", "rotate_age", "keep", "dir", "key",
    "checkpoint_every", "checkpoint_interval", "max_file_bytes", "patterns", "listen", "bogus", "brokers", "topic",
    "security_protocol", "tls_cert", "tls_key", "sasl_mechanism", "sasl_username", "sasl_password", "sasl_password_file",
    "compression",
];

/// Kept apart: each mask pattern compiles the whole masker (a tenth of a second in a debug
/// build), which would otherwise take most of the budget.
const MASK: &str = "mask:\n  patterns: ['corp-token-(?P<secret>[A-Za-z0-9]{32})', 'x{2,8}']\n";

fn corpus() -> [&'static str; 3] {
    [config::DEFAULT_CONFIG, FULL, MASK]
}

fn generate(rng: &mut Rng) -> String {
    let corpus = corpus();
    let base = if rng.chance(1, 8) { MASK } else { *rng.pick(&corpus[..2]) };
    mutate::mutate_text(rng, base, 8, KEYS, &corpus[..2])
}

#[expect(clippy::ptr_arg, reason = "a target's check takes a reference to what its generator makes")]
fn check(text: &String) {
    match config::parse(FILE, text) {
        Err(e) => super::policy::check_error(FILE, text, &e),
        Ok(c) => {
            // Each was compiled alone; together they must still make one masker.
            if let Some(patterns) = c.mask_patterns.as_ref().filter(|p| p.len() > 1) {
                crate::mask::Masker::new(patterns).unwrap_or_else(|e| panic!("accepted mask patterns do not compile together: {e}"));
            }
            for sink in c.sinks.iter().flatten() {
                // Names key spools and metrics: never empty.
                assert!(!sink.name().is_empty(), "a sink without a name: {sink:?}");
                if let SinkConfig::File { path, .. } = sink {
                    assert!(path.is_absolute());
                }
                if let SinkConfig::Network(n) = sink
                    && let config::Vendor::Kafka(k) = &n.vendor
                {
                    assert!(!k.brokers.is_empty() && !k.topic.is_empty(), "a kafka sink without brokers or topic: {k:?}");
                }
            }
        }
    }
}

#[test]
fn settings() {
    Target { name: "settings::settings", generate, check }.run();
}

#[test]
fn the_corpus_is_valid() {
    for text in corpus() {
        config::parse(FILE, text).unwrap_or_else(|e| panic!("{e}"));
    }
}
