//! Policy model -> the entries of the kernel maps, plus the rule table verdicts are named from.
use std::net::IpAddr;

use globset::{GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};
use guard_common::{
    BASENAME_LEN, EXEC_ACTION_ALLOW, EXEC_ACTION_AUDIT, EXEC_ACTION_HOLD, EXEC_ACTION_KILL,
    ExecInodeKey, ExecNameKey, ExecNamePrefixKey, ExecPathKey, ExecPrefixKey,
    ExecRule as KernelExecRule, FILENAME_LEN, MAX_PORT_RANGES, NET_ALLOW, NET_DENY, NetKeyV4,
    NetKeyV6, NetRule as KernelNetRule, POLICY_FLAG_ALLOW_RAW_SOCKETS, POLICY_FLAG_AUDIT,
    POLICY_FLAG_EXEC_ALLOWLIST, POLICY_SLOTS, PREFIX_PATH_LEN, PolicyConfig, PortRange,
};

use super::{Agent, CgroupMatch, ExecAction, ExecMatcher, ExecRule, Mode, NetAction, Policy, PolicyError, Pos};

/// Agents one policy may hold: policy ids alternate between two halves of the slots.
pub const MAX_AGENTS: usize = (POLICY_SLOTS / 2 - 1) as usize;

/// A glob as the policy means it: `*` and `?` stay within one path component when
/// `paths` (cgroup paths), and match anything in an argument otherwise.
pub fn glob(pattern: &str, paths: bool) -> Result<GlobMatcher, globset::Error> {
    Ok(GlobBuilder::new(pattern).literal_separator(paths).backslash_escape(true).build()?.compile_matcher())
}

/// What a verdict says about the rule that decided it.
#[derive(Debug, Clone)]
pub struct RuleInfo {
    pub id: u32,
    /// `exec.deny`, `exec.hold`, `exec.allow`, `network.deny` or `network.allow`.
    pub section: &'static str,
    /// `kill`, `hold`, `audit`, `allow`, `deny`.
    pub action: &'static str,
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
    pub mode: Mode,
    pub config: PolicyConfig,
    pub cgroups: Vec<CgroupMatch>,
    /// Globs of `cgroups` that the daemon matches (index into `cgroups`, matcher).
    pub cgroup_globs: Vec<(usize, GlobMatcher)>,
    /// `match.container` / `match.pod`: container cgroups the daemon registers.
    pub containers: Vec<crate::container::matcher::ContainerMatch>,
    /// Exec rules as the daemon evaluates them (holds, argv conditions, `policy explain`).
    pub exec: Vec<EvalRule>,
    /// With `exec.allow`: the rule id an exec off the allow list is killed by.
    pub allowlist_rule: Option<u32>,
    pub exfil_config: guard_common::ExfilConfig,
    pub exfil: super::exfil::ExfilEval,
    /// `network.allow: - host:` rules, with their rule ids.
    pub hosts: Vec<HostEntry>,
    pub dns_grace: std::time::Duration,
    /// `files.protect` rules, with their rule ids and matchers.
    pub files: Vec<super::files::ProtectEntry>,
    /// `files.delete_budget` as the kernel counts it (count 0: none), and as written.
    pub delete_budget: guard_common::DeleteConfig,
    pub delete_eval: Option<super::delete_budget::DeleteBudget>,
}

/// A host rule as the daemon applies it to DNS answers.
#[derive(Debug, Clone)]
pub struct HostEntry {
    pub rule_id: u32,
    pub pattern: crate::dns::HostPattern,
    /// Inclusive port ranges; empty means every port.
    pub ports: Vec<(u16, u16)>,
}

/// One exec rule, ready for the daemon to match.
#[derive(Debug, Clone)]
pub struct EvalRule {
    pub id: u32,
    pub rule: ExecRule,
    /// The file a `path` rule names, by (kernel dev, inode), if it exists.
    pub identity: Option<(u32, u64)>,
    /// A `path_prefix` directory with symlinks resolved, if it exists.
    pub canonical_dir: Option<String>,
    pub argv_glob: Option<GlobSet>,
}

/// Everything the loader writes into the maps, and the tables to name verdicts with.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub source: String,
    pub hash: String,
    /// Policy ids are `base + 1 ..= base + agents`.
    pub base: u32,
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
    /// `exfil.sensitive_paths`, for the kernel filter: (trie prefix length, key, value)
    pub sensitive: Vec<(u32, guard_common::SensKey, guard_common::SensRule)>,
    /// `exfil.budget_exempt`: (trie prefix length, key, 1)
    pub exempt_v4: Vec<(u32, NetKeyV4, u32)>,
    pub exempt_v6: Vec<(u32, NetKeyV6, u32)>,
}

impl Compiled {
    pub fn rule(&self, id: u32) -> Option<&RuleInfo> {
        self.rules.get((id as usize).checked_sub(1)?)
    }

    pub fn agent(&self, policy_id: u32) -> Option<&AgentEntry> {
        self.agents.get((policy_id.checked_sub(self.base)? as usize).checked_sub(1)?)
    }

    pub fn agent_named(&self, name: &str) -> Option<&AgentEntry> {
        self.agents.iter().find(|a| a.name == name)
    }

    /// The policy generation these ids belong to.
    pub fn generation(&self) -> u32 {
        guard_common::policy_generation(self.base)
    }

    /// Does `policy_id` belong to this compilation?
    pub fn owns(&self, policy_id: u32) -> bool {
        self.agent(policy_id).is_some()
    }
}

/// Compiles with policy ids from `base + 1` (`base`: a generation's first id, a multiple of
/// `POLICY_GENERATION_IDS`; see loader/apply.rs).
pub fn compile(policy: &Policy, base: u32) -> Result<Compiled, PolicyError> {
    if policy.agents.len() > MAX_AGENTS {
        return Err(PolicyError {
            file: policy.source.clone(),
            pos: policy.agents[MAX_AGENTS].pos,
            message: format!("a policy holds at most {MAX_AGENTS} agents"),
        });
    }
    let mut out = Compiled {
        source: policy.source.clone(),
        hash: policy.hash.clone(),
        base,
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
        sensitive: Vec::new(),
        exempt_v4: Vec::new(),
        exempt_v6: Vec::new(),
    };
    for (i, agent) in policy.agents.iter().enumerate() {
        let policy_id = base + i as u32 + 1;
        let mode = agent.mode.unwrap_or(policy.mode);
        let audit = mode == Mode::Audit;
        let raw = agent.network.raw_sockets == NetAction::Allow;
        let allowlist_rule = agent.exec_allowlist.map(|pos| {
            let msg = Some("not on the agent's exec allow list".to_owned());
            add_rule(&mut out, agent, "exec.allow", "kill", "(anything not listed)".into(), &msg, pos)
        });
        let config = PolicyConfig {
            flags: (if audit { POLICY_FLAG_AUDIT } else { 0 })
                | (if raw { POLICY_FLAG_ALLOW_RAW_SOCKETS } else { 0 })
                | (if allowlist_rule.is_some() { POLICY_FLAG_EXEC_ALLOWLIST } else { 0 })
                | (if agent.files.is_some() && !audit { guard_common::POLICY_FLAG_FILES_PROTECT } else { 0 }),
            net_default: match agent.network.default {
                NetAction::Allow => NET_ALLOW,
                NetAction::Deny => NET_DENY,
            },
            exec_default_rule: allowlist_rule.unwrap_or(0),
            _pad: 0,
        };
        let mut cgroup_globs = Vec::new();
        for (i, m) in agent.cgroups.iter().enumerate() {
            if let Some(g) = &m.glob {
                let matcher = glob(g, true).map_err(|e| PolicyError { file: agent.file.clone(), pos: m.pos, message: format!("cgroup glob `{g}`: {e}") })?;
                cgroup_globs.push((i, matcher));
            }
        }
        for m in &agent.containers {
            crate::container::matcher::lint(m, &agent.file, &mut out.warnings)?;
        }
        let exec = compile_exec(&mut out, agent, policy_id)?;
        let mut exfil = super::exfil::compile(agent.exfil.as_ref(), !agent.network.hosts.is_empty(), policy_id, &agent.file)?;
        if let Some(x) = &agent.exfil {
            use super::exfil::{AfterRead, BudgetAction};
            if let Some(b) = &x.egress_budget {
                let action = if b.action == BudgetAction::Kill { "kill" } else { "drop" };
                let shown = format!("egress_budget: {} bytes per {}s, {action}", b.bytes, b.per.as_secs_f64());
                let msg = Some("bytes to one destination over the agent's egress budget".to_owned());
                exfil.eval.budget_rule = Some(add_rule(&mut out, agent, "exfil.egress_budget", action, shown, &msg, x.pos));
            }
            if let Some(a) = x.after_sensitive_read {
                let (action, text) = if a == AfterRead::Kill { ("kill", "kill") } else { ("deny", "allowlist-only") };
                let msg = Some("after a sensitive read, only allow-listed destinations".to_owned());
                exfil.eval.taint_rule = Some(add_rule(&mut out, agent, "exfil.after_sensitive_read", action, format!("after_sensitive_read: {text}"), &msg, x.pos));
            }
            // One per glob, as `sensitive_deny` (0: not a deny glob).
            for sp in &x.sensitive_paths {
                let id = if sp.deny {
                    let msg = Some("an open of a sensitive path the policy denies".to_owned());
                    add_rule(&mut out, agent, "exfil.sensitive_paths", "deny", format!("sensitive_paths: {} (action: deny)", sp.glob), &msg, sp.pos)
                } else {
                    0
                };
                exfil.eval.deny_rules.push(id);
            }
            if let Some(t) = &x.dns_tunnel {
                let shown = format!(
                    "dns_tunnel: name > {}, label > {}, entropy > {}, > {} queries per {}s to one domain",
                    t.max_name_len, t.max_label_len, t.max_label_entropy, t.max_queries_per_window, t.window.as_secs_f64()
                );
                let msg = Some("DNS queries shaped like a tunnel: the workload's DNS is cut off".to_owned());
                exfil.eval.tunnel_rule = Some(add_rule(&mut out, agent, "exfil.dns_tunnel", "deny", shown, &msg, x.pos));
            }
        }
        out.sensitive.extend(exfil.sensitive);
        for c in agent.exfil.iter().flat_map(|x| &x.budget_exempt) {
            let policy_id_be = policy_id.to_be_bytes();
            match c.addr {
                IpAddr::V4(a) => out.exempt_v4.push((32 + u32::from(c.len), NetKeyV4 { policy_id_be, addr: a.octets() }, 1)),
                IpAddr::V6(a) => out.exempt_v6.push((32 + u32::from(c.len), NetKeyV6 { policy_id_be, addr: a.octets() }, 1)),
            }
        }
        let hosts = agent
            .network
            .hosts
            .iter()
            .map(|h| {
                let mut matcher = format!("host: {}", h.pattern);
                if !h.ports.is_empty() {
                    matcher.push_str(&format!(" ports: {}", port_list(&h.ports)));
                }
                let rule_id = add_rule(&mut out, agent, "network.allow", "allow", matcher, &h.message, h.pos);
                HostEntry { rule_id, pattern: h.pattern.clone(), ports: h.ports.clone() }
            })
            .collect();
        let files = super::files::compile(agent, |matcher, message, pos| add_rule(&mut out, agent, "files.protect", "deny", matcher, message, pos))?;
        super::files::lint(agent, mode, &mut out.warnings);
        let delete_rule = agent.delete_budget.as_ref().map(|b| {
            let msg = Some("deletions over the agent's deletion budget".to_owned());
            add_rule(&mut out, agent, "files.delete_budget", b.action.name(), b.shown(), &msg, b.pos)
        });
        let delete_budget = super::delete_budget::kernel_config(agent.delete_budget.as_ref(), delete_rule.unwrap_or(0));
        out.agents.push(AgentEntry {
            files,
            name: agent.name.clone(),
            policy_id,
            mode,
            config,
            cgroups: agent.cgroups.clone(),
            cgroup_globs,
            containers: agent.containers.clone(),
            exec,
            allowlist_rule,
            exfil_config: exfil.config,
            exfil: exfil.eval,
            hosts,
            dns_grace: agent.network.dns_grace,
            delete_budget,
            delete_eval: agent.delete_budget.clone(),
        });
        compile_net(&mut out, agent, policy_id)?;
    }
    super::lint::check(policy, &mut out.warnings)?;
    Ok(out)
}

fn add_rule(out: &mut Compiled, agent: &Agent, section: &'static str, action: &'static str, matcher: String, message: &Option<String>, pos: Pos) -> u32 {
    let id = out.rules.len() as u32 + 1;
    out.rules.push(RuleInfo {
        id,
        section,
        action,
        matcher,
        message: message.clone(),
        location: format!("{}:{}", agent.file, pos.line),
    });
    id
}

/// What the kernel does for a rule: its own action, or a hold when the daemon must judge it.
fn kernel_action(rule: &ExecRule) -> u32 {
    if rule.needs_daemon() {
        return EXEC_ACTION_HOLD;
    }
    match rule.action {
        ExecAction::Kill => EXEC_ACTION_KILL,
        ExecAction::Hold => EXEC_ACTION_HOLD,
        ExecAction::Audit => EXEC_ACTION_AUDIT,
        ExecAction::Allow => EXEC_ACTION_ALLOW,
    }
}

/// When several rules share one kernel key, the strongest kernel action wins: a kill needs no
/// daemon (nothing outranks it), a hold lets the daemon weigh every rule, an audit outranks an
/// allow.
fn strength(action: u32) -> u8 {
    match action {
        EXEC_ACTION_KILL => 4,
        EXEC_ACTION_HOLD => 3,
        EXEC_ACTION_AUDIT => 2,
        _ => 1,
    }
}

/// Adds `(key, value)`, or strengthens the entry already there for `key`.
fn upsert<K: PartialEq>(entries: &mut Vec<(K, KernelExecRule)>, key: K, value: KernelExecRule) {
    match entries.iter_mut().find(|(k, _)| *k == key) {
        Some((_, v)) if strength(value.action) > strength(v.action) => *v = value,
        Some(_) => {}
        None => entries.push((key, value)),
    }
}

fn compile_exec(out: &mut Compiled, agent: &Agent, policy_id: u32) -> Result<Vec<EvalRule>, PolicyError> {
    let mut eval = Vec::new();
    let err = |pos: Pos, message: String| PolicyError { file: agent.file.clone(), pos, message };
    for rule in &agent.exec {
        let shown = format!("{}{}", rule.matcher, rule.conditions);
        let rule_id = add_rule(out, agent, rule.section, rule.action.name(), shown, &rule.message, rule.pos);
        let value = KernelExecRule { rule_id, action: kernel_action(rule) };
        let policy_id_be = policy_id.to_be_bytes();
        let mut identity_of_path = None;
        let mut canonical_dir = None;
        match &rule.matcher {
            ExecMatcher::Path(p) => {
                upsert(&mut out.exec_paths, ExecPathKey { policy_id, path: padded::<FILENAME_LEN>(p) }, value);
                match identity(p) {
                    Some((_, _, true)) => {
                        return Err(err(rule.pos, format!("`path: {p}` names a directory; use `path_prefix` for what lies below it")));
                    }
                    Some((dev, ino, false)) => {
                        identity_of_path = Some((dev, ino));
                        upsert(&mut out.exec_inodes, ExecInodeKey { policy_id, dev, ino }, value);
                        if let Some(why) = super::lint::cannot_run(p) {
                            out.warnings.push(super::lint::warning(&agent.file, rule.pos, format!("`{p}` {why}: no exec of it can succeed, so the rule cannot fire until that changes")));
                        }
                    }
                    None => out.warnings.push(super::lint::warning(&agent.file, rule.pos, format!(
                        "`{p}` does not exist now, so the rule cannot match it by identity: only execs naming exactly this path match, not links or copies of it (reload once it exists)"
                    ))),
                }
            }
            ExecMatcher::PathPrefix(p) => {
                let len = 32 + 8 * p.len() as u32;
                upsert_trie(&mut out.exec_prefixes, len, ExecPrefixKey { policy_id_be, path: padded_exact::<PREFIX_PATH_LEN>(p) }, value);
                match identity(p) {
                    Some((dev, ino, true)) => {
                        upsert(&mut out.exec_inodes, ExecInodeKey { policy_id, dev, ino }, value);
                        canonical_dir = std::fs::canonicalize(p).ok().map(|c| format!("{}/", c.display()).replace("//", "/"));
                    }
                    // The trailing `/` makes a file look absent (ENOTDIR): ask without it.
                    _ if matches!(identity(p.trim_end_matches('/')), Some((_, _, false))) => {
                        return Err(err(rule.pos, format!("`path_prefix: {p}` names a file, not a directory: nothing lies below it to run; use `path`")));
                    }
                    _ => out.warnings.push(super::lint::warning(&agent.file, rule.pos, format!(
                        "directory `{p}` does not exist now, so the rule cannot match by identity: only execs naming a path under it match, not links into it (reload once it exists)"
                    ))),
                }
            }
            ExecMatcher::Basename(b) => {
                upsert(&mut out.exec_names, ExecNameKey { policy_id, name: padded::<BASENAME_LEN>(b) }, value);
            }
            ExecMatcher::BasenamePrefix(b) => {
                let len = 32 + 8 * b.len() as u32;
                upsert_trie(&mut out.exec_name_prefixes, len, ExecNamePrefixKey { policy_id_be, name: padded_exact::<BASENAME_LEN>(b) }, value);
            }
        }
        let argv_glob = if rule.conditions.argv_glob.is_empty() {
            None
        } else {
            let mut set = GlobSetBuilder::new();
            for g in &rule.conditions.argv_glob {
                let built = GlobBuilder::new(g).backslash_escape(true).build().map_err(|e| err(rule.pos, format!("argv_glob `{g}`: {e}")))?;
                set.add(built);
            }
            Some(set.build().map_err(|e| err(rule.pos, format!("argv_glob: {e}")))?)
        };
        eval.push(EvalRule { id: rule_id, rule: rule.clone(), identity: identity_of_path, canonical_dir, argv_glob });
    }
    Ok(eval)
}

fn upsert_trie<K: PartialEq>(entries: &mut Vec<(u32, K, KernelExecRule)>, len: u32, key: K, value: KernelExecRule) {
    match entries.iter_mut().find(|(l, k, _)| *l == len && *k == key) {
        Some((_, _, v)) if strength(value.action) > strength(v.action) => *v = value,
        Some(_) => {}
        None => entries.push((len, key, value)),
    }
}

/// (kernel `s_dev`, inode, is a directory) of what `path` names, following symlinks.
pub fn identity(path: &str) -> Option<(u32, u64, bool)> {
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

fn compile_net(out: &mut Compiled, agent: &Agent, policy_id: u32) -> Result<(), PolicyError> {
    let mut prefixes: Vec<Prefix> = Vec::new();
    for action in [NetAction::Deny, NetAction::Allow] {
        for rule in agent.network.rules.iter().filter(|r| r.action == action) {
            let section = if action == NetAction::Deny { "network.deny" } else { "network.allow" };
            let mut matcher = format!("cidr: {}", rule.cidr);
            if !rule.ports.is_empty() {
                matcher.push_str(&format!(" ports: {}", port_list(&rule.ports)));
            }
            let action_name = if action == NetAction::Deny { "deny" } else { "allow" };
            let rule_id = add_rule(out, agent, section, action_name, matcher, &rule.message, rule.pos);
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
                file: agent.file.clone(),
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

fn port_list(ports: &[(u16, u16)]) -> String {
    let ports: Vec<String> = ports.iter().map(|(lo, hi)| if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") }).collect();
    ports.join(",")
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
        compile(&parse("p.yaml", text).unwrap(), 0).unwrap()
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
        let e = compile(&parse("p.yaml", &text).unwrap(), 0).unwrap_err();
        assert!(e.to_string().starts_with("p.yaml:5:11: 17 port ranges apply to ::1/128"), "{e}");
    }

    #[test]
    fn paths_resolve_to_identities_and_prefixes_to_trie_keys() {
        let dir = std::env::temp_dir().join(format!("guard-compile-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tools")).unwrap();
        std::fs::write(dir.join("tool"), b"").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
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
        assert_eq!(c.warnings[0], format!("p.yaml:8:11: warning: `{d}/missing` does not exist now, so the rule cannot match it by identity: only execs naming exactly this path match, not links or copies of it (reload once it exists)"));
        let e = compile(&parse("p.yaml", &format!("agents:\n  - name: a\n    exec:\n      deny:\n        - path: {d}/tools\n")).unwrap(), 0).unwrap_err();
        assert!(e.to_string().contains("names a directory; use `path_prefix`"), "{e}");
        let e = compile(&parse("p.yaml", &format!("agents:\n  - name: a\n    exec:\n      deny:\n        - path_prefix: {d}/tool\n")).unwrap(), 0).unwrap_err();
        assert_eq!(e.to_string(), format!("p.yaml:5:11: `path_prefix: {d}/tool/` names a file, not a directory: nothing lies below it to run; use `path`"));
        // Not executable by anyone: the rule compiles and warns.
        std::fs::set_permissions(dir.join("tool"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = compiled(&format!("agents:\n  - name: a\n    exec:\n      deny:\n        - path: {d}/tool\n"));
        assert_eq!(c.warnings, vec![format!("p.yaml:5:11: warning: `{d}/tool` is not executable by anyone: no exec of it can succeed, so the rule cannot fire until that changes")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn audit_mode_per_agent() {
        let c = compiled("mode: audit\nagents:\n  - name: a\n  - name: b\n    mode: enforce\n");
        assert_eq!(c.agents[0].config.flags & POLICY_FLAG_AUDIT, POLICY_FLAG_AUDIT);
        assert_eq!(c.agents[1].config.flags & POLICY_FLAG_AUDIT, 0);
    }
}
