//! The `files` section of an agent: protected paths.
//!
//! ```yaml
//! files:
//!   protect:
//!     - path: /srv/data/**          # the directory and everything below it
//!       deny: [delete, rename, truncate, write]
//!     - path: /etc/**
//!       deny: [write, delete, rename]
//! ```
//!
//! A path names what it protects and everything below it (`/srv/data/**` and `/srv/data`
//! protect the same tree). A wildcard (`/home/*/.ssh`) is expanded when a workload is launched.
//! Enforcement is a Landlock ruleset applied by `guard-agent launch` (see `crate::landlock`);
//! the daemon reports the calls that fail (see `daemon/files.rs`).
use globset::{GlobSet, GlobSetBuilder};

use super::{
    Agent, Mode, PolicyError, Pos,
    lint::warning,
    parse::Parser,
    yaml::{Node, Value},
};

/// `deny` operations, as bits.
pub const OP_WRITE: u8 = 1 << 0;
pub const OP_TRUNCATE: u8 = 1 << 1;
pub const OP_DELETE: u8 = 1 << 2;
pub const OP_RENAME: u8 = 1 << 3;
/// Every operation, in the order they are shown.
pub const OPS: [(u8, &str); 4] = [(OP_DELETE, "delete"), (OP_RENAME, "rename"), (OP_TRUNCATE, "truncate"), (OP_WRITE, "write")];

/// The names of the operations in `ops`, in [`OPS`] order.
pub fn op_names(ops: u8) -> Vec<&'static str> {
    OPS.iter().filter(|(b, _)| ops & b != 0).map(|(_, n)| *n).collect()
}

#[derive(Debug, Clone)]
pub struct Files {
    pub protect: Vec<ProtectRule>,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct ProtectRule {
    /// As written.
    pub path: String,
    /// `OP_*` bits.
    pub deny: u8,
    pub message: Option<String>,
    pub pos: Pos,
}

impl ProtectRule {
    /// The path without a trailing `/**` (or `/`): what is protected, with everything below.
    pub fn root(&self) -> &str {
        root_of(&self.path)
    }

    /// Whether the root has wildcards (expanded at launch).
    pub fn is_glob(&self) -> bool {
        self.root().contains(WILDCARDS)
    }

    /// `path: P deny: [..]`, as verdicts and `status` show the rule.
    pub fn shown(&self) -> String {
        format!("path: {} deny: [{}]", self.path, op_names(self.deny).join(", "))
    }

    /// A matcher for the paths the rule covers: the root and everything below it.
    pub fn matcher(&self) -> Result<GlobSet, globset::Error> {
        let root = self.root();
        let mut b = GlobSetBuilder::new();
        b.add(globset::GlobBuilder::new(root).literal_separator(true).backslash_escape(true).build()?);
        let below = if root == "/" { "/**".to_owned() } else { format!("{root}/**") };
        b.add(globset::GlobBuilder::new(&below).literal_separator(true).backslash_escape(true).build()?);
        b.build()
    }
}

/// A protect rule as the daemon uses it: its rule id (verdicts name it) and its matcher.
#[derive(Debug, Clone)]
pub struct ProtectEntry {
    pub rule_id: u32,
    pub rule: ProtectRule,
    pub matcher: GlobSet,
    /// `file:line` of the rule.
    pub location: String,
}

/// The agent's protect rules with rule ids from `add_rule(matcher, message, pos)`.
pub fn compile(agent: &Agent, mut add_rule: impl FnMut(String, &Option<String>, Pos) -> u32) -> Result<Vec<ProtectEntry>, PolicyError> {
    let Some(files) = &agent.files else { return Ok(Vec::new()) };
    files
        .protect
        .iter()
        .map(|r| {
            let matcher = r.matcher().map_err(|e| PolicyError { file: agent.file.clone(), pos: r.pos, message: format!("protected path `{}`: {e}", r.path) })?;
            let rule_id = add_rule(r.shown(), &r.message, r.pos);
            Ok(ProtectEntry { rule_id, rule: r.clone(), matcher, location: format!("{}:{}", agent.file, r.pos.line) })
        })
        .collect()
}

/// The first rule that covers `path` and denies one of `ops`; else the first that covers it.
pub fn rule_for<'a>(rules: &'a [ProtectEntry], path: &str, ops: u8) -> Option<&'a ProtectEntry> {
    let covering = || rules.iter().filter(|r| r.matcher.is_match(path));
    covering().find(|r| r.rule.deny & ops != 0).or_else(|| covering().next())
}

/// The rule whose protected root lies below the directory `dir` (an ancestor of it), if any:
/// Landlock cannot grant rights on `dir`'s own entries without granting them on the root.
pub fn rule_above<'a>(rules: &'a [ProtectEntry], dir: &str, ops: u8) -> Option<&'a ProtectEntry> {
    let below = |r: &&ProtectEntry| {
        let root = r.rule.root();
        let prefix = if dir == "/" { "/".to_owned() } else { format!("{dir}/") };
        root.starts_with(&prefix) || (r.rule.is_glob() && glob_could_be_below(root, dir))
    };
    rules.iter().filter(below).find(|r| r.rule.deny & ops != 0)
}

/// A wildcard root may expand below `dir`: its literal start is `dir` or above it.
fn glob_could_be_below(root: &str, dir: &str) -> bool {
    let literal = &root[..root.find(WILDCARDS).unwrap_or(root.len())];
    let literal = literal.rsplit_once('/').map_or("/", |(d, _)| if d.is_empty() { "/" } else { d });
    dir == literal || dir.starts_with(&format!("{}/", literal.trim_end_matches('/'))) || literal.starts_with(&format!("{dir}/"))
}

fn root_of(path: &str) -> &str {
    let p = path.strip_suffix("/**").unwrap_or(path);
    let p = p.trim_end_matches('/');
    if p.is_empty() { "/" } else { p }
}

const WILDCARDS: [char; 4] = ['*', '?', '[', '{'];
/// Keys of the `files` mapping (`delete_budget` is parsed in delete_budget.rs).
pub const FILES_KEYS: &[&str] = &["protect", "delete_budget"];

impl Parser<'_> {
    /// `files.protect`; `None` when the mapping has only a `delete_budget`.
    pub(crate) fn files(&self, node: &Node) -> Result<Option<Files>, PolicyError> {
        let m = self.map(node, "`files`", FILES_KEYS)?;
        let Some(list) = m.get("protect") else {
            if m.get("delete_budget").is_some() {
                return Ok(None);
            }
            return Err(self.err(node.pos, "`files` is empty: give `protect` or `delete_budget`"));
        };
        let items = self.seq(list, "`files.protect`")?;
        if items.is_empty() {
            return Err(self.err(list.pos, "`files.protect` is an empty list: give at least one `path` and `deny`"));
        }
        let protect = items.iter().map(|n| self.protect_rule(n)).collect::<Result<_, _>>()?;
        Ok(Some(Files { protect, pos: node.pos }))
    }

    fn protect_rule(&self, node: &Node) -> Result<ProtectRule, PolicyError> {
        let m = self.map(node, "a `files.protect` rule", &["path", "deny", "message"])?;
        let path_node = m.require("path", node, self)?;
        let path = self.nonempty_str(path_node, "`path`")?;
        if let Some(why) = bad_path(path) {
            return Err(self.err(path_node.pos, format!("protected path `{}` {why}", path.escape_debug())));
        }
        let root = root_of(path);
        if root.contains(WILDCARDS) {
            super::compile::glob(root, true).map_err(|e| self.err(path_node.pos, format!("protected path `{path}`: {e}")))?;
        }
        let deny_node = m.require("deny", node, self)?;
        let items: Vec<&Node> = match &deny_node.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![deny_node],
        };
        if items.is_empty() {
            return Err(self.err(deny_node.pos, "`deny` is an empty list: the rule would protect nothing; give some of delete, rename, truncate, write"));
        }
        let mut deny = 0u8;
        for item in items {
            let name = self.str(item, "an entry of `deny`")?;
            let Some((bit, _)) = OPS.iter().find(|(_, n)| *n == name) else {
                return Err(self.err(item.pos, format!("unknown operation `{name}` in `deny`; valid: delete, rename, truncate, write")));
            };
            if deny & bit != 0 {
                return Err(self.err(item.pos, format!("`{name}` appears twice in `deny`")));
            }
            deny |= bit;
        }
        let message = m.get("message").map(|n| self.str(n, "`message`").map(str::to_owned)).transpose()?;
        Ok(ProtectRule { path: path.to_owned(), deny, message, pos: node.pos })
    }
}

/// Why a protected path can never name anything, if so.
fn bad_path(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("must be absolute");
    }
    if path.contains('\0') {
        return Some("contains a NUL byte: no file name can");
    }
    let root = root_of(path);
    if root == "/" {
        return None;
    }
    let parts: Vec<&str> = root[1..].split('/').collect();
    if parts.iter().any(|c| c.is_empty() || *c == "." || *c == "..") {
        return Some("has an empty, `.` or `..` component: resolved paths never do");
    }
    if parts.iter().any(|c| c.contains("**")) {
        return Some("uses `**` before its end: only a trailing `/**` (everything below) is supported");
    }
    if parts.iter().any(|c| c.len() > 255 && !c.contains(WILDCARDS)) {
        return Some("has a component longer than a file name can be (255 bytes)");
    }
    None
}

/// Warnings for protect rules: what Landlock cannot express exactly, and what it does not reach.
pub fn lint(agent: &Agent, mode: Mode, warnings: &mut Vec<String>) {
    let Some(files) = &agent.files else { return };
    let mut warn = |pos: Pos, m: String| warnings.push(warning(&agent.file, pos, m));
    if mode == Mode::Audit {
        warn(files.pos, "audit mode: `files.protect` is not applied (no Landlock ruleset) and calls it would deny are not reported".into());
    }
    let all = files.protect.iter().fold(0, |a, r| a | r.deny);
    match crate::landlock::abi() {
        Err(e) => warn(files.pos, format!("on this host {e}: `guard-agent launch` would refuse to start this agent's workloads")),
        Ok(abi) => {
            if let Some(m) = crate::landlock::missing(all, abi) {
                warn(files.pos, format!("this host's kernel has Landlock ABI {abi}: {m}"));
            }
        }
    }
    let launched_only = agent.containers.is_empty() && agent.cgroups.iter().all(|c| c.glob.is_none() && (c.dir == format!("{}/{}", crate::paths::AGENT_CGROUP_DIR, agent.name) || c.dir.starts_with(&format!("{}/", crate::paths::AGENT_CGROUP_DIR))));
    if !launched_only {
        warn(files.pos, format!(
            "agent `{}` also matches workloads not started by `guard-agent launch` (systemd units, containers, cgroups made by others): they get no Landlock ruleset, so `files.protect` does not protect them (BPF LSM, which could, is not active on this tier)",
            agent.name
        ));
    }
    for r in &files.protect {
        let root = r.root();
        if r.is_glob() {
            warn(r.pos, format!("`{}` has wildcards: it is expanded when a workload is launched; paths that match only later are not protected", r.path));
        } else if std::fs::symlink_metadata(root).is_err() {
            warn(r.pos, format!("`{root}` does not exist now: created after a workload is launched, it gets none of the rights the ruleset handles (as any new entry of a directory above a protected path): nothing can be written, removed or created in it"));
        }
        let dir_ops = r.deny & (OP_DELETE | OP_RENAME | OP_WRITE);
        if root != "/" && dir_ops != 0 {
            let parent = root.rsplit_once('/').map_or("/", |(p, _)| if p.is_empty() { "/" } else { p });
            warn(r.pos, format!(
                "Landlock grants rights by directory tree: the workload cannot {} entries directly in `{parent}` or the directories above it (only inside their other subdirectories), and entries created there after the launch get none of the rights the ruleset handles",
                match (r.deny & OP_WRITE != 0, r.deny & (OP_DELETE | OP_RENAME) != 0) {
                    (true, true) => "create, remove or rename",
                    (true, false) => "create",
                    _ => "remove or rename",
                }
            ));
        }
        match (r.deny & OP_DELETE != 0, r.deny & OP_RENAME != 0) {
            (true, false) => warn(r.pos, format!("Landlock cannot tell a rename from a delete (both remove an entry from its directory): `deny: [delete]` also stops renaming or moving entries out of `{root}`")),
            (false, true) => warn(r.pos, format!("Landlock cannot tell a rename from a delete (both remove an entry from its directory): `deny: [rename]` also stops deleting entries of `{root}`")),
            _ => {}
        }
        if r.deny & OP_WRITE != 0 {
            warn(r.pos, format!("`write` also denies truncating, and creating files, directories, links or device nodes under `{root}`"));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::parse::parse;

    fn err(files: &str) -> String {
        parse("p.yaml", &format!("agents:\n  - name: a\n    files:\n{files}")).unwrap_err().to_string()
    }

    #[test]
    fn parses_the_issue_example() {
        let p = parse(
            "p.yaml",
            "agents:\n  - name: a\n    files:\n      protect:\n        - path: /srv/data/**\n          deny: [delete, rename, truncate, write]\n        - path: /etc/**\n          deny: [write, delete, rename]\n",
        )
        .unwrap();
        let f = p.agents[0].files.as_ref().unwrap();
        assert_eq!(f.protect.len(), 2);
        assert_eq!(f.protect[0].root(), "/srv/data");
        assert_eq!(f.protect[0].shown(), "path: /srv/data/** deny: [delete, rename, truncate, write]");
        assert_eq!(f.protect[1].deny, super::OP_WRITE | super::OP_DELETE | super::OP_RENAME);
        assert_eq!(f.protect[1].pos.line, 7);
        let m = f.protect[0].matcher().unwrap();
        assert!(m.is_match("/srv/data") && m.is_match("/srv/data/a/b") && !m.is_match("/srv/database") && !m.is_match("/srv"));
    }

    #[test]
    fn errors_name_file_line_column() {
        assert_eq!(err("      protect:\n        - path: srv/data\n          deny: [write]\n"), "p.yaml:5:17: protected path `srv/data` must be absolute");
        assert_eq!(err("      protect:\n        - path: /srv\n          deny: [write, shred]\n"), "p.yaml:6:25: unknown operation `shred` in `deny`; valid: delete, rename, truncate, write");
        assert_eq!(err("      protect:\n        - path: /srv\n          deny: []\n"), "p.yaml:6:17: `deny` is an empty list: the rule would protect nothing; give some of delete, rename, truncate, write");
        assert_eq!(err("      protect: []\n"), "p.yaml:4:16: `files.protect` is an empty list: give at least one `path` and `deny`");
        assert_eq!(err("      protect:\n        - path: /srv\n"), "p.yaml:5:11: missing required key `deny`");
        assert_eq!(err("      protect:\n        - path: /srv/**/db\n          deny: write\n"), "p.yaml:5:17: protected path `/srv/**/db` uses `**` before its end: only a trailing `/**` (everything below) is supported");
        assert_eq!(err("      protect:\n        - path: /srv/../etc\n          deny: write\n"), "p.yaml:5:17: protected path `/srv/../etc` has an empty, `.` or `..` component: resolved paths never do");
        assert_eq!(err("      protect:\n        - path: /srv\n          deny: [write, write]\n"), "p.yaml:6:25: `write` appears twice in `deny`");
        assert_eq!(err("      protect:\n        - path: /srv\n          deny: [write]\n          delete: yes\n"), "p.yaml:7:11: unknown key `delete` in a `files.protect` rule; valid keys: path, deny, message");
        assert_eq!(err("      {}\n"), "p.yaml:4:7: `files` is empty: give `protect` or `delete_budget`");
    }

    #[test]
    fn warnings_say_what_landlock_cannot_express() {
        let p = parse(
            "p.yaml",
            "agents:\n  - name: a\n    match: {systemd_unit: agent-*.service}\n    files:\n      protect:\n        - path: /nonexistent-guard-test/**\n          deny: [delete]\n        - path: /home/*/.ssh\n          deny: [write]\n",
        )
        .unwrap();
        let mut w = Vec::new();
        super::lint(&p.agents[0], crate::policy::Mode::Enforce, &mut w);
        let all = w.join("\n");
        assert!(all.contains("p.yaml:5:7: warning: agent `a` also matches workloads not started by `guard-agent launch`"), "{all}");
        assert!(all.contains("p.yaml:6:11: warning: `/nonexistent-guard-test` does not exist now"), "{all}");
        assert!(all.contains("`deny: [delete]` also stops renaming"), "{all}");
        assert!(all.contains("p.yaml:8:11: warning: `/home/*/.ssh` has wildcards"), "{all}");
        assert!(all.contains("entries directly in `/home/*`") || all.contains("entries directly in `/home"), "{all}");
        let launched = parse("p.yaml", "agents:\n  - name: a\n    files:\n      protect:\n        - path: /\n          deny: [write]\n").unwrap();
        let mut w = Vec::new();
        super::lint(&launched.agents[0], crate::policy::Mode::Audit, &mut w);
        assert!(w[0].contains("audit mode"), "{w:?}");
        assert!(!w.iter().any(|x| x.contains("not started by")), "{w:?}");
    }
}
