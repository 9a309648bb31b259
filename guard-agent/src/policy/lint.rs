//! Rules that compile but cannot fire, or can fire only in part: warned about (by
//! `policy check`, and by the daemon at load and reload) or, when certainly useless, refused.
//! Each check follows what the kernel programs and the daemon actually compare; none adds
//! meaning to a rule.
use std::fmt::Display;

use super::{Agent, CgroupMatch, ExecRule, HostRule, NetAction, NetRule, Policy, PolicyError, Pos, network::mapped_part_unreachable};

/// The kernel's `comm` holds 15 bytes and a NUL; one that fills all 15 may have been cut, so
/// the exec program compares it only when shorter (guard-ebpf `comm_name`).
const COMM_WHOLE: usize = 14;

/// `file:line:column: warning: message`, the form `policy check` and the daemon print.
pub fn warning(file: &str, pos: Pos, message: impl Display) -> String {
    format!("{file}:{}:{}: warning: {message}", pos.line, pos.col)
}

/// Why no exec of `path` (which exists) can succeed, if that is so now.
pub fn cannot_run(path: &str) -> Option<&'static str> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return Some("is not a regular file");
    }
    // execve needs an execute bit even for root.
    (meta.permissions().mode() & 0o111 == 0).then_some("is not executable by anyone")
}

/// Every model-level check; errors for what can never fire, warnings for the rest.
pub fn check(policy: &Policy, warnings: &mut Vec<String>) -> Result<(), PolicyError> {
    for (i, agent) in policy.agents.iter().enumerate() {
        exec(agent, warnings);
        network(agent, warnings);
        hosts(agent, warnings);
        exfil(agent, warnings);
        cgroups(agent, &policy.agents[..i], warnings)?;
    }
    Ok(())
}

fn exec(agent: &Agent, warnings: &mut Vec<String>) {
    let mut warn = |pos: Pos, m: String| warnings.push(warning(&agent.file, pos, m));
    for (j, b) in agent.exec.iter().enumerate() {
        use super::ExecMatcher::{Basename, BasenamePrefix};
        if let Basename(n) | BasenamePrefix(n) = &b.matcher
            && n.len() > COMM_WHOLE
        {
            warn(b.pos, format!(
                "`{}` is {} bytes: the kernel's comm (the name it was invoked as) holds {COMM_WHOLE} whole bytes at most, so only the executed file's own name can match, not a symlink of another name pointing at it",
                b.matcher, n.len()
            ));
        }
        if !b.conditions.sql.is_empty() {
            use super::ExecMatcher::{Path, PathPrefix};
            // The statements are read as the client named by the executed file (or the name it
            // was invoked as) takes them; another program's can never be judged.
            let name = match &b.matcher {
                Path(p) => Some(p.rsplit('/').next().unwrap_or(p).to_owned()),
                Basename(n) => Some(n.clone()),
                BasenamePrefix(_) | PathPrefix(_) => None,
            };
            if let Some(n) = name.filter(|n| crate::sql::dialect(n).is_none()) {
                warn(b.pos, format!(
                    "`sql` conditions read the statements of a database client ({}); `{n}` is none of them, so every exec of it counts as uninspectable",
                    crate::sql::CLIENTS.join(", ")
                ));
            }
        }
        if b.conditions.uid.contains(&u32::MAX) {
            warn(b.pos, "uid 4294967295 is (uid_t)-1, which no process runs as: that entry never matches".into());
        }
        if let Some((i, a)) = agent.exec.iter().enumerate().find(|(i, a)| *i != j && shadows(a, *i, b, j)) {
            let how = if a.action == b.action && a.conditions == b.conditions && i < j {
                "repeats it, and the first decides".to_owned()
            } else {
                format!("matches every exec this one does and outranks it ({} beats {}: kill, hold, audit, allow)", a.action.name(), b.action.name())
            };
            warn(b.pos, format!("rule never decides: the `{}` rule at line {} {how}", a.section, a.pos.line));
        }
    }
}

/// Does rule `a` (at index `i`) decide every exec rule `b` (at `j`) matches? Both the kernel
/// (one entry per key, the strongest kept) and the daemon (strongest action, then the first)
/// then never pick `b`.
fn shadows(a: &ExecRule, i: usize, b: &ExecRule, j: usize) -> bool {
    a.matcher == b.matcher
        && (a.conditions.is_empty() || a.conditions == b.conditions)
        && (a.action < b.action || (a.action == b.action && i < j))
}

fn network(agent: &Agent, warnings: &mut Vec<String>) {
    let mut warn = |pos: Pos, m: String| warnings.push(warning(&agent.file, pos, m));
    // The order compile_net gives one prefix's port ranges: deny rules, then allow rules, each
    // in document order; the kernel takes the first range holding the port.
    let ordered: Vec<&NetRule> = [NetAction::Deny, NetAction::Allow]
        .iter()
        .flat_map(|act| agent.network.rules.iter().filter(move |r| r.action == *act))
        .collect();
    for (k, r) in ordered.iter().enumerate() {
        if mapped_part_unreachable(&r.cidr) {
            warn(r.pos, mapped_warning(&r.cidr, "destinations"));
        }
        let earlier: Vec<&NetRule> = ordered[..k].iter().copied().filter(|e| e.cidr == r.cidr).collect();
        let by: Vec<(u16, u16)> = earlier.iter().flat_map(|e| all_ports(&e.ports)).collect();
        if covered(&all_ports(&r.ports), &by) {
            let lines: Vec<String> = earlier.iter().filter(|e| overlaps(&all_ports(&e.ports), &all_ports(&r.ports))).map(|e| e.pos.line.to_string()).collect();
            let order = if earlier.iter().any(|e| e.action != r.action) { " (at one prefix, deny rules come before allow rules)" } else { "" };
            warn(r.pos, format!("rule never decides: every port it names at {} is decided first by the rule(s) at line {}{order}", r.cidr, lines.join(", ")));
        }
    }
}

fn mapped_warning(c: &super::Cidr, what: &str) -> String {
    format!(
        "`{c}` contains the IPv4-mapped addresses (::ffff:0:0/96), but the kernel judges those {what} as IPv4, by the IPv4 entries: only its native IPv6 part can fire (add an IPv4 entry such as 0.0.0.0/0 for the rest)"
    )
}

fn hosts(agent: &Agent, warnings: &mut Vec<String>) {
    let hs = &agent.network.hosts;
    for (j, h) in hs.iter().enumerate() {
        let earlier: Vec<&HostRule> = hs[..j].iter().filter(|e| host_covers(e, h)).collect();
        let by: Vec<(u16, u16)> = earlier.iter().flat_map(|e| all_ports(&e.ports)).collect();
        if !earlier.is_empty() && covered(&all_ports(&h.ports), &by) {
            let lines: Vec<String> = earlier.iter().map(|e| e.pos.line.to_string()).collect();
            warnings.push(warning(&agent.file, h.pos, format!(
                "rule never decides: every name and port it allows is allowed first by the host rule(s) at line {}",
                lines.join(", ")
            )));
        }
    }
}

/// Does host pattern `a` match every name `b` matches?
fn host_covers(a: &HostRule, b: &HostRule) -> bool {
    let (a_text, b_text) = (a.pattern.to_string(), b.pattern.to_string());
    match b_text.strip_prefix("*.") {
        None => a.pattern.matches(&b_text),
        Some(base) => a_text == b_text || (a_text.starts_with("*.") && a.pattern.matches(base)),
    }
}

fn exfil(agent: &Agent, warnings: &mut Vec<String>) {
    let Some(x) = &agent.exfil else { return };
    for c in &x.budget_exempt {
        if mapped_part_unreachable(c) {
            warnings.push(warning(&agent.file, x.pos, format!("budget_exempt {}", mapped_warning(c, "packets"))));
        }
    }
    if !x.budget_exempt.is_empty() && x.egress_budget.is_none() {
        warnings.push(warning(&agent.file, x.pos, "`budget_exempt` has no effect: the agent has no `egress_budget` to exempt from"));
    }
}

/// Characters systemd allows in unit names, plus glob syntax.
fn unit_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || ":-_.\\@".contains(c) || "*?[]{},!^".contains(c)
}

fn cgroups(agent: &Agent, before: &[Agent], warnings: &mut Vec<String>) -> Result<(), PolicyError> {
    let mut warn = |pos: Pos, m: String| warnings.push(warning(&agent.file, pos, m));
    for (j, m) in agent.cgroups.iter().enumerate() {
        if let Some(unit) = m.text.strip_prefix("systemd_unit: ")
            && !unit.chars().all(unit_char)
        {
            warn(m.pos, format!(
                "`{unit}` has characters no systemd unit name has (systemd escapes them as \\xNN): only a hand-made cgroup of that name can match"
            ));
        }
        let path = m.glob.as_deref().unwrap_or(&m.dir);
        if path == "sys/fs/cgroup" || path.starts_with("sys/fs/cgroup/") {
            warn(m.pos, format!(
                "`{}` looks like a filesystem path: cgroup globs are relative to the cgroup v2 root, so this one means `<root>/{path}`; drop the mount point",
                m.text
            ));
        }
        if let Some(first) = agent.cgroups[..j].iter().find(|e| same_match(e, m)) {
            warn(m.pos, format!("`{}` repeats the match at line {}", m.text, first.pos.line));
        }
        for other in before {
            if let Some(e) = other.cgroups.iter().find(|e| same_registration(e, m)) {
                let why = if m.glob.is_some() {
                    "the first agent whose glob matches a cgroup gets it"
                } else {
                    "the kernel registers a cgroup for one agent only"
                };
                let at = if other.file == agent.file { format!("line {}", e.pos.line) } else { format!("{}:{}", other.file, e.pos.line) };
                return Err(PolicyError {
                    file: agent.file.clone(),
                    pos: m.pos,
                    message: format!("`{}` can never apply: agent `{}` already matches the same cgroups ({at}), and {why}", m.text, other.name),
                });
            }
        }
    }
    Ok(())
}

fn same_match(a: &CgroupMatch, b: &CgroupMatch) -> bool {
    (&a.dir, a.this, a.below, &a.glob) == (&b.dir, b.this, b.below, &b.glob)
}

/// Would `b` be registered for the same cgroups as `a` (and lose them to it, or overwrite it)?
fn same_registration(a: &CgroupMatch, b: &CgroupMatch) -> bool {
    match (&a.glob, &b.glob) {
        (None, None) => a.dir == b.dir,
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// A rule's port ranges as the kernel stores them: no `ports` is every port, 0 included.
fn all_ports(ports: &[(u16, u16)]) -> Vec<(u16, u16)> {
    if ports.is_empty() { vec![(0, u16::MAX)] } else { ports.to_vec() }
}

/// Is every port of `ranges` inside the union of `by`?
fn covered(ranges: &[(u16, u16)], by: &[(u16, u16)]) -> bool {
    let mut by = by.to_vec();
    by.sort_unstable();
    ranges.iter().all(|&(lo, hi)| {
        // Walk the sorted ranges, extending what is covered from `lo` upwards.
        let mut next = u32::from(lo);
        for &(blo, bhi) in &by {
            if u32::from(blo) > next {
                break;
            }
            next = next.max(u32::from(bhi) + 1);
            if next > u32::from(hi) {
                return true;
            }
        }
        next > u32::from(hi)
    })
}

fn overlaps(a: &[(u16, u16)], b: &[(u16, u16)]) -> bool {
    a.iter().any(|&(alo, ahi)| b.iter().any(|&(blo, bhi)| alo <= bhi && blo <= ahi))
}

#[cfg(test)]
mod tests;
