//! Exec rules as the daemon evaluates them: for a held process (argv conditions, approval), in
//! audit mode, and for `guard-agent policy explain`. The kernel decides what it can alone
//! (binary matchers without conditions); everything here agrees with it on those: a kill beats
//! a hold, a hold beats an audit, an audit beats an allow, and with `exec.allow` an exec no
//! rule allows is killed.
use super::{
    ExecAction, ExecMatcher, SqlCheck,
    compile::{AgentEntry, EvalRule},
};

/// What is known about one exec.
#[derive(Debug, Clone, Default)]
pub struct ExecContext {
    /// The filename passed to `execve`.
    pub filename: String,
    /// The executed file with symlinks resolved (`/proc/PID/exe`), if known.
    pub exe: Option<String>,
    /// The executed file's (kernel dev, inode), if known.
    pub identity: Option<(u32, u64)>,
    /// argv, argv[0] included.
    pub argv: Vec<String>,
    pub cwd: Option<String>,
    pub euid: u32,
    /// What a database client will run, when a rule's `sql` condition needs it.
    pub sql: Option<crate::sql::Report>,
}

/// The outcome for one exec.
#[derive(Debug, Clone)]
pub struct Judgement<'a> {
    /// `None`: no rule matched and nothing stops it.
    pub action: Option<ExecAction>,
    /// The deciding rule's id (the allow-list rule when off the allow list).
    pub rule_id: u32,
    /// The deciding rule, when one matched.
    pub rule: Option<&'a EvalRule>,
    /// Every rule that matched, in document order.
    pub matched: Vec<&'a EvalRule>,
}

pub fn evaluate<'a>(agent: &'a AgentEntry, ctx: &ExecContext) -> Judgement<'a> {
    let matched: Vec<&EvalRule> = agent.exec.iter().filter(|r| binary_matches(r, ctx) && conditions_hold(r, ctx)).collect();
    // Strongest action first; the first such rule in document order among equals.
    let best = matched.iter().copied().min_by_key(|r| r.rule.action);
    match best {
        Some(r) => Judgement { action: Some(r.rule.action), rule_id: r.id, rule: Some(r), matched },
        None => match agent.allowlist_rule {
            Some(id) => Judgement { action: Some(ExecAction::Kill), rule_id: id, rule: None, matched },
            None => Judgement { action: None, rule_id: 0, rule: None, matched },
        },
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The rule's binary matcher, as the kernel applies it (by name, by path, by identity).
pub fn binary_matches(r: &EvalRule, ctx: &ExecContext) -> bool {
    let exe = ctx.exe.as_deref();
    match &r.rule.matcher {
        ExecMatcher::Path(p) => ctx.filename == *p || (r.identity.is_some() && ctx.identity == r.identity) || exe == Some(p.as_str()),
        ExecMatcher::PathPrefix(d) => {
            ctx.filename.starts_with(d.as_str())
                || exe.is_some_and(|e| e.starts_with(d.as_str()) || r.canonical_dir.as_deref().is_some_and(|c| e.starts_with(c)))
        }
        ExecMatcher::Basename(b) => basename(&ctx.filename) == b || exe.is_some_and(|e| basename(e) == b),
        ExecMatcher::BasenamePrefix(b) => {
            basename(&ctx.filename).starts_with(b.as_str()) || exe.is_some_and(|e| basename(e).starts_with(b.as_str()))
        }
    }
}

/// The rule's conditions on argv (after argv[0]), cwd and uid; all must hold.
pub fn conditions_hold(r: &EvalRule, ctx: &ExecContext) -> bool {
    let c = &r.rule.conditions;
    let args = ctx.argv.get(1..).unwrap_or_default();
    if !c.argv_any.is_empty() && !args.iter().any(|a| c.argv_any.contains(a)) {
        return false;
    }
    if !c.argv_all.iter().all(|want| args.contains(want)) {
        return false;
    }
    if let Some(set) = &r.argv_glob {
        if !args.iter().any(|a| set.is_match(a)) {
            return false;
        }
    }
    if let Some(prefix) = &c.cwd_prefix {
        // An unknown working directory fails closed: a kill or hold rule applies, an allow
        // (or audit) rule does not.
        let Some(cwd) = &ctx.cwd else { return matches!(r.rule.action, ExecAction::Kill | ExecAction::Hold) };
        let under = prefix == "/" || cwd == prefix || cwd.strip_prefix(prefix.as_str()).is_some_and(|rest| rest.starts_with('/'));
        if !under {
            return false;
        }
    }
    if !c.uid.is_empty() && !c.uid.contains(&ctx.euid) {
        return false;
    }
    if !c.sql.is_empty() {
        // Not inspected (nobody gathered it): fails closed, like an unknown cwd.
        let Some(report) = &ctx.sql else { return matches!(r.rule.action, ExecAction::Kill | ExecAction::Hold) };
        let hit = c.sql.iter().any(|k| match k {
            SqlCheck::Destructive => report.destructive.is_some(),
            SqlCheck::Uninspectable => report.uninspectable.is_some(),
        });
        if !hit {
            return false;
        }
    }
    true
}

/// Whether a rule of `agent` with an `sql` condition names this exec's binary, and if so the
/// client's name to read its statements as (the executed file's own name, else the one invoked).
pub fn sql_client(agent: &AgentEntry, ctx: &ExecContext) -> Option<String> {
    agent.exec.iter().any(|r| !r.rule.conditions.sql.is_empty() && binary_matches(r, ctx)).then(|| {
        let exe = ctx.exe.as_deref().map(basename).filter(|b| crate::sql::dialect(b).is_some());
        exe.unwrap_or_else(|| basename(&ctx.filename)).to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{compile::compile, parse::parse};

    fn judge(policy: &str, argv: &[&str]) -> (Option<ExecAction>, u32) {
        let c = compile(&parse("p.yaml", policy).unwrap(), 0).unwrap();
        let ctx = ExecContext {
            filename: format!("/usr/bin/{}", argv[0]),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            cwd: Some("/home/u/proj".into()),
            euid: 1000,
            ..Default::default()
        };
        let j = evaluate(&c.agents[0], &ctx);
        (j.action, j.rule_id)
    }

    const RM: &str = "agents:\n  - name: a\n    exec:\n      deny:\n        - basename: rm\n          argv_any: [\"--no-preserve-root\", \"/\"]\n      hold:\n        - basename: git\n          argv_all: [push]\n          argv_glob: [\"--force*\", \"-f\"]\n";

    #[test]
    fn argv_conditions() {
        assert_eq!(judge(RM, &["rm", "-rf", "--no-preserve-root", "/tmp/x"]), (Some(ExecAction::Kill), 1));
        assert_eq!(judge(RM, &["rm", "-rf", "/"]), (Some(ExecAction::Kill), 1));
        assert_eq!(judge(RM, &["rm", "-rf", "./build"]), (None, 0));
        // argv[0] is not an argument.
        assert_eq!(judge(RM, &["/", "x"]).0, None);
        assert_eq!(judge(RM, &["git", "push", "--force-with-lease"]), (Some(ExecAction::Hold), 2));
        assert_eq!(judge(RM, &["git", "push", "-f"]), (Some(ExecAction::Hold), 2));
        assert_eq!(judge(RM, &["git", "push"]).0, None);
        assert_eq!(judge(RM, &["git", "commit", "-f"]).0, None);
    }

    #[test]
    fn kill_beats_hold_beats_audit_beats_allow() {
        let p = "agents:\n  - name: a\n    exec:\n      allow:\n        - basename: x\n      deny:\n        - basename: x\n          action: audit\n        - basename: x\n          argv_any: [k]\n      hold:\n        - basename: x\n          argv_any: [h, k]\n";
        // Id 1 is the allow list's own rule; the others follow in document order.
        assert_eq!(judge(p, &["x"]), (Some(ExecAction::Audit), 3));
        assert_eq!(judge(p, &["x", "h"]), (Some(ExecAction::Hold), 5));
        assert_eq!(judge(p, &["x", "k"]), (Some(ExecAction::Kill), 4));
    }

    #[test]
    fn allow_list_kills_the_rest() {
        let p = "agents:\n  - name: a\n    exec:\n      allow:\n        - basename: ls\n        - basename: git\n          cwd_prefix: /home/u\n";
        assert_eq!(judge(p, &["ls"]).0, Some(ExecAction::Allow));
        assert_eq!(judge(p, &["git"]).0, Some(ExecAction::Allow));
        // The allow-list rule has id 1 (made first, at `exec.allow`).
        assert_eq!(judge(p, &["cat"]), (Some(ExecAction::Kill), 1));
        let other_cwd = "agents:\n  - name: a\n    exec:\n      allow:\n        - basename: git\n          cwd_prefix: /srv\n";
        assert_eq!(judge(other_cwd, &["git"]).0, Some(ExecAction::Kill));
    }

    #[test]
    fn uid_and_cwd() {
        let p = "agents:\n  - name: a\n    exec:\n      deny:\n        - basename: make\n          uid: [0]\n        - basename: cargo\n          cwd_prefix: /home/u/proj/\n";
        assert_eq!(judge(p, &["make"]).0, None);
        assert_eq!(judge(p, &["cargo"]).0, Some(ExecAction::Kill));
        let p2 = "agents:\n  - name: a\n    exec:\n      deny:\n        - basename: cargo\n          cwd_prefix: /home/u/pro\n";
        assert_eq!(judge(p2, &["cargo"]).0, None, "a prefix is a directory, not a string prefix");
    }

    #[test]
    fn an_unknown_cwd_fails_closed() {
        let judge_nowhere = |policy: &str| {
            let c = compile(&parse("p.yaml", policy).unwrap(), 0).unwrap();
            let ctx = ExecContext { filename: "/usr/bin/git".into(), argv: vec!["git".into()], cwd: None, ..Default::default() };
            evaluate(&c.agents[0], &ctx).action
        };
        let deny = "agents:\n  - name: a\n    exec:\n      deny:\n        - basename: git\n          cwd_prefix: /srv\n";
        assert_eq!(judge_nowhere(deny), Some(ExecAction::Kill));
        let allow = "agents:\n  - name: a\n    exec:\n      allow:\n        - basename: git\n          cwd_prefix: /srv\n";
        assert_eq!(judge_nowhere(allow), Some(ExecAction::Kill), "an allow rule needing a cwd does not allow without one");
    }

    #[test]
    fn sql_conditions_judge_what_the_client_will_run() {
        let p = "agents:\n  - name: a\n    exec:\n      deny:\n        - basename: sqlite3\n          sql: destructive\n      hold:\n        - basename: sqlite3\n          sql: [uninspectable]\n";
        let c = compile(&parse("p.yaml", p).unwrap(), 0).unwrap();
        let a = &c.agents[0];
        let judge = |argv: &[&str], gathered: bool| {
            let mut ctx = ExecContext { filename: "/usr/bin/sqlite3".into(), argv: argv.iter().map(|s| s.to_string()).collect(), ..Default::default() };
            let client = sql_client(a, &ctx).expect("the rules name sqlite3");
            if gathered {
                ctx.sql = Some(crate::sql::inspect(&client, &ctx.argv, crate::sql::Proc::default(), true));
            }
            let j = evaluate(a, &ctx);
            (j.action, j.rule_id)
        };
        assert_eq!(judge(&["sqlite3", "db", "DROP TABLE t"], true), (Some(ExecAction::Kill), 1));
        assert_eq!(judge(&["sqlite3", "db", "SELECT 1"], true), (None, 0));
        // stdin unknown (no process): the hold rule applies.
        assert_eq!(judge(&["sqlite3", "db"], true), (Some(ExecAction::Hold), 2));
        // Nothing gathered at all: both fail closed, the kill first.
        assert_eq!(judge(&["sqlite3", "db", "SELECT 1"], false), (Some(ExecAction::Kill), 1));
        let other = ExecContext { filename: "/usr/bin/psql".into(), argv: vec!["psql".into()], ..Default::default() };
        assert_eq!(sql_client(a, &other), None, "no rule names psql: nothing to gather");
        // Bad conditions are errors with a position.
        let bad = |cond: &str, section: &str| parse("p.yaml", &format!("agents:\n  - name: a\n    exec:\n      {section}:\n        - basename: psql\n          sql: {cond}\n")).unwrap_err().to_string();
        assert!(bad("[]", "deny").contains("p.yaml:6:16: `sql` is an empty list"), "{}", bad("[]", "deny"));
        assert!(bad("drop", "deny").contains("not `drop`"));
        assert!(bad("destructive", "allow").contains("belongs in `exec.deny` or `exec.hold`"));
    }
}
