//! The daemon's side of holds: judging a process the kernel stopped at exec, and ending its
//! hold (release, kill) when the policy, a person or the clock decides.
use std::{io, time::Instant};

use guard_common::{Decision, ExecEvent};
use serde_json::{Value, json};

use super::{Engine, Outcome, boot_ns};
use crate::{
    cgroup,
    holds::{self, Pending, Pidfd},
    loader::Leftover,
    policy::{self, ExecAction, eval},
    sessions,
    verdict::{Subject, Verdict},
};

/// Which held exec: its process, the policy id the kernel decided by, when it exec'd.
#[derive(Debug, Clone, Copy)]
pub(super) struct HeldAt {
    pub pid: u32,
    pub policy_id: u32,
    pub boot_ns: u64,
}

impl Engine {
    /// A process the kernel stopped at exec: judge it from procfs now, and release it, kill
    /// it, or wait for a person.
    pub(super) fn held(&mut self, e: &ExecEvent, mut v: Verdict) {
        let pid = e.header.tgid;
        let Subject::Exec(info) = &v.subject else { return };
        let filename = info.filename.clone();
        let identity = info.identity;
        let Some(compiled) = self.correlator.policies.arc(e.header.policy_id).cloned() else {
            return self.decide_now(pid, v, Outcome::Kill, "held under a policy that is no longer known");
        };
        let Some(agent) = compiled.agent(e.header.policy_id) else { return };
        let kernel_cwd = info.cwd.clone();
        let mut ctx = match holds::read_context(pid, &filename, identity) {
            Ok(c) => c,
            Err(_) => return self.decide_now(pid, v, Outcome::Kill, "gone before it could be judged"),
        };
        let pidfd = match Pidfd::open(pid) {
            Ok(fd) => fd,
            Err(_) => return self.decide_now(pid, v, Outcome::Kill, "gone before it could be judged"),
        };
        // procfs may refuse the cwd (no CAP_SYS_PTRACE over another user's process): the
        // kernel read it at exec too.
        // One the kernel could not give whole (marked `…`) is as good as unknown.
        if ctx.cwd.is_none() {
            ctx.cwd = kernel_cwd.filter(|c| c.starts_with('/'));
        }
        if let Subject::Exec(info) = &mut v.subject {
            // procfs has all of argv, not only the first ARGV_LEN bytes.
            info.argv = ctx.argv.clone();
            info.argv_truncated = false;
            info.cwd = ctx.cwd.clone().or(info.cwd.take());
        }
        if let Some(client) = eval::sql_client(agent, &ctx) {
            let report = crate::sql::inspect(&client, &ctx.argv, crate::sql::Proc { pid: Some(pid), cwd: ctx.cwd.as_deref() }, false);
            if !report.writers.is_empty() {
                // Its stdin is a pipe someone still writes to: it stays stopped while we wait.
                let at = HeldAt { pid, policy_id: e.header.policy_id, boot_ns: e.header.boot_ns };
                return self.wait_for_writers(super::sql::SqlWait::new(at, pidfd, client, ctx, v));
            }
            ctx.sql = Some(report);
        }
        self.judge_held(HeldAt { pid, policy_id: e.header.policy_id, boot_ns: e.header.boot_ns }, pidfd, ctx, v);
    }

    /// Judges a held process whose context is complete: releases it, kills it, or waits for a
    /// person.
    pub(super) fn judge_held(&mut self, at: HeldAt, pidfd: Pidfd, ctx: eval::ExecContext, mut v: Verdict) {
        let HeldAt { pid, policy_id, boot_ns: exec_ns } = at;
        let Some(compiled) = self.correlator.policies.arc(policy_id).cloned() else {
            return self.decide_now(pid, v, Outcome::Kill, "held under a policy that is no longer known");
        };
        let Some(agent) = compiled.agent(policy_id) else { return };
        let j = eval::evaluate(agent, &ctx);
        v.rule = compiled.rule(j.rule_id).cloned();
        if let Some(report) = &ctx.sql {
            v.sql = Some(report.to_json());
            if j.rule.is_some_and(|r| !r.rule.conditions.sql.is_empty()) {
                v.reason = Some(report.summary());
            }
        }
        let since_exec_us = boot_ns().saturating_sub(exec_ns) / 1000;
        match j.action {
            Some(ExecAction::Hold) => {
                let id = self.holds.next_id();
                let timeout = j.rule.map_or(policy::DEFAULT_APPROVE_TIMEOUT, |r| r.rule.approve_timeout);
                v.hold = Some(json!({
                    "id": id,
                    "timeout_s": timeout.as_secs_f64(),
                    "environ_bytes": holds::environ_size(pid),
                    "approve": format!("guard-agent approve {id}"),
                    "deny": format!("guard-agent deny {id}"),
                }));
                let why = v.reason.take().map(|r| format!("{r}; ")).unwrap_or_default();
                v.reason = Some(format!("{why}held for approval: `guard-agent approve {id}` or `guard-agent deny {id}` within {}s", timeout.as_secs()));
                self.emit(&v);
                let now = Instant::now();
                self.holds.insert(Pending {
                    id,
                    pid,
                    pidfd,
                    since: now,
                    since_ms: sessions::now_ms(),
                    deadline: now + timeout,
                    timeout,
                    policy_id,
                    rule_id: j.rule_id,
                    agent: Some(agent.name.clone()),
                    argv: ctx.argv,
                    cwd: ctx.cwd,
                    verdict: v,
                });
            }
            action => {
                let outcome = if action == Some(ExecAction::Kill) { Outcome::Kill } else { Outcome::Release };
                v.decision = match action {
                    Some(ExecAction::Kill) => Decision::Killed,
                    Some(ExecAction::Audit) => Decision::Audited,
                    _ => Decision::Allowed,
                };
                v.hold = Some(json!({ "decision": "policy", "decided_in_us": since_exec_us }));
                self.counters.hold_latency.entry("policy".into()).or_default().observe(std::time::Duration::from_micros(since_exec_us));
                self.act(pid, Some(&pidfd), outcome);
                self.emit(&v);
            }
        }
    }

    /// Ends a hold now, without a pidfd (the process may be gone).
    pub(super) fn decide_now(&mut self, pid: u32, mut v: Verdict, outcome: Outcome, reason: &str) {
        self.act(pid, None, outcome);
        v.decision = if outcome == Outcome::Kill { Decision::Killed } else { Decision::Allowed };
        v.reason = Some(reason.to_owned());
        self.emit(&v);
    }

    /// Releases (HELD entry first, then SIGCONT) or kills a held process.
    fn act(&mut self, pid: u32, pidfd: Option<&Pidfd>, outcome: Outcome) {
        let signal = |sig: i32| match pidfd {
            Some(fd) => fd.signal(sig),
            // SAFETY: sends a signal; no memory involved.
            None => (unsafe { libc::kill(pid as i32, sig) } == 0).then_some(()).ok_or_else(io::Error::last_os_error),
        };
        match outcome {
            Outcome::Kill => {
                if let Err(e) = signal(libc::SIGKILL) {
                    if e.raw_os_error() != Some(libc::ESRCH) {
                        tracing::error!(pid, error = %e, "cannot kill a held process");
                    }
                }
                let _ = self.loaded.release(pid);
            }
            Outcome::Release => {
                if let Err(e) = self.loaded.release(pid) {
                    // Without the entry removed the gate would kill it: say so, and kill it
                    // cleanly instead of letting it die at a random system call.
                    tracing::error!(pid, error = %e, "cannot release a held process; killing it");
                    let _ = signal(libc::SIGKILL);
                    return;
                }
                if let Err(e) = signal(libc::SIGCONT) {
                    tracing::warn!(pid, error = %e, "cannot continue a released process");
                }
            }
        }
    }

    pub(super) fn finish_hold(&mut self, p: Pending, outcome: Outcome, mut hold: Value, reason: Option<String>) {
        self.act(p.pid, Some(&p.pidfd), outcome);
        let mut v = p.verdict;
        v.decision = if outcome == Outcome::Kill { Decision::Killed } else { Decision::Allowed };
        let by = hold.get("decision").and_then(Value::as_str).unwrap_or("other").to_owned();
        self.counters.hold_latency.entry(by).or_default().observe(p.since.elapsed());
        if let Some(obj) = hold.as_object_mut() {
            obj.insert("id".into(), json!(p.id));
            obj.insert("at".into(), json!(sessions::now_ms()));
            obj.insert("waited_ms".into(), json!(p.since.elapsed().as_millis() as u64));
        }
        v.hold = Some(hold);
        v.reason = reason;
        v.time_ms = sessions::now_ms();
        self.emit(&v);
    }

    /// Processes a previous daemon held and nobody decided, which the loader killed at start
    /// (fail closed): one `killed` verdict each, with what procfs said before the kill. The
    /// policy and rule are named if the hold's policy id still maps to a known policy; if
    /// not, the agent is the one whose registered cgroup holds the process.
    pub(super) fn killed_leftovers(&mut self, leftovers: Vec<Leftover>) {
        for l in leftovers {
            let decided_by = self.correlator.policies.of(l.held.policy_id);
            let agent = decided_by.and_then(|c| c.agent(l.held.policy_id)).map(|a| a.name.clone()).or_else(|| {
                let path = l.cgroup.as_deref()?;
                let r = self.loaded.registrations.iter().find(|r| cgroup::is_within(path, &r.path))?;
                self.correlator.policies.agent(r.policy_id).map(|a| a.name.clone())
            });
            let ctx = l.context.unwrap_or_default();
            let info = crate::verdict::ExecInfo {
                filename: ctx.exe.clone().unwrap_or(ctx.filename),
                argv: ctx.argv,
                cwd: ctx.cwd,
                euid: ctx.euid,
                comm: l.comm,
                ..Default::default()
            };
            let held_since_ms = (l.held.boot_ns != 0).then(|| self.correlator.wall_ms(l.held.boot_ns));
            let hash = decided_by.unwrap_or(&self.correlator.policies.current).hash.clone();
            let reason = "held by a daemon that stopped before anyone decided; killed at start (fail closed)";
            // From the daemon's own verdict, so fields not set here keep their defaults.
            let mut v = self.daemon_verdict(Subject::Exec(info), &hash, Some(reason.into()));
            v.decision = Decision::Killed;
            v.agent = agent;
            v.rule = decided_by.and_then(|c| c.rule(l.held.rule_id)).cloned();
            (v.pid, v.ppid, v.uid, v.gid) = (l.pid, l.ppid, l.uid, l.gid);
            v.session = l.cgroup.as_deref().and_then(|p| self.sessions.of_cgroup(p)).map(sessions::Session::identity);
            v.cgroup_path = l.cgroup;
            v.hold = Some(json!({
                "decision": "daemon-restart",
                "held_since_ms": held_since_ms,
                "generation": l.generation,
                "policy_id": l.held.policy_id,
                "rule_id": l.held.rule_id,
            }));
            self.emit(&v);
        }
    }

    /// Audit mode: nothing was stopped; say what argv rules would have done.
    pub(super) fn evaluate_audit(&mut self, e: &ExecEvent, mut v: Verdict) {
        let Subject::Exec(info) = &v.subject else { return };
        let mut ctx = eval::ExecContext {
            filename: info.filename.clone(),
            exe: None,
            identity: info.identity,
            argv: info.argv.clone(),
            cwd: info.cwd.clone(),
            euid: info.euid,
            sql: None,
        };
        if let Some(c) = self.correlator.policies.of(e.header.policy_id) {
            if let Some(agent) = c.agent(e.header.policy_id) {
                // Nothing is stopped in audit mode: what the running client's stdin holds now
                // is what is judged (best effort; a pipe still written is uninspectable).
                if let Some(client) = eval::sql_client(agent, &ctx) {
                    let proc = crate::sql::Proc { pid: Some(e.header.tgid), cwd: ctx.cwd.as_deref() };
                    let report = crate::sql::inspect(&client, &ctx.argv, proc, true);
                    v.sql = Some(report.to_json());
                    ctx.sql = Some(report);
                }
                let j = eval::evaluate(agent, &ctx);
                v.rule = c.rule(j.rule_id).cloned();
                v.decision = match j.action {
                    Some(ExecAction::Kill) => Decision::WouldKill,
                    Some(ExecAction::Hold) => Decision::WouldHold,
                    Some(ExecAction::Audit) => Decision::Audited,
                    _ => Decision::Allowed,
                };
            }
        }
        self.emit(&v);
    }
}
