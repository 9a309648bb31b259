//! The daemon's side of the deletion budget: the kernel stopped (or, in audit mode, only
//! reported) a workload that went past `files.delete_budget`. For `kill` the kernel killed the
//! deleting process; the daemon kills the rest of the workload. For `hold` the deleting
//! process is stopped and becomes a pending hold (`guard-agent approve` gives the workload a
//! fresh budget and continues it; `deny` or the timeout kills it).
use std::{path::Path, time::Instant};

use guard_common::{
    CWD_PARTS, DELETE_DIR_UNKNOWN, DELETE_SYS_RMDIR, DELETE_SYS_UNLINK, Decision, DeletionsEvent,
    EVENT_FLAG_CWD_TRUNCATED,
};
use serde_json::{Value, json};

use super::Engine;
use crate::{
    cgroup,
    correlate::nul_terminated,
    holds::{self, Pending, Pidfd},
    policy, sessions,
    verdict::Subject,
};

/// What `status` and `/metrics` count.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct DeleteCounters {
    /// Workloads killed past their budget.
    pub kills: u64,
    /// Processes stopped for approval past their budget.
    pub holds: u64,
    /// Audit mode: budgets exceeded, nothing stopped.
    pub audits: u64,
    /// Processes of a killed workload the daemon could not kill.
    pub kill_failures: u64,
}

impl Engine {
    pub(super) fn deletions(&mut self, d: &DeletionsEvent) {
        let pid = d.header.tgid;
        let (ppid, exe) = self.correlator.identify(pid);
        let name = nul_terminated(&d.name[..(d.name_len as usize).min(d.name.len())]);
        let dir = dir_of(d);
        let path = if name.starts_with('/') {
            Some(name.clone())
        } else {
            dir.as_ref().map(|dir| if dir.ends_with('/') { format!("{dir}{name}") } else { format!("{dir}/{name}") })
        };
        let syscall = match d.syscall {
            DELETE_SYS_UNLINK => "unlink",
            DELETE_SYS_RMDIR => "rmdir",
            _ => "unlinkat",
        };
        let per_s = d.window_ns as f64 / 1e9;
        let decision = Decision::from_u32(d.header.decision).unwrap_or(Decision::Killed);
        let action = if matches!(decision, Decision::Held | Decision::WouldHold) { "hold" } else { "kill" };
        // Where the deletions went on: the directory of the one that went over the budget
        // (the deletions before it are counted, not recorded one by one).
        let where_: Vec<String> = path.as_deref().and_then(|p| Path::new(p).parent()).map(|p| p.display().to_string()).into_iter().collect();
        let deletions = json!({
            "count": d.count,
            "budget": d.budget,
            "per_s": per_s,
            "action": action,
            "window_start": self.correlator.wall_ms(d.window_start),
            "workload_cgroup_id": d.workload_cgroup_id,
            "where": where_,
            "last": { "syscall": syscall, "name": name, "path": path, "dir": dir, "dirfd": d.dirfd },
        });
        let mut v = self.correlator.verdict(&d.header, Subject::Deletions { exe, deletions }, ppid);
        if let Some(p) = &v.cgroup_path {
            v.session = self.sessions.of_cgroup(p).map(sessions::Session::identity);
        }
        let at = where_.first().map_or_else(|| "an unknown directory".to_owned(), |w| w.clone());
        let then = match decision {
            Decision::Killed => "the deleting process was killed in the kernel and the rest of the workload by the daemon",
            Decision::Held => "the deleting process is stopped until a person decides",
            _ => "audit mode: nothing was stopped",
        };
        v.reason = Some(format!("{} deletions within {per_s}s (last in {at}), budget {}: {then}", d.count, d.budget));
        match decision {
            Decision::Killed => {
                self.delete_counters.kills += 1;
                if let Some(e) = self.kill_workload(v.cgroup_path.as_deref(), d.workload_cgroup_id) {
                    v.error = Some(e);
                }
                self.emit(&v);
            }
            Decision::Held => {
                self.delete_counters.holds += 1;
                self.hold_deleter(pid, d.header.policy_id, v);
            }
            _ => {
                self.delete_counters.audits += 1;
                self.emit(&v);
            }
        }
    }

    /// A stopped deleter becomes a pending hold, like a held exec.
    fn hold_deleter(&mut self, pid: u32, policy_id: u32, mut v: crate::verdict::Verdict) {
        let agent = v.agent.clone();
        let timeout = self
            .correlator
            .policies
            .agent(policy_id)
            .and_then(|a| a.delete_eval.as_ref())
            .map_or(policy::DEFAULT_APPROVE_TIMEOUT, |b| b.approve_timeout);
        let (Ok(ctx), Ok(pidfd)) = (holds::read_context(pid, "", None), Pidfd::open(pid)) else {
            // Gone already (killed by someone): nothing to hold.
            v.decision = Decision::Killed;
            v.error = Some("the held process ended before the daemon could hold it");
            self.emit(&v);
            return;
        };
        let id = self.holds.next_id();
        v.hold = Some(json!({
            "id": id,
            "timeout_s": timeout.as_secs_f64(),
            "approve": format!("guard-agent approve {id}"),
            "deny": format!("guard-agent deny {id}"),
        }));
        if let Some(r) = &mut v.reason {
            r.push_str(&format!(": `guard-agent approve {id}` (a fresh budget) or `guard-agent deny {id}` within {}s", timeout.as_secs()));
        }
        self.emit(&v);
        let now = Instant::now();
        let rule_id = v.rule.as_ref().map_or(0, |r| r.id);
        self.holds.insert(Pending {
            id,
            pid,
            pidfd,
            since: now,
            since_ms: sessions::now_ms(),
            deadline: now + timeout,
            timeout,
            policy_id,
            rule_id,
            agent,
            argv: ctx.argv,
            cwd: ctx.cwd,
            verdict: v,
        });
    }

    /// Approving a held deletion gives its workload a fresh window.
    pub(super) fn deletion_approved(&mut self, p: &Pending) {
        let Subject::Deletions { deletions, .. } = &p.verdict.subject else { return };
        if let Some(id) = deletions.get("workload_cgroup_id").and_then(Value::as_u64)
            && let Err(e) = self.loaded.reset_deletions(id)
        {
            tracing::warn!(error = %e, "cannot reset a workload's deletion window");
        }
    }

    /// Kills every process of the workload (the cgroup `workload_id` at or above `cgroup`),
    /// except the `guard-agent launch` processes of its sessions, which report how it ended.
    fn kill_workload(&mut self, cgroup: Option<&str>, workload_id: u64) -> Option<&'static str> {
        let Some(own) = cgroup else {
            self.delete_counters.kill_failures += 1;
            return Some("the workload's cgroup is unknown: only the deleting process was killed");
        };
        // The workload is the deleter's own cgroup or one of its ancestors.
        let mut dir = own.trim_end_matches('/').to_owned();
        let workload = loop {
            if cgroup::id_of(&self.root.join(dir.trim_start_matches('/'))).ok() == Some(workload_id) {
                break Some(dir.clone());
            }
            match dir.rfind('/') {
                Some(i) if i > 0 => dir.truncate(i),
                _ => break None,
            }
        };
        let Some(workload) = workload else {
            if !self.root.join(own.trim_start_matches('/')).exists() {
                // The workload ended (its session's cgroup is gone): nothing is left to kill.
                return None;
            }
            self.delete_counters.kill_failures += 1;
            return Some("the workload's cgroup was not found: only the deleting process was killed");
        };
        let launchers: Vec<u32> = self.sessions.live().map(|s| s.launcher).collect();
        let base = self.root.join(workload.trim_start_matches('/'));
        // A process may fork while the others are killed: passes until one finds nobody new.
        let mut failed = false;
        let mut signalled: Vec<u32> = Vec::new();
        for _ in 0..4 {
            let pids: Vec<u32> = procs_below(&base).into_iter().filter(|p| !launchers.contains(p) && !signalled.contains(p)).collect();
            if pids.is_empty() {
                break;
            }
            signalled.extend(&pids);
            for pid in pids {
                let sent = Pidfd::open(pid).and_then(|fd| fd.signal(libc::SIGKILL));
                if let Err(e) = sent
                    && e.raw_os_error() != Some(libc::ESRCH)
                {
                    failed = true;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if failed {
            self.delete_counters.kill_failures += 1;
            return Some("some processes of the workload could not be killed");
        }
        None
    }
}

/// Every pid in the cgroup `dir` and the cgroups below it.
fn procs_below(dir: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            stack.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
    }
    out
}

/// The directory the deletion's name is relative to, from its components (innermost first);
/// one the kernel could not give whole is marked with `…`.
fn dir_of(d: &DeletionsEvent) -> Option<String> {
    if d.dir_depth == DELETE_DIR_UNKNOWN {
        return None;
    }
    let depth = (d.dir_depth as usize).min(CWD_PARTS);
    let parts: Vec<String> = d.dir[..depth].iter().rev().map(|p| nul_terminated(p)).collect();
    let path = format!("/{}", parts.join("/"));
    Some(if d.header.flags & EVENT_FLAG_CWD_TRUNCATED != 0 { format!("…{path}") } else { path })
}
