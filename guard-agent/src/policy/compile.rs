//! Policy model -> the entries of the kernel maps, plus the rule table verdicts are named from.
use std::net::IpAddr;

use guard_common::{
    BASENAME_LEN, ExecInodeKey, ExecNameKey, ExecNamePrefixKey, ExecPathKey, ExecPrefixKey,
    ExecRule as KernelExecRule, FILENAME_LEN, PREFIX_PATH_LEN,
    MAX_PORT_RANGES, NET_ALLOW, NET_DENY, NetKeyV4, NetKeyV6, NetRule as KernelNetRule,
    POLICY_FLAG_ALLOW_RAW_SOCKETS, POLICY_FLAG_AUDIT, PolicyConfig, PortRange,
};

use super::{Agent, CgroupMatch, ExecMatcher, Mode, NetAction, Policy, PolicyError, Pos};

/// What a verdict says about the rule that decided it.
#[derive(Debug, Clone)]
pub struct RuleInfo {
    pub id: u32,
    /// `exec.deny`, `network.deny` or `network.allow`.
    pub section: &'static str,
    /// The matcher as written, e.g. `basename: shred` or `cidr: 10.0.0.0/8 ports: 22`.
    pub matcher: String,
    pub message: Option<String>,
    /// `file:line` of the rule.
    pub location: String,
}

#[derive(Debug, Clone)]
pub struct AgentEntry {
    pub name: String,
    pub policy_id: u32,
    pub config: PolicyConfig,
    pub cgroups: Vec<CgroupMatch>,
}

/// Everything the loader writes into the maps, and the tables to name verdicts with.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub source: String,
    pub hash: String,
    pub agents: Vec<AgentEntry>,
    /// Indexed by rule id - 1.
    pub rules: Vec<RuleInfo>,
    pub exec_paths: Vec<(ExecPathKey, KernelExecRule)>,
    pub exec_names: Vec<(ExecNameKey, KernelExecRule)>,
    /// (trie prefix length, key, value)
    pub exec_prefixes: Vec<(u32, ExecPrefixKey, KernelExecRule)>,
    pub exec_name_prefixes: Vec<(u32, ExecNamePrefixKey, KernelExecRule)>,
    /// Files of `path` rules and directories of `path_prefix` rules, by identity.
    pub exec_inodes: Vec<(ExecInodeKey, KernelExecRule)>,
    /// What compiled but may not do what its author expects (e.g. a path that does not exist:
    /// only its name can match until the policy is reloaded).
    pub warnings: Vec<String>,
    /// (trie prefix length, key, value)
    pub net_v4: Vec<(u32, NetKeyV4, KernelNetRule)>,
    pub net_v6: Vec<(u32, NetKeyV6, KernelNetRule)>,
}

impl Compiled {
    pub fn rule(&self, id: u32) -> Option<&RuleInfo> {
        self.rules.get((id as usize).checked_sub(1)?)
    }

    pub fn agent(&self, policy_id: u32) -> Option<&AgentEntry> {
        self.agents.get((policy_id as usize).checked_sub(1)?)
    }
}

pub fn compile(policy: &Policy) -> Result<Compiled, PolicyError> {
    let mut out = Compiled {
        source: policy.source.clone(),
        hash: policy.hash.clone(),
        agents: Vec::new(),
        rules: Vec::new(),
        exec_paths: Vec::new(),
        exec_names: Vec::new(),
        exec_prefixes: Vec::new(),
        exec_name_prefixes: Vec::new(),
        exec_inodes: Vec::new(),
        warnings: Vec::new(),
        net_v4: Vec::new(),
        net_v6: Vec::new(),
    };
    for (i, agent) in policy.agents.iter().enumerate() {
        let policy_id = i as u32 + 1;
        let audit = agent.mode.unwrap_or(policy.mode) == Mode::Audit;
        let raw = agent.network.raw_sockets == NetAction::Allow;
        let config = PolicyConfig {
            flags: (if audit { POLICY_FLAG_AUDIT } else { 0 }) | (if raw { POLICY_FLAG_ALLOW_RAW_SOCKETS } else { 0 }),
            net_default: match agent.network.default {
                NetAction::Allow => NET_ALLOW,
                NetAction::Deny => NET_DENY,
            },
        };
        out.agents.push(AgentEntry { name: agent.name.clone(), policy_id, config, cgroups: agent.cgroups.clone() });
        compile_exec(&mut out, policy, agent, policy_id)?;
        compile_net(&mut out, policy, agent, policy_id)?;
    }
    Ok(out)
}

fn add_rule(out: &mut Compiled, policy: &Policy, section: &'static str, matcher: String, message: &Option<String>, pos: Pos) -> u32 {
    let id = out.rules.len() as u32 + 1;
    out.rules.push(RuleInfo {
        id,
        section,
        matcher,
        message: message.clone(),
        location: format!("{}:{}", policy.source, pos.line),
    });
    id
}

fn compile_exec(out: &mut Compiled, policy: &Policy, agent: &Agent, policy_id: u32) -> Result<(), PolicyError> {
    for rule in &agent.exec_deny {
        let rule_id = add_rule(out, policy, "exec.deny", rule.matcher.to_string(), &rule.message, rule.pos);
        let value = KernelExecRule { rule_id, _reserved: 0 };
        let policy_id_be = policy_id.to_be_bytes();
        // The first rule for a key decides; a later duplicate keeps its id but is shadowed.
        match &rule.matcher {
            ExecMatcher::Path(p) => {
                let key = ExecPathKey { policy_id, path: padded::<FILENAME_LEN>(p) };
                if !out.exec_paths.iter().any(|(k, _)| k.policy_id == policy_id && k.path == key.path) {
                    out.exec_paths.push((key, value));
                }
                match identity(p) {
                    Some((_, _, true)) => {
                        return Err(PolicyError {
                            file: policy.source.clone(),
                            pos: rule.pos,
                            message: format!("`path: {p}` names a directory; use `path_prefix` for what lies below it"),
                        });
                    }
                    Some((dev, ino, false)) => push_inode(out, ExecInodeKey { policy_id, dev, ino }, value),
                    None => out.warnings.push(format!(
                        "{}:{}: `{p}` does not exist: only execs naming exactly this path are denied, not links to it",
                        policy.source, rule.pos.line
                    )),
                }
            }
            ExecMatcher::PathPrefix(p) => {
                let len = 32 + 8 * p.len() as u32;
                out.exec_prefixes.push((len, ExecPrefixKey { policy_id_be, path: padded_exact::<PREFIX_PATH_LEN>(p) }, value));
                match identity(p) {
                    Some((dev, ino, true)) => push_inode(out, ExecInodeKey { policy_id, dev, ino }, value),
                    _ => out.warnings.push(format!(
                        "{}:{}: directory `{p}` does not exist: only execs naming a path under it are denied",
                        policy.source, rule.pos.line
                    )),
                }
            }
            ExecMatcher::Basename(b) => {
                let key = ExecNameKey { policy_id, name: padded::<BASENAME_LEN>(b) };
                if !out.exec_names.iter().any(|(k, _)| k.policy_id == policy_id && k.name == key.name) {
                    out.exec_names.push((key, value));
                }
            }
            ExecMatcher::BasenamePrefix(b) => {
                let len = 32 + 8 * b.len() as u32;
                out.exec_name_prefixes.push((len, ExecNamePrefixKey { policy_id_be, name: padded_exact::<BASENAME_LEN>(b) }, value));
            }
        }
    }
    Ok(())
}

fn push_inode(out: &mut Compiled, key: ExecInodeKey, value: KernelExecRule) {
    if !out.exec_inodes.iter().any(|(k, _)| *k == key) {
        out.exec_inodes.push((key, value));
    }
}

/// (kernel `s_dev`, inode, is a directory) of what `path` names, following symlinks.
fn identity(path: &str) -> Option<(u32, u64, bool)> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    let dev = meta.dev();
    // The kernel's dev_t is MAJOR << 20 | MINOR; userspace's st_dev encodes them differently.
    let kdev = (libc::major(dev) << 20) | libc::minor(dev);
    Some((kdev, meta.ino(), meta.is_dir()))
}

/// `s` in a zeroed buffer, without requiring a terminating NUL (prefix keys compare only the
/// prefix's bits).
fn padded_exact<const N: usize>(s: &str) -> [u8; N] {
    let mut buf = [0u8; N];
    let n = s.len().min(N);
    buf[..n].copy_from_slice(&s.as_bytes()[..n]);
    buf
}

/// The parser bounds lengths below N, so the string always ends in at least one NUL.
fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut buf = [0u8; N];
    let n = s.len().min(N - 1);
    buf[..n].copy_from_slice(&s.as_bytes()[..n]);
    buf
}

/// One distinct prefix of one agent with the port ranges its own rules give it.
struct Prefix {
    addr: IpAddr,
    len: u8,
    /// Own deny ranges first, then own allow ranges (deny wins at equal length).
    own: Vec<PortRange>,
    pos: Pos,
}

fn compile_net(out: &mut Compiled, policy: &Policy, agent: &Agent, policy_id: u32) -> Result<(), PolicyError> {
    let mut prefixes: Vec<Prefix> = Vec::new();
    for action in [NetAction::Deny, NetAction::Allow] {
        for rule in agent.network.rules.iter().filter(|r| r.action == action) {
            let section = if action == NetAction::Deny { "network.deny" } else { "network.allow" };
            let mut matcher = format!("cidr: {}", rule.cidr);
            if !rule.ports.is_empty() {
                let ports: Vec<String> = rule.ports.iter().map(|(lo, hi)| if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") }).collect();
                matcher.push_str(&format!(" ports: {}", ports.join(",")));
            }
            let rule_id = add_rule(out, policy, section, matcher, &rule.message, rule.pos);
            let kernel_action = if action == NetAction::Deny { NET_DENY } else { NET_ALLOW };
            let ranges: Vec<(u16, u16)> = if rule.ports.is_empty() { vec![(0, u16::MAX)] } else { rule.ports.clone() };
            let idx = match prefixes.iter().position(|p| p.addr == rule.cidr.addr && p.len == rule.cidr.len) {
                Some(i) => i,
                None => {
                    prefixes.push(Prefix { addr: rule.cidr.addr, len: rule.cidr.len, own: Vec::new(), pos: rule.pos });
                    prefixes.len() - 1
                }
            };
            prefixes[idx].own.extend(ranges.into_iter().map(|(lo, hi)| PortRange { lo, hi, action: kernel_action, rule_id }));
        }
    }
    for p in &prefixes {
        // This prefix's ranges, then those of every enclosing prefix, longest first: one trie
        // lookup then yields everything needed to decide.
        let mut enclosing: Vec<&Prefix> = prefixes.iter().filter(|q| q.len < p.len && contains(q, p)).collect();
        enclosing.sort_by(|a, b| b.len.cmp(&a.len));
        let ranges: Vec<PortRange> = p.own.iter().chain(enclosing.iter().flat_map(|q| q.own.iter())).copied().collect();
        if ranges.len() > MAX_PORT_RANGES {
            return Err(PolicyError {
                file: policy.source.clone(),
                pos: p.pos,
                message: format!(
                    "{} port ranges apply to {}/{} (with those of enclosing prefixes); at most {MAX_PORT_RANGES} can",
                    ranges.len(), p.addr, p.len
                ),
            });
        }
        let mut value = KernelNetRule { count: ranges.len() as u32, _pad: 0, ranges: [PortRange::default(); MAX_PORT_RANGES] };
        value.ranges[..ranges.len()].copy_from_slice(&ranges);
        let policy_id_be = policy_id.to_be_bytes();
        match p.addr {
            IpAddr::V4(a) => out.net_v4.push((32 + u32::from(p.len), NetKeyV4 { policy_id_be, addr: a.octets() }, value)),
            IpAddr::V6(a) => out.net_v6.push((32 + u32::from(p.len), NetKeyV6 { policy_id_be, addr: a.octets() }, value)),
        }
    }
    Ok(())
}

/// Does prefix `outer` contain prefix `inner`? (Both have host bits cleared.)
fn contains(outer: &Prefix, inner: &Prefix) -> bool {
    match (outer.addr, inner.addr) {
        (IpAddr::V4(o), IpAddr::V4(i)) => {
            let m = if outer.len == 0 { 0 } else { u32::MAX << (32 - outer.len) };
            u32::from(i) & m == u32::from(o)
        }
        (IpAddr::V6(o), IpAddr::V6(i)) => {
            let m = if outer.len == 0 { 0 } else { u128::MAX << (128 - outer.len) };
            u128::from(i) & m == u128::from(o)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse::parse;

    fn compiled(text: &str) -> Compiled {
        compile(&parse("p.yaml", text).unwrap()).unwrap()
    }

    /// What the kernel does with one trie entry: the first range containing the port decides.
    fn decide(rule: &KernelNetRule, port: u16) -> Option<(u32, u32)> {
        rule.ranges[..rule.count as usize].iter().find(|r| r.lo <= port && port <= r.hi).map(|r| (r.action, r.rule_id))
    }

    #[test]
    fn exec_keys_are_padded_and_per_policy() {
        let c = compiled("agents:\n  - name: a\n    exec:\n      deny:\n        - path: /usr/bin/shred\n        - basename: mkfs\n  - name: b\n    exec:\n      deny:\n        - basename: mkfs\n");
        assert_eq!(c.exec_paths.len(), 1);
        assert_eq!(&c.exec_paths[0].0.path[..15], b"/usr/bin/shred\0");
        assert_eq!(c.exec_names.len(), 2);
        assert_eq!((c.exec_names[0].0.policy_id, c.exec_names[1].0.policy_id), (1, 2));
        assert_eq!(c.rule(c.exec_names[1].1.rule_id).unwrap().location, "p.yaml:10");
        assert_eq!(c.rule(2).unwrap().matcher, "basename: mkfs");
        assert_eq!(c.rule(2).unwrap().location, "p.yaml:6");
    }

    #[test]
    fn longer_prefix_wins_and_deny_wins_at_equal_length() {
        let c = compiled(
            "agents:\n  - name: a\n    network:\n      default: deny\n      allow:\n        - cidr: 10.0.0.0/8\n        - cidr: 10.1.0.0/16\n          ports: [443]\n      deny:\n        - cidr: 10.1.0.0/16\n          ports: [\"400-500\"]\n",
        );
        assert_eq!(c.net_v4.len(), 2);
        let (len16, key16, rule16) = c.net_v4.iter().find(|(l, ..)| *l == 48).unwrap();
        assert_eq!(*len16, 32 + 16);
        assert_eq!(key16.addr, [10, 1, 0, 0]);
        assert_eq!(key16.policy_id_be, [0, 0, 0, 1]);
        // 443 is both allowed and denied at /16: deny wins.
        assert_eq!(decide(rule16, 443).unwrap().0, NET_DENY);
        // 22 is not named at /16: the enclosing /8 allow applies.
        assert_eq!(decide(rule16, 22).unwrap().0, NET_ALLOW);
        let (_, _, rule8) = c.net_v4.iter().find(|(l, ..)| *l == 40).unwrap();
        assert_eq!(decide(rule8, 443).unwrap().0, NET_ALLOW);
    }

    #[test]
    fn too_many_ranges_is_an_error() {
        let ports: Vec<String> = (1..=17).map(|p| p.to_string()).collect();
        let text = format!("agents:\n  - name: a\n    network:\n      deny:\n        - cidr: ::1\n          ports: [{}]\n", ports.join(", "));
        let e = compile(&parse("p.yaml", &text).unwrap()).unwrap_err();
        assert!(e.to_string().starts_with("p.yaml:5:11: 17 port ranges apply to ::1/128"), "{e}");
    }

    #[test]
    fn paths_resolve_to_identities_and_prefixes_to_trie_keys() {
        let dir = std::env::temp_dir().join(format!("guard-compile-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tools")).unwrap();
        std::fs::write(dir.join("tool"), b"").unwrap();
        let d = dir.display();
        let c = compiled(&format!(
            "agents:\n  - name: a\n    exec:\n      deny:\n        - path: {d}/tool\n        - path_prefix: {d}/tools\n        - basename_prefix: mkfs\n        - path: {d}/missing\n"
        ));
        use std::os::unix::fs::MetadataExt as _;
        let inos: Vec<u64> = c.exec_inodes.iter().map(|(k, _)| k.ino).collect();
        assert_eq!(inos, vec![std::fs::metadata(dir.join("tool")).unwrap().ino(), std::fs::metadata(dir.join("tools")).unwrap().ino()]);
        let prefix = format!("{d}/tools/");
        assert_eq!(c.exec_prefixes[0].0, 32 + 8 * prefix.len() as u32);
        assert_eq!(&c.exec_prefixes[0].1.path[..prefix.len()], prefix.as_bytes());
        assert_eq!(c.exec_name_prefixes[0].0, 32 + 32);
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("missing` does not exist"), "{:?}", c.warnings);
        let e = compile(&parse("p.yaml", &format!("agents:\n  - name: a\n    exec:\n      deny:\n        - path: {d}/tools\n")).unwrap()).unwrap_err();
        assert!(e.to_string().contains("names a directory; use `path_prefix`"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn audit_mode_per_agent() {
        let c = compiled("mode: audit\nagents:\n  - name: a\n  - name: b\n    mode: enforce\n");
        assert_eq!(c.agents[0].config.flags & POLICY_FLAG_AUDIT, POLICY_FLAG_AUDIT);
        assert_eq!(c.agents[1].config.flags & POLICY_FLAG_AUDIT, 0);
    }
}
