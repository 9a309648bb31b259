//! `files.delete_budget` of an agent: how many successful deletions (`unlink`, `unlinkat`,
//! `rmdir`) a workload may make per window before the kernel kills it or stops it for
//! approval.
//!
//! ```yaml
//! files:
//!   delete_budget: { count: 200, per: 10s, action: kill }   # or hold (approve_timeout: 120s)
//! ```
use std::time::Duration;

use guard_common::{DELETE_ACTION_HOLD, DELETE_ACTION_KILL, DeleteConfig};

use super::{DEFAULT_APPROVE_TIMEOUT, PolicyError, Pos, parse::Parser, yaml::Node};


/// Most deletions a budget may allow per window: more is no budget at all.
pub const MAX_COUNT: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteAction {
    /// The deleting process is killed in the kernel, the rest of the workload by the daemon.
    Kill,
    /// The deleting process is stopped until a person approves (a fresh budget) or denies.
    Hold,
}

impl DeleteAction {
    pub fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Hold => "hold",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteBudget {
    /// Deletions allowed per window; the one after them is stopped.
    pub count: u64,
    pub per: Duration,
    pub action: DeleteAction,
    /// With `hold`: how long to wait for a person before denying.
    pub approve_timeout: Duration,
    pub pos: Pos,
}

impl DeleteBudget {
    /// The budget as verdicts and `policy explain` show it.
    pub fn shown(&self) -> String {
        let mut s = format!("delete_budget: {} deletions per {}s, {}", self.count, self.per.as_secs_f64(), self.action.name());
        if self.action == DeleteAction::Hold {
            s.push_str(&format!(" (approve within {}s)", self.approve_timeout.as_secs()));
        }
        s
    }
}

impl Parser<'_> {
    pub(crate) fn delete_budget(&self, node: &Node) -> Result<DeleteBudget, PolicyError> {
        let m = self.map(node, "`delete_budget`", &["count", "per", "action", "approve_timeout"])?;
        let count_node = m.require("count", node, self)?;
        let text = self.str(count_node, "`count`")?;
        let count = match text.parse::<u64>() {
            Ok(0) => return Err(self.err(count_node.pos, "`count` must be at least 1: a budget of 0 deletions would stop the first one (deny deletions with `files.protect` instead)")),
            Ok(n) if n <= MAX_COUNT => n,
            _ => return Err(self.err(count_node.pos, format!("`count` must be a whole number of deletions from 1 to {MAX_COUNT}, not `{text}`"))),
        };
        let per = self.duration(m.require("per", node, self)?)?;
        let action = match m.get("action") {
            None => DeleteAction::Kill,
            Some(n) => match self.str(n, "`action`")? {
                "kill" => DeleteAction::Kill,
                "hold" => DeleteAction::Hold,
                other => return Err(self.err(n.pos, format!("`action` must be `kill` or `hold`, not `{other}`"))),
            },
        };
        let approve_timeout = match m.get("approve_timeout") {
            None => DEFAULT_APPROVE_TIMEOUT,
            Some(n) if action == DeleteAction::Hold => self.duration(n)?,
            Some(n) => return Err(self.err(n.pos, "`approve_timeout` only applies to `action: hold`")),
        };
        Ok(DeleteBudget { count, per, action, approve_timeout, pos: node.pos })
    }
}

/// What the kernel gets for an agent (all zero: no budget).
pub fn kernel_config(budget: Option<&DeleteBudget>, rule_id: u32) -> DeleteConfig {
    let Some(b) = budget else { return DeleteConfig::default() };
    DeleteConfig {
        count: b.count,
        window_ns: u64::try_from(b.per.as_nanos()).unwrap_or(u64::MAX),
        action: if b.action == DeleteAction::Hold { DELETE_ACTION_HOLD } else { DELETE_ACTION_KILL },
        rule_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse::parse;

    fn budget(spec: &str) -> Result<Option<DeleteBudget>, String> {
        let text = format!("agents:\n  - name: a\n    files:\n      delete_budget: {spec}\n");
        parse("p.yaml", &text).map(|p| p.agents[0].delete_budget.clone()).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_and_compiles() {
        let b = budget("{ count: 200, per: 10s, action: kill }").unwrap().unwrap();
        assert_eq!((b.count, b.per, b.action), (200, Duration::from_secs(10), DeleteAction::Kill));
        let c = kernel_config(Some(&b), 7);
        assert_eq!((c.count, c.window_ns, c.action, c.rule_id), (200, 10_000_000_000, DELETE_ACTION_KILL, 7));
        let h = budget("{ count: 5, per: 1m, action: hold, approve_timeout: 30s }").unwrap().unwrap();
        assert_eq!((h.action, h.approve_timeout), (DeleteAction::Hold, Duration::from_secs(30)));
        assert_eq!(kernel_config(Some(&h), 1).action, DELETE_ACTION_HOLD);
        assert_eq!(h.shown(), "delete_budget: 5 deletions per 60s, hold (approve within 30s)");
        // The action defaults to kill; no `files` means no budget.
        assert_eq!(budget("{ count: 1, per: 1s }").unwrap().unwrap().action, DeleteAction::Kill);
        let none = parse("p", "agents:\n  - name: a\n").unwrap();
        assert!(none.agents[0].delete_budget.is_none());
        assert_eq!(kernel_config(None, 0).count, 0);
    }

    #[test]
    fn errors_name_file_line_column() {
        assert_eq!(budget("{ count: 0, per: 10s }").unwrap_err(), "p.yaml:4:31: `count` must be at least 1: a budget of 0 deletions would stop the first one (deny deletions with `files.protect` instead)");
        assert_eq!(budget("{ count: many, per: 10s }").unwrap_err(), "p.yaml:4:31: `count` must be a whole number of deletions from 1 to 1000000000, not `many`");
        assert_eq!(budget("{ count: -3, per: 10s }").unwrap_err(), "p.yaml:4:31: `count` must be a whole number of deletions from 1 to 1000000000, not `-3`");
        assert_eq!(budget("{ count: 200 }").unwrap_err(), "p.yaml:4:22: missing required key `per`");
        assert_eq!(budget("{ per: 10s }").unwrap_err(), "p.yaml:4:22: missing required key `count`");
        assert_eq!(budget("{ count: 200, per: 0s }").unwrap_err(), "p.yaml:4:41: `0s` must be more than 0 and at most 24h");
        assert_eq!(budget("{ count: 200, per: soon }").unwrap_err(), "p.yaml:4:41: `soon` is not a duration like `500ms`, `30s`, `2m` or `1h`");
        assert_eq!(budget("{ count: 200, per: 10s, action: drop }").unwrap_err(), "p.yaml:4:54: `action` must be `kill` or `hold`, not `drop`");
        assert_eq!(budget("{ count: 200, per: 10s, approve_timeout: 5s }").unwrap_err(), "p.yaml:4:63: `approve_timeout` only applies to `action: hold`");
        assert!(budget("{ count: 200, per: 10s, cnt: 1 }").unwrap_err().starts_with("p.yaml:4:46: unknown key `cnt` in `delete_budget`"));
        assert_eq!(budget("200").unwrap_err(), "p.yaml:4:22: `delete_budget` must be a mapping, found a scalar");
        let e = parse("p.yaml", "agents:\n  - name: a\n    files:\n      delete_bugdet: {}\n").unwrap_err().to_string();
        assert!(e.starts_with("p.yaml:4:7: unknown key `delete_bugdet` in `files` (did you mean `delete_budget`?)"), "{e}");
    }
}
