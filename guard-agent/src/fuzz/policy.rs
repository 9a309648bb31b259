//! Policy YAML: a policy that parses also compiles or gives a `file:line:column` error that
//! points into the file; nothing panics.
use super::{Rng, Target, mutate};
use crate::policy::{self, PolicyError, compile};

const FILE: &str = "fuzz.yaml";

/// Every key and most value shapes the policy language has, beside the embedded default.
const FULL: &str = r#"mode: audit
agents:
  - name: builder
    mode: enforce
    match:
      cgroup: ["guard/builder/*", "ci.slice/**"]
      systemd_unit: "agent-*.service"
      container:
        - { runtime: docker, id: "3f*", name: "coder-?", image: "ghcr.io/acme/*", labels: { team: ml } }
        - { runtime: crio, pod: { namespace: agents, name: "web-*", uid: "0c5b*", labels: { app: coder } } }
      pod: { namespace: "ai-*" }
    exec:
      deny:
        - path: /usr/bin/shred
        - path_prefix: /opt/danger/
          message: nothing from there
        - basename_prefix: mkfs
        - basename: curl
          argv_any: ["--upload-file", "-T"]
          argv_all: [-X, PUT]
          argv_glob: ["http://*", "*@*"]
          cwd_prefix: /home
          uid: [0, 1000]
      hold:
        - basename: psql
          approve_timeout: 90s
        - basename: sqlite3
          sql: [destructive, uninspectable]
      allow:
        - path: /usr/bin/ls
    network:
      default: deny
      raw_sockets: allow
      dns_grace: 2s
      allow:
        - cidr: 127.0.0.0/8
        - cidr: "::1/128"
          ports: [53, "8000-8999"]
        - host: "*.example.com"
          ports: [443]
      deny:
        - cidr: 169.254.169.254/32
          message: metadata
    exfil:
      sensitive_paths: ["/home/*/.ssh/**", "**/.env", /etc/shadow, { path: "**/.ssh/id_*", action: deny }]
      after_sensitive_read: kill
      egress_budget: { bytes: 1MiB, per: 10s, action: kill }
      budget_exempt: [10.0.0.0/8]
      dns_tunnel: { max_name_length: 100, max_label_length: 40, max_label_entropy: 3.5, max_queries: 10, per: 5s }
    files:
      protect:
        - path: /srv/data/**
          deny: [delete, rename, truncate, write]
          message: the data
        - path: "/home/*/.ssh"
          deny: write
  - name: reviewer
    match: { cgroup: "guard/reviewer/*" }
    network: { default: allow, deny: [{ cidr: "0.0.0.0/0", ports: ["1-1023"] }] }
"#;

const KEYS: &[&str] = &[
    "mode", "agents", "name", "match", "cgroup", "systemd_unit", "exec", "deny", "hold", "allow", "path", "path_prefix", "basename",
    "basename_prefix", "argv_any", "argv_all", "argv_glob", "cwd_prefix", "uid", "action", "approve_timeout", "message", "network",
    "default", "raw_sockets", "dns_grace", "cidr", "host", "ports", "exfil", "sensitive_paths", "after_sensitive_read",
    "egress_budget", "bytes", "per", "budget_exempt", "dns_tunnel", "max_name_length", "max_label_length", "max_label_entropy",
    "max_queries", "files", "protect", "bogus",
];

/// The smallest policy, and the design brief's example.
const SMALL: &[&str] = &[
    "agents:\n  - name: a\n    match: { cgroup: \"guard/a/*\" }\n",
    r#"mode: enforce
agents:
  - name: coding-agent
    match:
      cgroup: "guard/coding-agent/*"
    exec:
      deny:
        - path: /usr/bin/shred
        - basename_prefix: mkfs
        - path: /usr/bin/rm
          argv_any: ["--no-preserve-root"]
      hold:
        - basename: psql
          approve_timeout: 120s
    network:
      default: deny
      allow:
        - cidr: 127.0.0.0/8
        - host: api.anthropic.com
          ports: [443]
      deny:
        - cidr: 169.254.169.254/32
    exfil:
      sensitive_paths: ["/home/*/.ssh/**", "**/.env", "/etc/shadow"]
      after_sensitive_read: allowlist-only
      egress_budget: { bytes: 8MiB, per: 60s, action: kill }
"#,
];

fn corpus() -> Vec<&'static str> {
    [policy::DEFAULT_POLICY, FULL].into_iter().chain(SMALL.iter().copied()).collect()
}

fn generate(rng: &mut Rng) -> String {
    let corpus = corpus();
    // The default policy is the largest (a quarter of a second to parse in a debug build, its
    // globs): the others are mutated more often so more inputs run in the budget.
    let base = if rng.chance(1, 6) { policy::DEFAULT_POLICY } else { *rng.pick(&corpus[1..]) };
    mutate::mutate_text(rng, base, 8, KEYS, &corpus)
}

/// Lines as YAML counts them: a lone `\r` breaks a line too (as in most editors).
fn yaml_lines(text: &str) -> usize {
    text.replace("\r\n", "\n").split(['\n', '\r']).count()
}

/// The error points inside the text (or just past its end) and reads `file:line:col: message`.
pub fn check_error(file: &str, text: &str, e: &PolicyError) {
    let lines = yaml_lines(text);
    assert_eq!(e.file, file);
    assert!(e.pos.line >= 1 && e.pos.line <= lines, "line {} of a {lines}-line text: {e}", e.pos.line);
    assert!(e.pos.col >= 1, "column {}: {e}", e.pos.col);
    assert!(!e.message.is_empty(), "an empty message at {}:{}", e.pos.line, e.pos.col);
    assert!(e.to_string().starts_with(&format!("{file}:{}:{}: ", e.pos.line, e.pos.col)));
}

#[expect(clippy::ptr_arg, reason = "a target's check takes a reference to what its generator makes")]
fn check(text: &String) {
    match policy::parse::parse(FILE, text) {
        Err(e) => check_error(FILE, text, &e),
        Ok(p) => {
            assert!(!p.agents.is_empty(), "a policy without agents parsed");
            assert_eq!(p.hash, policy::hash_text(text));
            // Both halves of the policy-id space (a reload compiles into the other half).
            let base = if text.len().is_multiple_of(2) { 0 } else { guard_common::POLICY_SLOTS / 2 };
            match compile::compile(&p, base) {
                Err(e) => check_error(FILE, text, &e),
                Ok(c) => {
                    for a in &c.agents {
                        assert!(c.owns(a.policy_id), "agent {} has policy id {} outside base {base}", a.name, a.policy_id);
                    }
                }
            }
        }
    }
}

#[test]
fn policy() {
    Target { name: "policy::policy", generate, check }.run();
}

#[test]
fn the_corpus_is_valid() {
    for text in corpus() {
        let p = policy::parse::parse(FILE, text).unwrap_or_else(|e| panic!("{e}"));
        compile::compile(&p, 0).unwrap_or_else(|e| panic!("{e}"));
    }
}
