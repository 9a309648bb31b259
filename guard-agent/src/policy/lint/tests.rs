use super::*;
use crate::policy::{compile::compile, parse::parse};

/// The warnings `policy check` would print for `text` (a policy touching no files).
fn warnings(text: &str) -> Vec<String> {
    compile(&parse("p.yaml", text).unwrap(), 0).unwrap().warnings
}

fn error(text: &str) -> String {
    match parse("p.yaml", text) {
        Err(e) => e.to_string(),
        Ok(p) => compile(&p, 0).unwrap_err().to_string(),
    }
}

fn agent(body: &str) -> String {
    format!("agents:\n  - name: a\n{body}")
}

#[test]
fn a_clean_policy_has_no_warnings() {
    let p = agent("    exec:\n      deny:\n        - basename: shred\n        - basename: rm\n          argv_any: [\"/\"]\n    network:\n      deny:\n        - cidr: 10.0.0.0/8\n          ports: [22]\n      allow:\n        - cidr: 10.0.0.0/8\n        - host: api.example.com\n");
    assert_eq!(warnings(&p), Vec::<String>::new());
    assert_eq!(warnings(crate::policy::DEFAULT_POLICY).len(), 0, "{:?}", warnings(crate::policy::DEFAULT_POLICY));
}

#[test]
fn v4_mapped_cidrs_become_ipv4() {
    let p = parse("p.yaml", &agent("    network:\n      deny:\n        - cidr: ::ffff:127.0.0.3/128\n        - cidr: \"::ffff:10.0.0.0/104\"\n        - cidr: ::ffff:0:0/96\n    exfil:\n      egress_budget: { bytes: 1MiB, per: 1s }\n      budget_exempt: [\"::ffff:127.0.0.1\"]\n")).unwrap();
    let net = &p.agents[0].network.rules;
    let shown: Vec<String> = net.iter().map(|r| r.cidr.to_string()).collect();
    assert_eq!(shown, ["127.0.0.3/32", "10.0.0.0/8", "0.0.0.0/0"]);
    assert_eq!(p.agents[0].exfil.as_ref().unwrap().budget_exempt[0].to_string(), "127.0.0.1/32");
    let c = compile(&p, 0).unwrap();
    // All in the IPv4 table, where the kernel looks for a v4-mapped destination.
    assert_eq!((c.net_v4.len(), c.net_v6.len()), (3, 0));
    let (len, key, _) = c.net_v4.iter().find(|(l, ..)| *l == 64).unwrap();
    assert_eq!((*len, key.addr), (64, [127, 0, 0, 3]));
    assert_eq!((c.exempt_v4.len(), c.exempt_v6.len()), (1, 0));
    assert!(c.rules.iter().any(|r| r.matcher == "cidr: 127.0.0.3/32"), "{:?}", c.rules);
    assert_eq!(c.warnings, Vec::<String>::new());
}

#[test]
fn a_v6_prefix_holding_the_mapped_block_fires_only_for_native_ipv6() {
    let w = warnings(&agent("    network:\n      deny:\n        - cidr: ::/0\n        - cidr: ::/64\n        - cidr: 2001:db8::/32\n    exfil:\n      egress_budget: { bytes: 1MiB, per: 1s }\n      budget_exempt: [\"::/8\"]\n"));
    assert_eq!(w.len(), 3, "{w:?}");
    assert_eq!(w[0], "p.yaml:5:11: warning: `::/0` contains the IPv4-mapped addresses (::ffff:0:0/96), but the kernel judges those destinations as IPv4, by the IPv4 entries: only its native IPv6 part can fire (add an IPv4 entry such as 0.0.0.0/0 for the rest)");
    assert!(w[1].starts_with("p.yaml:6:11: warning: `::/64` contains the IPv4-mapped"), "{w:?}");
    assert!(w[2].starts_with("p.yaml:9:7: warning: budget_exempt `::/8` contains the IPv4-mapped addresses (::ffff:0:0/96), but the kernel judges those packets as IPv4"), "{w:?}");
}

#[test]
fn names_longer_than_comm_match_only_the_files_own_name() {
    let w = warnings(&agent("    exec:\n      deny:\n        - basename: a-long-tool-nam\n        - basename_prefix: a-long-prefix-x\n        - basename: fourteen-bytes\n"));
    assert_eq!(w, [
        "p.yaml:5:11: warning: `basename: a-long-tool-nam` is 15 bytes: the kernel's comm (the name it was invoked as) holds 14 whole bytes at most, so only the executed file's own name can match, not a symlink of another name pointing at it",
        "p.yaml:6:11: warning: `basename_prefix: a-long-prefix-x` is 15 bytes: the kernel's comm (the name it was invoked as) holds 14 whole bytes at most, so only the executed file's own name can match, not a symlink of another name pointing at it",
    ]);
    // A name the kernel reads whole nowhere is refused.
    let long = "x".repeat(63);
    assert_eq!(error(&agent(&format!("    exec:\n      deny:\n        - basename: {long}\n"))), format!("p.yaml:5:21: `basename` `{long}` must not contain `/` and is at most 62 bytes"));
    assert_eq!(error(&agent("    exec:\n      deny:\n        - basename: ..\n")), "p.yaml:5:21: `basename: ..` names no file: it can never match");
}

#[test]
fn shadowed_exec_rules() {
    let w = warnings(&agent("    exec:\n      deny:\n        - basename: x\n        - basename: x\n          argv_any: [-f]\n        - basename: y\n          argv_any: [-f]\n        - basename: y\n          argv_any: [-f]\n        - basename: z\n          argv_any: [-f]\n      hold:\n        - basename: x\n        - basename: z\n"));
    assert_eq!(w, [
        "p.yaml:6:11: warning: rule never decides: the `exec.deny` rule at line 5 matches every exec this one does and outranks it (kill beats kill: kill, hold, audit, allow)",
        "p.yaml:10:11: warning: rule never decides: the `exec.deny` rule at line 8 repeats it, and the first decides",
        "p.yaml:15:11: warning: rule never decides: the `exec.deny` rule at line 5 matches every exec this one does and outranks it (kill beats hold: kill, hold, audit, allow)",
    ]);
    // (A hold with no conditions is not hidden by a kill that needs some: `z` above.) An
    // allow that needs a cwd never decides beside a kill of the same binary that needs none.
    let w = warnings(&agent("    exec:\n      allow:\n        - basename: git\n          cwd_prefix: /srv\n      deny:\n        - basename: git\n"));
    assert_eq!(w, ["p.yaml:5:11: warning: rule never decides: the `exec.deny` rule at line 8 matches every exec this one does and outranks it (kill beats allow: kill, hold, audit, allow)"]);
}

#[test]
fn shadowed_network_rules() {
    let w = warnings(&agent("    network:\n      allow:\n        - cidr: 10.0.0.0/8\n          ports: [443]\n        - cidr: 10.1.0.0/16\n          ports: [22]\n      deny:\n        - cidr: 10.0.0.0/8\n        - cidr: 10.1.0.0/16\n          ports: [\"20-30\"]\n        - cidr: 10.1.0.0/16\n          ports: [25]\n"));
    assert_eq!(w, [
        "p.yaml:13:11: warning: rule never decides: every port it names at 10.1.0.0/16 is decided first by the rule(s) at line 11",
        "p.yaml:5:11: warning: rule never decides: every port it names at 10.0.0.0/8 is decided first by the rule(s) at line 10 (at one prefix, deny rules come before allow rules)",
        "p.yaml:7:11: warning: rule never decides: every port it names at 10.1.0.0/16 is decided first by the rule(s) at line 11 (at one prefix, deny rules come before allow rules)",
    ]);
    // A longer prefix is never hidden by a shorter one, and partly covered ports still fire.
    let w = warnings(&agent("    network:\n      deny:\n        - cidr: 10.0.0.0/8\n          ports: [\"1-100\"]\n      allow:\n        - cidr: 10.0.0.1/32\n        - cidr: 10.0.0.0/8\n          ports: [\"50-200\"]\n"));
    assert_eq!(w, Vec::<String>::new());
}

#[test]
fn port_coverage() {
    assert!(covered(&[(5, 10)], &[(1, 6), (7, 12)]));
    assert!(!covered(&[(5, 10)], &[(1, 6), (8, 12)]));
    assert!(covered(&[(0, 65535)], &[(0, 65535)]));
    assert!(!covered(&[(0, 65535)], &[(1, 65535)]));
    assert!(!covered(&[(1, 1)], &[]));
}

#[test]
fn shadowed_host_rules() {
    let w = warnings(&agent("    network:\n      allow:\n        - host: \"*.example.com\"\n          ports: [443]\n        - host: api.example.com\n          ports: [443]\n        - host: api.example.com\n        - host: \"*.eu.example.com\"\n          ports: [443]\n        - host: example.com\n          ports: [443]\n"));
    assert_eq!(w, [
        "p.yaml:7:11: warning: rule never decides: every name and port it allows is allowed first by the host rule(s) at line 5",
        "p.yaml:10:11: warning: rule never decides: every name and port it allows is allowed first by the host rule(s) at line 5",
    ]);
}

#[test]
fn budget_exempt_without_a_budget() {
    let w = warnings(&agent("    exfil:\n      budget_exempt: [10.0.0.0/8]\n"));
    assert_eq!(w, ["p.yaml:4:7: warning: `budget_exempt` has no effect: the agent has no `egress_budget` to exempt from"]);
}

#[test]
fn cgroup_matches_that_cannot_fire() {
    assert_eq!(
        error("agents:\n  - name: a\n    match: {cgroup: \"guard/x/*\"}\n  - name: b\n    match: {cgroup: \"guard/x\"}\n"),
        "p.yaml:5:21: `guard/x` can never apply: agent `a` already matches the same cgroups (line 3), and the kernel registers a cgroup for one agent only"
    );
    assert_eq!(
        error("agents:\n  - name: a\n    match: {systemd_unit: \"agent-*.service\"}\n  - name: b\n    match: {systemd_unit: \"agent-*.service\"}\n"),
        "p.yaml:5:27: `systemd_unit: agent-*.service` can never apply: agent `a` already matches the same cgroups (line 3), and the first agent whose glob matches a cgroup gets it"
    );
    assert_eq!(
        error("agents:\n  - name: a\n    match: {cgroup: \"guard/a\\nb\"}\n"),
        "p.yaml:3:21: cgroup glob `guard/a\\nb` can never match: cgroup names cannot contain a newline or a NUL byte"
    );
    let long = "n".repeat(256);
    assert!(error(&format!("agents:\n  - name: a\n    match: {{cgroup: \"guard/{long}/*\"}}\n")).contains("is longer than a cgroup name can be (255 bytes)"));
    let w = warnings("agents:\n  - name: a\n    match:\n      cgroup: [\"/sys/fs/cgroup/guard/a/*\", \"guard/a/*\", \"guard/a/**\"]\n      systemd_unit: \"my agent.service\"\n");
    assert_eq!(w, [
        "p.yaml:4:16: warning: `/sys/fs/cgroup/guard/a/*` looks like a filesystem path: cgroup globs are relative to the cgroup v2 root, so this one means `<root>/sys/fs/cgroup/guard/a`; drop the mount point",
        "p.yaml:4:57: warning: `guard/a/**` repeats the match at line 4",
        "p.yaml:5:21: warning: `my agent.service` has characters no systemd unit name has (systemd escapes them as \\xNN): only a hand-made cgroup of that name can match",
    ]);
}

#[test]
fn impossible_conditions_and_paths() {
    assert_eq!(error(&agent("    exec:\n      deny:\n        - path: /usr/bin/rm/\n")), "p.yaml:5:17: `path: /usr/bin/rm/` ends in `/`, so it names no file that can run; use `path_prefix` for a directory");
    assert_eq!(error(&agent("    exec:\n      deny:\n        - basename: rm\n          argv_any: [\"a\\0b\"]\n")), "p.yaml:6:22: an entry of `argv_any` contains a NUL byte: no argument can, so it never matches");
    let w = warnings(&agent("    exec:\n      deny:\n        - basename: rm\n          uid: [0, 4294967295]\n"));
    assert_eq!(w, ["p.yaml:5:11: warning: uid 4294967295 is (uid_t)-1, which no process runs as: that entry never matches"]);
    let long = format!("/{}", "d".repeat(251));
    assert_eq!(error(&agent(&format!("    exec:\n      deny:\n        - path_prefix: {long}\n"))), "p.yaml:5:24: `path_prefix` is longer than 251 bytes");
}

#[test]
fn sql_conditions_on_a_program_that_is_no_database_client() {
    let w = warnings(&agent("    exec:\n      deny:\n        - basename: sqlite3\n          sql: destructive\n        - path: /usr/bin/psql\n          sql: destructive\n        - basename: bash\n          sql: destructive\n"));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("p.yaml:9:11: warning: `sql` conditions read the statements of a database client (psql,"), "{w:?}");
    assert!(w[0].ends_with("`bash` is none of them, so every exec of it counts as uninspectable"), "{w:?}");
}
