//! `guard-agent status`: what the daemon enforces and what it is waiting for.
use std::time::Instant;

use serde_json::{Value, json};

use super::Engine;
use crate::loader;

impl Engine {
    /// A workload's argv as the admin socket shows it: masked, as in verdicts.
    pub(super) fn masked_argv(&self, argv: &[String]) -> Value {
        let mut v = json!({ "argv": argv });
        self.masker.mask_value(&mut v);
        v["argv"].take()
    }

    pub(super) fn status(&self) -> Value {
        let c = &self.correlator.policies.current;
        // `reported`: how many of them "events lost" verdicts have reported (by any daemon of
        // this generation).
        let reported = self.loaded.drops_reported().unwrap_or_default();
        let drops: Vec<Value> = self
            .loaded
            .drops()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, n)| {
                let r = reported.iter().find(|(rk, _)| *rk == k).map_or(0, |(_, r)| *r);
                json!({ "kind": format!("{k:?}").to_lowercase(), "dropped": n, "reported": r })
            })
            .collect();
        json!({
            "ok": true,
            "tier": self.loaded.tier.name(),
            "tier_reason": self.loaded.probe.reason,
            "capabilities": loader::tier::capabilities(self.loaded.tier),
            "lsm_hooks": loader::tier::to_json(&self.loaded.probe)["hooks"],
            "programs": loader::programs(self.loaded.tier),
            "pinned": self.loaded.generation.dir.display().to_string(),
            "policy": {
                "source": c.source,
                "hash": c.hash,
                "generation": c.generation(),
                // Replaced generations still kept for records in flight, and records whose
                // generation was no longer kept (never expected).
                "replaced_kept": self.correlator.policies.replaced_len(),
                "unattributed": self.correlator.unattributed,
                "agents": c.agents.iter().map(|a| json!({
                    "name": a.name,
                    "mode": format!("{:?}", a.mode).to_lowercase(),
                    "match": a.cgroups.iter().map(|m| m.text.clone()).chain(a.containers.iter().map(|m| m.text.clone())).collect::<Vec<_>>(),
                    "exec_rules": a.exec.len(),
                    "files_protect": super::files::status_rules(a),
                })).collect::<Vec<_>>(),
                "file": self.settings.policy.as_ref().map(|p| p.display().to_string()),
                "reloads": self.counters.reloads,
                "reload_failures": self.counters.reload_failures,
            },
            "cgroups": self.loaded.registrations.iter().map(|r| json!({ "id": r.id, "path": r.path })).collect::<Vec<_>>(),
            "sessions": self.sessions.live().map(|s| json!({
                "id": s.id, "agent": s.launch_name, "cgroup": s.cgroup, "uid": s.uid, "user": s.user,
                "labels": s.labels, "started": s.started_ms, "command": s.command,
            })).collect::<Vec<_>>(),
            "holds": self.holds.iter().map(|p| json!({
                "id": p.id, "pid": p.pid, "agent": p.agent, "argv": self.masked_argv(&p.argv), "cwd": p.cwd,
                "rule": self.correlator.policies.of(p.policy_id).and_then(|c| c.rule(p.rule_id)).map(|r| r.matcher.clone()),
                "since": p.since_ms,
                "waiting_s": p.since.elapsed().as_secs(),
                "expires_in_s": p.deadline.saturating_duration_since(Instant::now()).as_secs(),
            })).collect::<Vec<_>>(),
            "counters": {
                "events": self.counters.events,
                "verdicts": self.counters.verdicts,
                "ring_buffer_drops": drops,
                "events_lost_reports": self.lost.reports,
                "held_in_kernel": self.loaded.held_count().ok(),
                "undecodable_events": self.counters.undecodable.load(std::sync::atomic::Ordering::Relaxed),
                "process_table": self.correlator.process_table_len(),
                "audit_log_failures": self.audit.as_ref().map_or(0, |l| l.stats().write_failures),
                "files_denied": self.counters.files_denied,
                "files_refused_unattributed": self.counters.files_unattributed,
            },
            "audit_log": self.audit.as_ref().map(|l| {
                let s = l.stats();
                json!({
                    "dir": self.settings.audit_log.as_ref().map(|a| a.dir.display().to_string()),
                    "next_seq": l.next_seq(),
                    "lost": s.lost,
                    "queue_dropped": l.queue_dropped,
                    "write_failures": s.write_failures,
                    "gaps": s.gaps,
                    "unrecorded": s.unrecorded,
                    "healthy": s.error.is_none(),
                    "error": s.error,
                })
            }),
            "exfil": self.exfil.status(),
            "deletions": {
                "budget_kills": self.delete_counters.kills,
                "budget_holds": self.delete_counters.holds,
                "budget_audits": self.delete_counters.audits,
                "kill_failures": self.delete_counters.kill_failures,
            },
            "sinks": self.sinks.list.iter().map(|s| json!({
                "name": s.name, "sent": s.sent, "failed": s.failed, "backlog": s.backlog, "dropped": s.dropped,
                "queue_dropped": s.queue_dropped, "write_errors": s.write_errors, "error": s.error, "healthy": s.healthy,
            })).collect::<Vec<_>>(),
            "daemon": {
                "pid": std::process::id(),
                "version": env!("CARGO_PKG_VERSION"),
                "config": self.settings.config.as_ref().map(|p| p.display().to_string()),
                "metrics": self.settings.metrics.map(|a| format!("http://{a}/metrics")),
                "systemd_notify": self.notifier.enabled(),
                "tails": self.tail.receiver_count(),
                "watchdog_s": self.notifier.watchdog_interval().map(|d| (d * 2).as_secs_f64()),
            },
        })
    }
}
