//! YAML tree -> policy model, with `file:line:column` errors that name what is wrong and, for an
//! unknown key, the closest valid one.
use std::collections::HashSet;

use super::{
    Agent, CgroupMatch, Conditions, DEFAULT_APPROVE_TIMEOUT, ExecAction, ExecMatcher, ExecRule,
    Mode, Network, Policy, PolicyError, Pos, SqlCheck, hash_text,
    yaml::{self, Node, Value},
};
use crate::paths::AGENT_CGROUP_DIR;

/// Longest exec path a rule may name: the kernel compares at most `FILENAME_LEN - 1` bytes.
const MAX_RULE_PATH: usize = guard_common::FILENAME_LEN - 1;
/// Longest `path_prefix` directory: the kernel reads at most `PREFIX_PATH_LEN - 1` bytes of the
/// filename into the prefix key, so a longer directory could never match by name.
const MAX_RULE_PREFIX: usize = guard_common::PREFIX_PATH_LEN - 1;
/// Longest name a `basename` or `basename_prefix` may give: the kernel reads at most
/// `BASENAME_LEN - 1` bytes of the file's name and treats a name that fills them as cut short
/// (it never matches), so a name of `BASENAME_LEN - 1` bytes or more cannot fire.
const MAX_RULE_BASENAME: usize = guard_common::BASENAME_LEN - 2;
/// Longest cgroup (directory) name the kernel accepts: NAME_MAX.
const MAX_CGROUP_NAME: usize = 255;

pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyError> {
    let p = Parser { file };
    let root = yaml::parse(text)
        .map_err(|e| p.err(e.pos, format!("YAML syntax error: {}", e.message)))?
        .ok_or_else(|| p.err(Pos { line: 1, col: 1 }, "the policy is empty; it needs at least `agents:`"))?;
    let m = p.map(&root, "the policy", &["mode", "agents"])?;
    let mode_set = m.get("mode").is_some();
    let mode = match m.get("mode") {
        Some(n) => p.mode(n)?,
        None => Mode::Enforce,
    };
    let agents_node = m.require("agents", &root, &p)?;
    let mut agents = Vec::new();
    let mut names = HashSet::new();
    for item in p.seq(agents_node, "`agents`")? {
        let agent = p.agent(item)?;
        if !names.insert(agent.name.clone()) {
            return Err(p.err(agent.pos, format!("agent `{}` is defined twice", agent.name)));
        }
        agents.push(agent);
    }
    if agents.is_empty() {
        return Err(p.err(agents_node.pos, "`agents` is empty: a policy needs at least one agent"));
    }
    Ok(Policy { source: file.to_owned(), hash: hash_text(text), mode, mode_set, agents })
}

pub(crate) struct Parser<'a> {
    pub file: &'a str,
}

/// A mapping's entries, checked for unknown and duplicate keys.
pub(crate) struct Map<'n> {
    entries: Vec<(&'n str, &'n Node)>,
}

impl<'n> Map<'n> {
    pub(crate) fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    pub(crate) fn require(&self, key: &str, parent: &Node, p: &Parser<'_>) -> Result<&'n Node, PolicyError> {
        self.get(key).ok_or_else(|| p.err(parent.pos, format!("missing required key `{key}`")))
    }
}

impl Parser<'_> {
    pub(crate) fn err(&self, pos: Pos, message: impl Into<String>) -> PolicyError {
        PolicyError { file: self.file.to_owned(), pos, message: message.into() }
    }

    pub(crate) fn map<'n>(&self, node: &'n Node, what: &str, allowed: &[&str]) -> Result<Map<'n>, PolicyError> {
        let Value::Map(entries) = &node.value else {
            return Err(self.err(node.pos, format!("{what} must be a mapping, found {}", node.kind())));
        };
        let mut out: Vec<(&str, &Node)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let key = self.str(k, "a key")?;
            if !allowed.contains(&key) {
                let hint = match closest(key, allowed) {
                    Some(c) => format!(" (did you mean `{c}`?)"),
                    None => String::new(),
                };
                return Err(self.err(k.pos, format!(
                    "unknown key `{key}` in {what}{hint}; valid keys: {}",
                    allowed.join(", ")
                )));
            }
            if out.iter().any(|(seen, _)| *seen == key) {
                return Err(self.err(k.pos, format!("key `{key}` appears twice in {what}")));
            }
            out.push((key, v));
        }
        Ok(Map { entries: out })
    }

    pub(crate) fn seq<'n>(&self, node: &'n Node, what: &str) -> Result<&'n [Node], PolicyError> {
        match &node.value {
            Value::Seq(items) => Ok(items),
            _ => Err(self.err(node.pos, format!("{what} must be a list, found {}", node.kind()))),
        }
    }

    pub(crate) fn str<'n>(&self, node: &'n Node, what: &str) -> Result<&'n str, PolicyError> {
        match &node.value {
            Value::Scalar { text, .. } => Ok(text),
            _ => Err(self.err(node.pos, format!("{what} must be a string, found {}", node.kind()))),
        }
    }

    pub(crate) fn nonempty_str<'n>(&self, node: &'n Node, what: &str) -> Result<&'n str, PolicyError> {
        let s = self.str(node, what)?;
        if s.trim().is_empty() {
            return Err(self.err(node.pos, format!("{what} must not be empty")));
        }
        Ok(s)
    }

    fn mode(&self, node: &Node) -> Result<Mode, PolicyError> {
        match self.str(node, "`mode`")? {
            "enforce" => Ok(Mode::Enforce),
            "audit" => Ok(Mode::Audit),
            other => Err(self.err(node.pos, format!("`mode` must be `enforce` or `audit`, not `{other}`"))),
        }
    }

    fn agent(&self, node: &Node) -> Result<Agent, PolicyError> {
        let m = self.map(node, "an agent", &["name", "mode", "match", "exec", "network", "exfil", "files"])?;
        let name_node = m.require("name", node, self)?;
        let name = self.nonempty_str(name_node, "`name`")?.to_owned();
        if !super::valid_agent_name(&name) {
            return Err(self.err(name_node.pos, format!(
                "agent name `{name}` may only use letters, digits, `-`, `_` and `.` (it names a cgroup)"
            )));
        }
        let mode = m.get("mode").map(|n| self.mode(n)).transpose()?;
        let (cgroups, containers) = match m.get("match") {
            Some(n) => self.cgroup_matches(n)?,
            // The default: workloads started with `guard-agent launch --agent NAME`.
            None => (vec![CgroupMatch {
                dir: format!("{AGENT_CGROUP_DIR}/{name}"),
                this: false,
                below: true,
                glob: None,
                text: format!("{AGENT_CGROUP_DIR}/{name}/*"),
                pos: name_node.pos,
            }], Vec::new()),
        };
        let (exec, exec_allowlist) = match m.get("exec") {
            Some(n) => self.exec(n)?,
            None => (Vec::new(), None),
        };
        let network = match m.get("network") {
            Some(n) => self.network(n)?,
            None => Network::default(),
        };
        let exfil = m.get("exfil").map(|n| self.exfil(n)).transpose()?;
        let files = m.get("files").map(|n| self.files(n)).transpose()?.flatten();
        let files_map = m.get("files").map(|n| self.map(n, "`files`", super::files::FILES_KEYS)).transpose()?;
        let delete_budget = files_map.as_ref().and_then(|f| f.get("delete_budget")).map(|n| self.delete_budget(n)).transpose()?;
        Ok(Agent { name, file: self.file.to_owned(), pos: node.pos, mode, cgroups, containers, exec, exec_allowlist, network, exfil, files, delete_budget })
    }

    #[allow(clippy::type_complexity)]
    fn cgroup_matches(&self, node: &Node) -> Result<(Vec<CgroupMatch>, Vec<crate::container::matcher::ContainerMatch>), PolicyError> {
        let m = self.map(node, "`match`", &["cgroup", "systemd_unit", "container", "pod"])?;
        if m.entries.is_empty() {
            return Err(self.err(node.pos, "`match` is empty: give `cgroup`, `systemd_unit`, `container` or `pod`"));
        }
        let mut out = Vec::new();
        let mut containers = Vec::new();
        for (key, value) in &m.entries {
            if *key == "container" || *key == "pod" {
                containers.extend(crate::container::matcher::parse(self, value, *key == "pod")?);
                continue;
            }
            let items: Vec<&Node> = match &value.value {
                Value::Seq(items) => items.iter().collect(),
                _ => vec![*value],
            };
            if items.is_empty() {
                return Err(self.err(value.pos, format!("`{key}` is an empty list: the agent would match nothing")));
            }
            for item in items {
                out.push(if *key == "cgroup" { self.cgroup_glob(item)? } else { self.systemd_unit(item)? });
            }
        }
        Ok((out, containers))
    }

    /// `a/b` (that cgroup and below), `a/b/*` or `a/b/**` (every cgroup below `a/b`): the
    /// kernel registration of `a/b` covers them. A wildcard elsewhere (`system.slice/agent-*`)
    /// is matched by the daemon against every cgroup, existing and new.
    fn cgroup_glob(&self, node: &Node) -> Result<CgroupMatch, PolicyError> {
        let glob = self.nonempty_str(node, "a cgroup glob")?;
        let trimmed = glob.trim_matches('/');
        if trimmed.split('/').any(|c| c == "." || c == ".." || c.is_empty()) {
            return Err(self.err(node.pos, format!(
                "cgroup glob `{glob}` can never match: it has an empty, `.` or `..` component"
            )));
        }
        // cgroup_mkdir() refuses names with a newline; no directory name holds a NUL.
        if trimmed.contains(['\n', '\0']) {
            return Err(self.err(node.pos, format!(
                "cgroup glob `{}` can never match: cgroup names cannot contain a newline or a NUL byte",
                glob.escape_debug()
            )));
        }
        if let Some(long) = trimmed.split('/').find(|c| c.len() > MAX_CGROUP_NAME && !c.contains(WILDCARDS)) {
            return Err(self.err(node.pos, format!(
                "cgroup glob `{glob}` can never match: `{}...` is longer than a cgroup name can be ({MAX_CGROUP_NAME} bytes)",
                &long[..long.char_indices().nth(16).map_or(long.len(), |(i, _)| i)]
            )));
        }
        let (dir, this, below) = match trimmed.strip_suffix("/**").or_else(|| trimmed.strip_suffix("/*")) {
            Some(dir) => (dir, false, true),
            None if trimmed == "*" || trimmed == "**" => ("", false, true),
            None => (trimmed, true, true),
        };
        let text = glob.to_owned();
        if dir.contains(WILDCARDS) {
            self.glob_syntax(node, trimmed, "cgroup glob")?;
            // Scan from the literal directory above the first wildcard.
            let first = trimmed.find(WILDCARDS).unwrap_or(0);
            let literal = trimmed[..first].rsplit_once('/').map_or("", |(d, _)| d);
            return Ok(CgroupMatch { dir: literal.to_owned(), this: true, below: true, glob: Some(trimmed.to_owned()), text, pos: node.pos });
        }
        if dir.is_empty() && this {
            return Err(self.err(node.pos, "the cgroup root cannot be an agent workload"));
        }
        Ok(CgroupMatch { dir: dir.to_owned(), this, below, glob: None, text, pos: node.pos })
    }

    /// A systemd unit name or glob (`agent-*.service`): its cgroup, in whatever slice.
    fn systemd_unit(&self, node: &Node) -> Result<CgroupMatch, PolicyError> {
        let unit = self.nonempty_str(node, "a systemd unit")?;
        const SUFFIXES: [&str; 3] = [".service", ".scope", ".slice"];
        if unit.contains('/') || !SUFFIXES.iter().any(|s| unit.ends_with(s)) {
            return Err(self.err(node.pos, format!(
                "`systemd_unit: {unit}` must be a unit name (or glob) ending in .service, .scope or .slice, without `/`"
            )));
        }
        let glob = format!("**/{unit}");
        self.glob_syntax(node, &glob, "systemd unit")?;
        Ok(CgroupMatch { dir: String::new(), this: true, below: true, glob: Some(glob), text: format!("systemd_unit: {unit}"), pos: node.pos })
    }

    fn glob_syntax(&self, node: &Node, glob: &str, what: &str) -> Result<(), PolicyError> {
        super::compile::glob(glob, true).map(drop).map_err(|e| self.err(node.pos, format!("{what} `{glob}`: {e}")))
    }

    /// `exec.deny`, `exec.hold`, `exec.allow`: rules in document order, and where `allow` is.
    fn exec(&self, node: &Node) -> Result<(Vec<ExecRule>, Option<Pos>), PolicyError> {
        let m = self.map(node, "`exec`", &["deny", "hold", "allow"])?;
        let mut rules = Vec::new();
        for (section, default) in [("deny", ExecAction::Kill), ("hold", ExecAction::Hold), ("allow", ExecAction::Allow)] {
            let Some(list) = m.get(section) else { continue };
            for r in self.seq(list, &format!("`exec.{section}`"))? {
                rules.push(self.exec_rule(r, section, default)?);
            }
        }
        rules.sort_by_key(|r| (r.pos.line, r.pos.col));
        Ok((rules, m.get("allow").map(|n| n.pos)))
    }

    /// `sql: destructive`, `sql: [destructive, uninspectable]`.
    fn sql_checks(&self, n: &Node, section: &str) -> Result<Vec<SqlCheck>, PolicyError> {
        if section == "allow" {
            return Err(self.err(n.pos, "`sql` belongs in `exec.deny` or `exec.hold`: it says when to stop a database client, not when to allow one"));
        }
        let items: Vec<&Node> = match &n.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![n],
        };
        if items.is_empty() {
            return Err(self.err(n.pos, "`sql` is an empty list: the rule would never match"));
        }
        let mut out = Vec::new();
        for i in items {
            let c = match self.str(i, "an `sql` condition")? {
                "destructive" => SqlCheck::Destructive,
                "uninspectable" => SqlCheck::Uninspectable,
                other => return Err(self.err(i.pos, format!("`sql` takes `destructive` or `uninspectable`, not `{other}`"))),
            };
            if !out.contains(&c) {
                out.push(c);
            }
        }
        Ok(out)
    }

    fn exec_rule(&self, node: &Node, section: &str, default: ExecAction) -> Result<ExecRule, PolicyError> {
        const KEYS: [&str; 13] = [
            "path", "path_prefix", "basename", "basename_prefix", "argv_any", "argv_all", "argv_glob",
            "cwd_prefix", "uid", "sql", "action", "approve_timeout", "message",
        ];
        let m = self.map(node, &format!("an `exec.{section}` rule"), &KEYS)?;
        let message = m.get("message").map(|n| self.str(n, "`message`").map(str::to_owned)).transpose()?;
        let given: Vec<(&str, &Node)> = ExecMatcher::KEYS.iter().filter_map(|k| m.get(k).map(|n| (*k, n))).collect();
        let (key, value) = match given.as_slice() {
            [one] => *one,
            [] => return Err(self.err(node.pos, "an exec rule needs a matcher: `path`, `path_prefix`, `basename` or `basename_prefix`")),
            [_, (second, n), ..] => {
                return Err(self.err(n.pos, format!("an exec rule takes one matcher; `{second}` is a second one")));
            }
        };
        let matcher = self.exec_matcher(key, value)?;
        let conditions = Conditions {
            argv_any: self.string_list(&m, "argv_any")?,
            argv_all: self.string_list(&m, "argv_all")?,
            argv_glob: self.string_list(&m, "argv_glob")?,
            cwd_prefix: match m.get("cwd_prefix") {
                Some(n) => {
                    let c = self.nonempty_str(n, "`cwd_prefix`")?;
                    if c.contains('\0') {
                        return Err(self.err(n.pos, "`cwd_prefix` contains a NUL byte: no directory name can, so it never matches"));
                    }
                    if !c.starts_with('/') {
                        return Err(self.err(n.pos, format!("`cwd_prefix` must be absolute, `{c}` is not")));
                    }
                    let trimmed = c.trim_end_matches('/');
                    Some(if trimmed.is_empty() { "/".to_owned() } else { trimmed.to_owned() })
                }
                None => None,
            },
            uid: match m.get("uid") {
                Some(n) => {
                    let items: Vec<&Node> = match &n.value {
                        Value::Seq(items) => items.iter().collect(),
                        _ => vec![n],
                    };
                    if items.is_empty() {
                        return Err(self.err(n.pos, "`uid` is an empty list: the rule would never match"));
                    }
                    items
                        .into_iter()
                        .map(|i| {
                            let t = self.str(i, "a uid")?;
                            t.parse::<u32>().map_err(|_| self.err(i.pos, format!("`{t}` is not a numeric uid")))
                        })
                        .collect::<Result<_, _>>()?
                }
                None => Vec::new(),
            },
            sql: match m.get("sql") {
                Some(n) => self.sql_checks(n, section)?,
                None => Vec::new(),
            },
        };
        if let Some(n) = m.get("argv_glob") {
            for g in &conditions.argv_glob {
                super::compile::glob(g, false).map_err(|e| self.err(n.pos, format!("argv_glob `{g}`: {e}")))?;
            }
        }
        let action = match m.get("action") {
            None => default,
            Some(n) => {
                let a = self.str(n, "`action`")?;
                let action = match a {
                    "kill" | "deny" => ExecAction::Kill,
                    "hold" => ExecAction::Hold,
                    "audit" => ExecAction::Audit,
                    "allow" => ExecAction::Allow,
                    other => return Err(self.err(n.pos, format!("`action` must be `kill`, `deny`, `hold` or `audit`, not `{other}`"))),
                };
                if (section == "allow") != (action == ExecAction::Allow) {
                    return Err(self.err(n.pos, format!(
                        "`action: {a}` does not belong in `exec.{section}`: allow rules go in `exec.allow`, the others in `exec.deny` or `exec.hold`"
                    )));
                }
                action
            }
        };
        let approve_timeout = match m.get("approve_timeout") {
            None => DEFAULT_APPROVE_TIMEOUT,
            Some(n) if action != ExecAction::Hold => {
                return Err(self.err(n.pos, "`approve_timeout` only applies to `hold` rules"));
            }
            Some(n) => self.duration(n)?,
        };
        Ok(ExecRule { section: section_name(section), matcher, conditions, action, approve_timeout, message, pos: node.pos })
    }

    fn exec_matcher(&self, key: &str, value: &Node) -> Result<ExecMatcher, PolicyError> {
        let text = self.nonempty_str(value, &format!("`{key}`"))?;
        if text.contains('\0') {
            return Err(self.err(value.pos, format!("`{key}` must not contain a NUL byte")));
        }
        Ok(match key {
            "path" | "path_prefix" => {
                if !text.starts_with('/') {
                    return Err(self.err(value.pos, format!("`{key}` must be absolute, `{text}` is not")));
                }
                if key == "path" {
                    if text.ends_with('/') {
                        return Err(self.err(value.pos, format!(
                            "`path: {text}` ends in `/`, so it names no file that can run; use `path_prefix` for a directory"
                        )));
                    }
                    if text.len() > MAX_RULE_PATH {
                        return Err(self.err(value.pos, format!("`path` is longer than {MAX_RULE_PATH} bytes")));
                    }
                    ExecMatcher::Path(text.to_owned())
                } else {
                    // A prefix names a directory: `/opt/tools` means `/opt/tools/`, never `/opt/toolsX`.
                    let dir = if text.ends_with('/') { text.to_owned() } else { format!("{text}/") };
                    if dir.len() > MAX_RULE_PREFIX {
                        return Err(self.err(value.pos, format!("`path_prefix` is longer than {MAX_RULE_PREFIX} bytes")));
                    }
                    ExecMatcher::PathPrefix(dir)
                }
            }
            _ => {
                if text.contains('/') || text.len() > MAX_RULE_BASENAME {
                    return Err(self.err(value.pos, format!(
                        "`{key}` `{text}` must not contain `/` and is at most {MAX_RULE_BASENAME} bytes"
                    )));
                }
                if key == "basename" && (text == "." || text == "..") {
                    return Err(self.err(value.pos, format!("`basename: {text}` names no file: it can never match")));
                }
                if key == "basename" { ExecMatcher::Basename(text.to_owned()) } else { ExecMatcher::BasenamePrefix(text.to_owned()) }
            }
        })
    }

    /// A list of strings (a single string is a list of one); absent is empty, `[]` an error.
    fn string_list(&self, m: &Map<'_>, key: &str) -> Result<Vec<String>, PolicyError> {
        let Some(n) = m.get(key) else { return Ok(Vec::new()) };
        let items: Vec<&Node> = match &n.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![n],
        };
        if items.is_empty() {
            return Err(self.err(n.pos, format!("`{key}` is an empty list: the rule would never match")));
        }
        items
            .into_iter()
            .map(|i| {
                let t = self.str(i, &format!("an entry of `{key}`"))?;
                // execve takes NUL-terminated strings: no argument can hold a NUL.
                if t.contains('\0') {
                    return Err(self.err(i.pos, format!("an entry of `{key}` contains a NUL byte: no argument can, so it never matches")));
                }
                Ok(t.to_owned())
            })
            .collect()
    }

    /// `500ms`, `30s`, `2m`, `1h`.
    pub(crate) fn duration(&self, node: &Node) -> Result<std::time::Duration, PolicyError> {
        let t = self.str(node, "a duration")?;
        let bad = || self.err(node.pos, format!("`{t}` is not a duration like `500ms`, `30s`, `2m` or `1h`"));
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (n, unit) = t.split_at(split);
        let n: u64 = n.parse().map_err(|_| bad())?;
        let d = match unit {
            "ms" => std::time::Duration::from_millis(n),
            "s" => std::time::Duration::from_secs(n),
            "m" => std::time::Duration::from_secs(n.saturating_mul(60)),
            "h" => std::time::Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        if d.is_zero() || d > std::time::Duration::from_secs(86_400) {
            return Err(self.err(node.pos, format!("`{t}` must be more than 0 and at most 24h")));
        }
        Ok(d)
    }

}

const WILDCARDS: [char; 4] = ['*', '?', '[', '{'];

fn section_name(section: &str) -> &'static str {
    match section {
        "hold" => "exec.hold",
        "allow" => "exec.allow",
        _ => "exec.deny",
    }
}

/// The valid key nearest to `key` by edit distance, if it is near enough to be a typo.
fn closest<'a>(key: &str, valid: &[&'a str]) -> Option<&'a str> {
    valid
        .iter()
        .map(|v| (edit_distance(key, v), *v))
        .filter(|(d, v)| *d <= (v.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::NetAction;

    fn err(text: &str) -> String {
        parse("p.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn full_policy() {
        let p = parse(
            "p.yaml",
            "mode: audit\nagents:\n  - name: a\n    match:\n      cgroup: \"guard/a/*\"\n    exec:\n      deny:\n        - path: /usr/bin/shred\n          message: no\n        - basename: mkfs.ext4\n    network:\n      default: deny\n      allow:\n        - cidr: 127.0.0.0/8\n          ports: [80, \"1000-2000\"]\n      deny:\n        - cidr: ::1\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Audit);
        let a = &p.agents[0];
        assert_eq!(a.cgroups, vec![CgroupMatch { dir: "guard/a".into(), this: false, below: true, glob: None, text: "guard/a/*".into(), pos: Pos { line: 5, col: 15 } }]);
        assert_eq!(a.exec[0].matcher, ExecMatcher::Path("/usr/bin/shred".into()));
        assert_eq!(a.exec[0].message.as_deref(), Some("no"));
        assert_eq!(a.exec[1].matcher, ExecMatcher::Basename("mkfs.ext4".into()));
        assert_eq!(a.network.default, NetAction::Deny);
        assert_eq!(a.network.rules.len(), 2);
        assert_eq!(a.network.rules[0].ports, vec![(80, 80), (1000, 2000)]);
        assert_eq!(a.network.rules[1].action, NetAction::Deny);
        assert_eq!(a.network.rules[1].cidr.to_string(), "::1/128");
        assert_eq!(p.hash.len(), 64);
    }

    #[test]
    fn default_cgroup_is_launch_dir() {
        let p = parse("p.yaml", "agents:\n  - name: claude\n").unwrap();
        assert_eq!(p.agents[0].cgroups[0].dir, "guard/claude");
        assert!(!p.agents[0].cgroups[0].this && p.agents[0].cgroups[0].below);
    }

    #[test]
    fn errors_name_file_line_column() {
        assert_eq!(err("agents:\n  - name: a\n    exce: {}\n"), "p.yaml:3:5: unknown key `exce` in an agent (did you mean `exec`?); valid keys: name, mode, match, exec, network, exfil, files");
        assert!(err("agents: [\n").starts_with("p.yaml:2:1: YAML syntax error"), "{}", err("agents: [\n"));
        assert_eq!(err("agents:\n  - name: a\n    network:\n      deny:\n        - cidr: 10.0.0.0/33\n"), "p.yaml:5:17: `10.0.0.0/33` is not a valid CIDR: bad prefix length");
        assert_eq!(err("agents:\n  - name: a\n  - name: a\n"), "p.yaml:3:5: agent `a` is defined twice");
        assert_eq!(err("agents:\n  - name: a\n    exec:\n      deny:\n        - {}\n"), "p.yaml:5:11: an exec rule needs a matcher: `path`, `path_prefix`, `basename` or `basename_prefix`");
        assert_eq!(err("agents:\n  - name: a\n    exec:\n      deny:\n        - {path: /a, basename: b}\n"), "p.yaml:5:32: an exec rule takes one matcher; `basename` is a second one");
        assert_eq!(err("agents:\n  - name: a\n    exec:\n      deny:\n        - basename_prefix: a/b\n"), "p.yaml:5:28: `basename_prefix` `a/b` must not contain `/` and is at most 62 bytes");
        assert_eq!(err("agents:\n  - name: a\n    exec:\n      deny:\n        - path: rm\n"), "p.yaml:5:17: `path` must be absolute, `rm` is not");
        assert_eq!(err("agents:\n  - name: a\n    network:\n      deny:\n        - cidr: ::1\n          ports: [0]\n"), "p.yaml:6:19: `0` is not a port (1-65535) or range (`lo-hi`)");
        assert_eq!(err("mode: loud\nagents: []\n"), "p.yaml:1:7: `mode` must be `enforce` or `audit`, not `loud`");
        assert_eq!(err("agents: []\n"), "p.yaml:1:9: `agents` is empty: a policy needs at least one agent");
        assert_eq!(err(""), "p.yaml:1:1: the policy is empty; it needs at least `agents:`");
        assert_eq!(err("agents:\n  - name: a\n    match: {cgroup: \"x//y\"}\n"), "p.yaml:3:21: cgroup glob `x//y` can never match: it has an empty, `.` or `..` component");
        assert_eq!(err("agents:\n  - name: \"a/b\"\n"), "p.yaml:2:11: agent name `a/b` may only use letters, digits, `-`, `_` and `.` (it names a cgroup)");
    }

    #[test]
    fn cidr_host_bits_cleared() {
        let p = parse("p", "agents:\n  - name: a\n    network:\n      deny:\n        - cidr: 10.1.2.3/8\n").unwrap();
        assert_eq!(p.agents[0].network.rules[0].cidr.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn embedded_default_policy_is_valid() {
        let p = super::super::default_policy();
        assert!(!p.agents.is_empty());
    }
}
