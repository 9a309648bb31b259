//! The `exfil` section of an agent (byte budgets, sensitive paths, DNS tunnel limits) and
//! `network.allow: - host:` rules: model, parsing, and what the kernel maps get from them.
//!
//! ```yaml
//! exfil:
//!   sensitive_paths: ["/home/*/.ssh/**", "**/.env", "/etc/shadow",
//!                     { path: "**/.ssh/id_*", action: deny }]  # refused outright, not tainted
//!   after_sensitive_read: allowlist-only     # or kill
//!   egress_budget: { bytes: 8MiB, per: 60s, action: kill }   # or drop
//!   budget_exempt: [127.0.0.0/8, "::1"]
//!   dns_tunnel: { max_name_length: 120, max_label_length: 52, max_label_entropy: 4.0,
//!                 max_queries: 60, per: 60s }                # or `off`
//! ```
use std::time::Duration;

use globset::{GlobSet, GlobSetBuilder};
use guard_common::{
    EXFIL_BUDGET_KILL, EXFIL_TAINT_ALLOWLIST, EXFIL_TAINT_KILL, EXFIL_WATCH_DNS, EXFIL_WATCH_OPENS,
    EXFIL_DENY_OPENS, ExfilConfig, SENS_DENY, SENS_KIND_NAME, SENS_KIND_TAIL, SENS_TAINT_NOW, SENS_TEXT_LEN, SensKey, SensRule,
};

use super::{
    Cidr, HostRule, PolicyError, Pos,
    parse::Parser,
    yaml::{Node, Value},
};
use crate::dns::{HostPattern, TunnelLimits};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRead {
    /// Only destinations an allow rule names.
    AllowlistOnly,
    /// Killed at its next connect off the allow list (refused if to loopback).
    Kill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetAction {
    /// Packets over budget are dropped and the sender is killed.
    Kill,
    /// Packets over budget are dropped until the window ends.
    Drop,
}

#[derive(Debug, Clone)]
pub struct Budget {
    pub bytes: u64,
    pub per: Duration,
    pub action: BudgetAction,
}

/// One `sensitive_paths` entry.
#[derive(Debug, Clone)]
pub struct SensitivePath {
    /// The glob as written.
    pub glob: String,
    /// `action: deny`: the open is refused (else it taints the process).
    pub deny: bool,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct Exfil {
    pub sensitive_paths: Vec<SensitivePath>,
    pub after_sensitive_read: Option<AfterRead>,
    pub egress_budget: Option<Budget>,
    pub budget_exempt: Vec<Cidr>,
    /// `None`: `dns_tunnel: off`.
    pub dns_tunnel: Option<TunnelLimits>,
    pub pos: Pos,
}

impl Parser<'_> {
    pub(crate) fn exfil(&self, node: &Node) -> Result<Exfil, PolicyError> {
        let keys = ["sensitive_paths", "after_sensitive_read", "egress_budget", "budget_exempt", "dns_tunnel"];
        let m = self.map(node, "`exfil`", &keys)?;
        let mut sensitive_paths = Vec::new();
        if let Some(list) = m.get("sensitive_paths") {
            for item in self.seq(list, "`sensitive_paths`")? {
                let (g, deny) = match &item.value {
                    Value::Map(_) => {
                        let m = self.map(item, "a sensitive path", &["path", "action"])?;
                        let g = self.nonempty_str(m.require("path", item, self)?, "`path`")?;
                        let deny = match m.get("action") {
                            None => false,
                            Some(n) => match self.str(n, "`action`")? {
                                "deny" => true,
                                "taint" => false,
                                other => return Err(self.err(n.pos, format!("a sensitive path's `action` must be `deny` or `taint`, not `{other}`"))),
                            },
                        };
                        (g, deny)
                    }
                    _ => (self.nonempty_str(item, "a sensitive path")?, false),
                };
                if let Some(why) = never_opened(g) {
                    return Err(self.err(item.pos, format!("sensitive path `{g}` can never match: {why}")));
                }
                sensitive_kernel_keys(g).map_err(|e| self.err(item.pos, format!("sensitive path `{g}`: {e}")))?;
                if deny {
                    deny_kernel_keys(g).map_err(|e| self.err(item.pos, format!("sensitive path `{g}` with `action: deny`: {e}")))?;
                }
                super::compile::glob(g, true).map_err(|e| self.err(item.pos, format!("sensitive path `{g}`: {e}")))?;
                sensitive_paths.push(SensitivePath { glob: g.to_owned(), deny, pos: item.pos });
            }
        }
        let after_sensitive_read = match m.get("after_sensitive_read") {
            None => None,
            Some(n) => Some(match self.str(n, "`after_sensitive_read`")? {
                "allowlist-only" => AfterRead::AllowlistOnly,
                "kill" => AfterRead::Kill,
                other => return Err(self.err(n.pos, format!("`after_sensitive_read` must be `allowlist-only` or `kill`, not `{other}`"))),
            }),
        };
        if after_sensitive_read.is_some() && sensitive_paths.is_empty() {
            return Err(self.err(node.pos, "`after_sensitive_read` needs `sensitive_paths`"));
        }
        let egress_budget = m.get("egress_budget").map(|n| self.budget(n)).transpose()?;
        let mut budget_exempt = Vec::new();
        if let Some(list) = m.get("budget_exempt") {
            for item in self.seq(list, "`budget_exempt`")? {
                budget_exempt.push(self.cidr(item)?);
            }
        }
        let dns_tunnel = match m.get("dns_tunnel") {
            None => Some(TunnelLimits::default()),
            Some(n) if matches!(&n.value, Value::Scalar { text, .. } if text == "off") => None,
            Some(n) => Some(self.tunnel(n)?),
        };
        Ok(Exfil { sensitive_paths, after_sensitive_read, egress_budget, budget_exempt, dns_tunnel, pos: node.pos })
    }

    fn budget(&self, node: &Node) -> Result<Budget, PolicyError> {
        let m = self.map(node, "`egress_budget`", &["bytes", "per", "action"])?;
        let bytes_node = m.require("bytes", node, self)?;
        let bytes = byte_size(self.str(bytes_node, "`bytes`")?).ok_or_else(|| {
            self.err(bytes_node.pos, "`bytes` must be a size like `8MiB`, `512KiB`, `1GiB` or a number of bytes (at least 1500)")
        })?;
        let per = self.duration(m.require("per", node, self)?)?;
        let action = match m.get("action") {
            None => BudgetAction::Kill,
            Some(n) => match self.str(n, "`action`")? {
                "kill" => BudgetAction::Kill,
                "drop" => BudgetAction::Drop,
                other => return Err(self.err(n.pos, format!("`action` must be `kill` or `drop`, not `{other}`"))),
            },
        };
        Ok(Budget { bytes, per, action })
    }

    fn tunnel(&self, node: &Node) -> Result<TunnelLimits, PolicyError> {
        let keys = ["max_name_length", "max_label_length", "max_label_entropy", "max_queries", "per"];
        let m = self.map(node, "`dns_tunnel`", &keys)?;
        let mut t = TunnelLimits::default();
        let number = |key: &str, lo: f64, hi: f64| -> Result<Option<f64>, PolicyError> {
            let Some(n) = m.get(key) else { return Ok(None) };
            let text = self.str(n, &format!("`{key}`"))?;
            match text.parse::<f64>() {
                Ok(v) if (lo..=hi).contains(&v) => Ok(Some(v)),
                _ => Err(self.err(n.pos, format!("`{key}` must be a number from {lo} to {hi}, not `{text}`"))),
            }
        };
        if let Some(v) = number("max_name_length", 16.0, 253.0)? {
            t.max_name_len = v as usize;
        }
        if let Some(v) = number("max_label_length", 8.0, 63.0)? {
            t.max_label_len = v as usize;
        }
        if let Some(v) = number("max_label_entropy", 1.0, 8.0)? {
            t.max_label_entropy = v;
        }
        if let Some(v) = number("max_queries", 1.0, 1_000_000.0)? {
            t.max_queries_per_window = v as u32;
        }
        if let Some(n) = m.get("per") {
            t.window = self.duration(n)?;
        }
        Ok(t)
    }

    pub(crate) fn host_rule(&self, node: &Node) -> Result<HostRule, PolicyError> {
        let m = self.map(node, "a network rule", &["cidr", "host", "ports", "message"])?;
        if m.get("cidr").is_some() {
            return Err(self.err(node.pos, "a network rule has either `cidr` or `host`, not both"));
        }
        let host_node = m.require("host", node, self)?;
        let text = self.nonempty_str(host_node, "`host`")?;
        let pattern = HostPattern::parse(text).map_err(|e| self.err(host_node.pos, format!("`host: {text}`: {e}")))?;
        let ports = m.get("ports").map(|n| self.ports(n)).transpose()?.unwrap_or_default();
        let message = m.get("message").map(|n| self.str(n, "`message`").map(str::to_owned)).transpose()?;
        Ok(HostRule { pattern, ports, message, pos: node.pos })
    }
}

/// `8MiB`, `512KiB`, `1GiB`, `10MB`, `1500`: bytes, at least one full-size packet.
pub fn byte_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult).filter(|b| *b >= 1500)
}

const WILDCARDS: [char; 4] = ['*', '?', '[', '{'];

/// Why no open can match `glob`, if that is certain: the daemon matches the absolute path an
/// open resolves to, with `.` and `..` folded and no empty or trailing component.
fn never_opened(glob: &str) -> Option<&'static str> {
    if glob.starts_with('~') {
        return Some("`~` is not expanded; write `/home/*/...` or `**/...`");
    }
    if !glob.starts_with(['/', '*', '{', '[']) {
        return Some("opens are matched by absolute path; start it with `/` or `**/`");
    }
    if glob.len() > 1 && glob.ends_with('/') {
        return Some("no opened file's path ends in `/`; write `dir/**` for what lies below a directory");
    }
    let inner = glob.strip_prefix('/').unwrap_or(glob);
    if inner.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Some("it has an empty, `.` or `..` component, and resolved paths have none");
    }
    None
}

/// What the kernel filter looks for to catch opens `glob` may match: (kind, literal bytes,
/// flags). The daemon confirms every hit against the glob itself.
///
/// - `dir/name*` (a literal parent): `parent/name-start` (`SENS_KIND_TAIL`), tainting at once;
///   and the name start alone, report-only, for opens relative to that directory.
/// - `**/name*` or `*/name*` (any parent): the name start (`SENS_KIND_NAME`), tainting at once.
/// - `dir/**`: `dir/` — files directly in `dir` are caught by the kernel, deeper ones are not.
/// - Anything else (`**/*.pem`) gives the kernel nothing to look for: an error.
pub fn sensitive_kernel_keys(glob: &str) -> Result<Vec<(u8, Vec<u8>, u32)>, String> {
    let parts: Vec<&str> = glob.split('/').filter(|p| !p.is_empty()).collect();
    let Some(&last) = parts.last() else {
        return Err("is empty".into());
    };
    let parent = if parts.len() >= 2 { Some(parts[parts.len() - 2]) } else { None };
    let literal_parent = parent.filter(|p| !p.contains(WILDCARDS));
    let name_start: &str = &last[..last.find(WILDCARDS).unwrap_or(last.len())];
    let exact = name_start.len() == last.len();
    let with_nul = |mut v: Vec<u8>, exact: bool| {
        if exact {
            v.push(0);
        }
        v.truncate(SENS_TEXT_LEN);
        v
    };
    let mut keys = Vec::new();
    if last == "**" {
        let Some(p) = literal_parent else {
            return Err("`**` needs a literal directory before it for the kernel filter to look for".into());
        };
        keys.push((SENS_KIND_TAIL, with_nul(format!("{p}/").into_bytes(), false), SENS_TAINT_NOW));
        return Ok(keys);
    }
    match literal_parent {
        Some(p) => {
            keys.push((SENS_KIND_TAIL, with_nul(format!("{p}/{name_start}").into_bytes(), exact), SENS_TAINT_NOW));
            if !name_start.is_empty() {
                keys.push((SENS_KIND_NAME, with_nul(name_start.as_bytes().to_vec(), exact), 0));
            }
        }
        None if !name_start.is_empty() => {
            keys.push((SENS_KIND_NAME, with_nul(name_start.as_bytes().to_vec(), exact), SENS_TAINT_NOW));
        }
        None => {
            return Err("gives the kernel nothing to look for: the file name must start with a literal, or its directory must be literal (e.g. `**/.ssh/id_*`, `/home/*/.ssh/*`)".into());
        }
    }
    Ok(keys)
}

/// The kernel keys of an `action: deny` glob, each marked `SENS_DENY` (and tainting at once).
/// The kernel refuses an open on a key match alone, so the keys must decide the glob exactly:
/// only forms whose last one or two components say everything are accepted — `**/name`,
/// `**/name*`, `**/dir/name`, `**/dir/name*`, `**/dir/*`, with literal `dir` and `name`. An
/// absolute path is refused with the `**/` form to write instead: the kernel sees the opened
/// file's name and its directory's, never the whole path.
pub fn deny_kernel_keys(glob: &str) -> Result<Vec<(u8, Vec<u8>, u32)>, String> {
    const FORMS: &str = "write it as `**/name`, `**/name*`, `**/dir/name`, `**/dir/name*` or `**/dir/*` (literal names), which the kernel decides from the opened file's name and its directory's";
    let Some(rest) = glob.strip_prefix("**/") else {
        let hint = glob.rsplit('/').take(2).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("/");
        return Err(format!("the kernel sees only the opened file's name and its directory's, not the whole path: {FORMS} (e.g. `**/{hint}`, which also refuses it under any other directory)"));
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let literal = |p: &str| !p.is_empty() && !p.contains(WILDCARDS) && !p.contains('\\');
    let (dir, name) = match parts.as_slice() {
        [name] => (None, *name),
        [dir, name] => (Some(*dir), *name),
        _ => return Err(FORMS.to_owned()),
    };
    if dir.is_some_and(|d| !literal(d)) {
        return Err(FORMS.to_owned());
    }
    let (start, exact) = match name.strip_suffix('*') {
        Some(s) => (s, false),
        None => (name, true),
    };
    if (!start.is_empty() && !literal(start)) || (start.is_empty() && dir.is_none()) {
        return Err(FORMS.to_owned());
    }
    let (kind, mut text) = match dir {
        Some(d) => (SENS_KIND_TAIL, format!("{d}/{start}").into_bytes()),
        None => (SENS_KIND_NAME, start.as_bytes().to_vec()),
    };
    if exact {
        text.push(0);
    }
    if text.len() > SENS_TEXT_LEN {
        return Err(format!("the kernel compares at most {} bytes of `dir/name`; this one is longer", SENS_TEXT_LEN - 1));
    }
    let mut keys = vec![(kind, text, SENS_DENY | SENS_TAINT_NOW)];
    if dir.is_some() && !start.is_empty() {
        // Report-only, as for any `dir/name` glob: an open relative to `dir` names no `dir`, so
        // on the tracepoint tier the daemon resolves it and taints (the lsm tier refuses it).
        let mut name = start.as_bytes().to_vec();
        if exact {
            name.push(0);
        }
        keys.push((SENS_KIND_NAME, name, 0));
    }
    Ok(keys)
}

/// The trie answers with the longest matching entry only, so an entry inherits the flags of
/// every shorter entry of the same policy and kind whose text starts it: what matches the longer
/// one matches the shorter one too (a deny or an at-once taint is never hidden by a more
/// specific report-only entry).
fn inherit_shorter_flags(entries: &mut [(u32, SensKey, SensRule)]) {
    let snapshot: Vec<(u32, SensKey, u32)> = entries.iter().map(|(l, k, v)| (*l, *k, v.flags)).collect();
    for (len, key, rule) in entries.iter_mut() {
        for (slen, skey, sflags) in &snapshot {
            let n = ((slen - 40) / 8) as usize;
            if slen < len && skey.policy_id_be == key.policy_id_be && skey.kind == key.kind && skey.text[..n] == key.text[..n] {
                rule.flags |= sflags & (SENS_DENY | SENS_TAINT_NOW);
            }
        }
    }
}

/// What the daemon keeps of an agent's `exfil` section to judge events.
#[derive(Debug, Clone)]
pub struct ExfilEval {
    /// The `sensitive_paths` globs (index = position in `sensitive_text`).
    pub sensitive: Option<GlobSet>,
    pub sensitive_text: Vec<String>,
    /// Per glob: `action: deny`.
    pub sensitive_deny: Vec<bool>,
    /// Per glob: the rule id of an `action: deny` one (0 for the others; set by the compiler).
    pub deny_rules: Vec<u32>,
    pub after_read: Option<AfterRead>,
    pub budget: Option<Budget>,
    pub tunnel: Option<TunnelLimits>,
    /// Rule ids verdicts name: `egress_budget`, `after_sensitive_read`, `dns_tunnel`.
    pub budget_rule: Option<u32>,
    pub taint_rule: Option<u32>,
    pub tunnel_rule: Option<u32>,
}

/// The kernel entries and settings of one agent's exfil section and host rules.
pub struct CompiledExfil {
    pub config: ExfilConfig,
    pub eval: ExfilEval,
    /// (trie prefix length, key, value)
    pub sensitive: Vec<(u32, SensKey, SensRule)>,
}

pub fn compile(exfil: Option<&Exfil>, has_hosts: bool, policy_id: u32, file: &str) -> Result<CompiledExfil, PolicyError> {
    let mut config = ExfilConfig::default();
    let mut sensitive = Vec::new();
    let mut eval = ExfilEval { sensitive: None, sensitive_text: Vec::new(), sensitive_deny: Vec::new(), deny_rules: Vec::new(), after_read: None, budget: None, tunnel: None, budget_rule: None, taint_rule: None, tunnel_rule: None };
    if has_hosts {
        config.flags |= EXFIL_WATCH_DNS;
    }
    let Some(x) = exfil else {
        return Ok(CompiledExfil { config, eval, sensitive });
    };
    if let Some(b) = &x.egress_budget {
        config.budget_bytes = b.bytes;
        config.window_ns = u64::try_from(b.per.as_nanos()).unwrap_or(u64::MAX);
        if b.action == BudgetAction::Kill {
            config.flags |= EXFIL_BUDGET_KILL;
        }
    }
    match x.after_sensitive_read {
        Some(AfterRead::AllowlistOnly) => config.flags |= EXFIL_TAINT_ALLOWLIST,
        Some(AfterRead::Kill) => config.flags |= EXFIL_TAINT_KILL,
        None => {}
    }
    if x.dns_tunnel.is_some() {
        config.flags |= EXFIL_WATCH_DNS;
    }
    if !x.sensitive_paths.is_empty() {
        config.flags |= EXFIL_WATCH_OPENS;
        let mut set = GlobSetBuilder::new();
        for SensitivePath { glob: g, deny, pos } in &x.sensitive_paths {
            let err = |message: String| PolicyError { file: file.to_owned(), pos: *pos, message };
            let built = globset::GlobBuilder::new(g).literal_separator(true).backslash_escape(true).build().map_err(|e| err(format!("sensitive path `{g}`: {e}")))?;
            set.add(built);
            let keys = if *deny {
                config.flags |= EXFIL_DENY_OPENS;
                deny_kernel_keys(g).map_err(|e| err(format!("sensitive path `{g}` with `action: deny`: {e}")))?
            } else {
                sensitive_kernel_keys(g).map_err(|e| err(format!("sensitive path `{g}`: {e}")))?
            };
            for (kind, text, flags) in keys {
                let mut key = SensKey { policy_id_be: policy_id.to_be_bytes(), kind, text: [0; SENS_TEXT_LEN] };
                key.text[..text.len()].copy_from_slice(&text);
                let len = 32 + 8 + 8 * text.len() as u32;
                // One entry per key: a tainting one outranks a report-only one.
                match sensitive.iter_mut().find(|(l, k, _): &&mut (u32, SensKey, SensRule)| *l == len && *k == key) {
                    Some((_, _, v)) => v.flags |= flags,
                    None => sensitive.push((len, key, SensRule { flags, _pad: 0 })),
                }
            }
            eval.sensitive_text.push(g.clone());
            eval.sensitive_deny.push(*deny);
        }
        inherit_shorter_flags(&mut sensitive);
        eval.sensitive = Some(set.build().map_err(|e| PolicyError { file: file.to_owned(), pos: x.sensitive_paths[0].pos, message: format!("sensitive paths: {e}") })?);
    }
    eval.after_read = x.after_sensitive_read;
    eval.budget = x.egress_budget.clone();
    eval.tunnel = x.dns_tunnel.clone();
    Ok(CompiledExfil { config, eval, sensitive })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(g: &str) -> Vec<(char, String, u32)> {
        sensitive_kernel_keys(g).unwrap().into_iter().map(|(k, t, f)| (k as char, String::from_utf8_lossy(&t).into_owned(), f)).collect()
    }

    fn deny_keys(g: &str) -> Result<Vec<(char, String, u32)>, String> {
        Ok(deny_kernel_keys(g)?.into_iter().map(|(k, t, f)| (k as char, String::from_utf8_lossy(&t).into_owned(), f)).collect())
    }

    #[test]
    fn deny_globs_become_exact_kernel_keys() {
        let d = SENS_DENY | SENS_TAINT_NOW;
        assert_eq!(deny_keys("**/.env").unwrap(), vec![('N', ".env\0".into(), d)]);
        assert_eq!(deny_keys("**/id_*").unwrap(), vec![('N', "id_".into(), d)]);
        assert_eq!(deny_keys("**/.ssh/id_*").unwrap(), vec![('T', ".ssh/id_".into(), d), ('N', "id_".into(), 0)]);
        assert_eq!(deny_keys("**/etc/shadow").unwrap(), vec![('T', "etc/shadow\0".into(), d), ('N', "shadow\0".into(), 0)]);
        assert_eq!(deny_keys("**/.aws/*").unwrap(), vec![('T', ".aws/".into(), d)]);
        // What the kernel cannot decide exactly from a name and its directory's is refused.
        let e = deny_kernel_keys("/etc/shadow").unwrap_err();
        assert!(e.contains("not the whole path") && e.contains("`**/etc/shadow`"), "{e}");
        for bad in ["**/*", "**/*.pem", "**/a/b/c", "**/.ssh/**", "**/id_*_rsa", "**/*/id_rsa", "**/.ss?/id", "**/[ab]"] {
            assert!(deny_kernel_keys(bad).is_err(), "{bad}");
        }
        assert!(deny_kernel_keys(&format!("**/{}", "x".repeat(130))).unwrap_err().contains("at most"));
    }

    #[test]
    fn deny_paths_parse_and_compile() {
        let yaml = "agents:\n  - name: a\n    exfil:\n      sensitive_paths: [\"/etc/passwd\", { path: \"**/.ssh/id_*\", action: deny }, { path: \"**/.env\", action: taint }]\n";
        let p = crate::policy::parse::parse("p.yaml", yaml).unwrap();
        let x = p.agents[0].exfil.as_ref().unwrap();
        assert_eq!(x.sensitive_paths.iter().map(|s| (s.glob.as_str(), s.deny)).collect::<Vec<_>>(), vec![("/etc/passwd", false), ("**/.ssh/id_*", true), ("**/.env", false)]);
        let c = compile(Some(x), false, 7, "p.yaml").unwrap();
        assert_ne!(c.config.flags & EXFIL_DENY_OPENS, 0);
        assert_eq!(c.eval.sensitive_deny, vec![false, true, false]);
        let deny: Vec<String> = c.sensitive.iter().filter(|(_, _, r)| r.flags & SENS_DENY != 0).map(|(l, k, _)| String::from_utf8_lossy(&k.text[..((l - 40) / 8) as usize]).into_owned()).collect();
        assert_eq!(deny, vec![".ssh/id_".to_owned()]);
        for (bad, why) in [
            ("{ path: \"/etc/shadow\", action: deny }", "not the whole path"),
            ("{ path: \"**/.env\", action: block }", "must be `deny` or `taint`"),
            ("{ action: deny }", "path"),
            ("{ path: \"**/.env\", actions: deny }", "actions"),
        ] {
            let e = crate::policy::parse::parse("p.yaml", &format!("agents:\n  - name: a\n    exfil:\n      sensitive_paths: [{bad}]\n")).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        let no_deny = compile(Some(&crate::policy::parse::parse("p.yaml", "agents:\n  - name: a\n    exfil:\n      sensitive_paths: [\"**/.env\"]\n").unwrap().agents[0].exfil.clone().unwrap()), false, 7, "p.yaml").unwrap();
        assert_eq!(no_deny.config.flags & EXFIL_DENY_OPENS, 0);
    }

    #[test]
    fn longer_entries_inherit_a_shorter_ones_deny() {
        // `**/id_*` denies every name starting `id_`; `/x/.ssh/id_rsa`'s report-only name entry
        // `id_rsa\0` is the longer match in the trie and must carry that deny.
        let yaml = "agents:\n  - name: a\n    exfil:\n      sensitive_paths: [\"/x/.ssh/id_rsa\", { path: \"**/id_*\", action: deny }]\n";
        let p = crate::policy::parse::parse("p.yaml", yaml).unwrap();
        let c = compile(p.agents[0].exfil.as_ref(), false, 7, "p.yaml").unwrap();
        let flags = |text: &str| c.sensitive.iter().find(|(l, k, _)| &k.text[..((l - 40) / 8) as usize] == text.as_bytes()).map(|(_, _, r)| r.flags);
        assert_eq!(flags("id_rsa\0"), Some(SENS_DENY | SENS_TAINT_NOW));
        assert_eq!(flags(".ssh/id_rsa\0"), Some(SENS_TAINT_NOW), "another kind inherits nothing");
    }

    #[test]
    fn globs_become_kernel_keys() {
        assert_eq!(keys("/home/*/.ssh/**"), vec![('T', ".ssh/".into(), SENS_TAINT_NOW)]);
        assert_eq!(keys("**/.env"), vec![('N', ".env\0".into(), SENS_TAINT_NOW)]);
        assert_eq!(keys("/etc/shadow"), vec![('T', "etc/shadow\0".into(), SENS_TAINT_NOW), ('N', "shadow\0".into(), 0)]);
        assert_eq!(keys("**/.ssh/id_*"), vec![('T', ".ssh/id_".into(), SENS_TAINT_NOW), ('N', "id_".into(), 0)]);
        assert_eq!(keys("**/.config/gcloud/*"), vec![('T', "gcloud/".into(), SENS_TAINT_NOW)]);
        assert!(sensitive_kernel_keys("**/*.pem").unwrap_err().contains("nothing to look for"));
        assert!(sensitive_kernel_keys("**").is_err());
    }

    #[test]
    fn globs_no_open_can_match_are_refused() {
        assert!(never_opened("~/.ssh/*").unwrap().contains("`~` is not expanded"));
        assert!(never_opened("etc/shadow").unwrap().contains("absolute path"));
        assert!(never_opened("/home/u/.ssh/").unwrap().contains("`dir/**`"));
        assert!(never_opened("/etc/../etc/shadow").unwrap().contains("`..` component"));
        assert!(never_opened("/etc//shadow").is_some());
        for ok in ["/etc/shadow", "**/.env", "*/x", "{/a,/b}/c", "/home/*/.ssh/**"] {
            assert_eq!(never_opened(ok), None, "{ok}");
        }
        let e = crate::policy::parse::parse("p.yaml", "agents:\n  - name: a\n    exfil:\n      sensitive_paths: [\"~/.aws/credentials\"]\n").unwrap_err();
        assert_eq!(e.to_string(), "p.yaml:4:25: sensitive path `~/.aws/credentials` can never match: `~` is not expanded; write `/home/*/...` or `**/...`");
    }

    #[test]
    fn sizes() {
        assert_eq!(byte_size("8MiB"), Some(8 << 20));
        assert_eq!(byte_size("1GiB"), Some(1 << 30));
        assert_eq!(byte_size("10MB"), Some(10_000_000));
        assert_eq!(byte_size("1500"), Some(1500));
        assert_eq!(byte_size("100"), None);
        assert_eq!(byte_size("8 parsecs"), None);
        assert_eq!(byte_size("99999999999999999999GiB"), None);
    }
}
