//! The daemon's numbers in Prometheus text format (`metrics.listen` in the settings).
use std::sync::atomic::Ordering;

use super::Engine;
use crate::{loader, metrics::Text};

impl Engine {
    pub(super) fn metrics(&self) -> String {
        let mut t = Text::default();
        t.family("guard_enforcement_tier", "gauge", "1 for the tier the start-up probe chose (lsm or tracepoint), 0 for the other.");
        for tier in [loader::Tier::Lsm, loader::Tier::Tracepoint] {
            t.sample("guard_enforcement_tier", &[("tier", tier.name())], u8::from(self.loaded.tier == tier));
        }
        t.family("guard_events_total", "counter", "Events read from the kernel ring buffer, by kind.");
        for (kind, n) in &self.counters.events {
            t.sample("guard_events_total", &[("kind", kind)], n);
        }
        t.single("guard_undecodable_events_total", "counter", "Ring-buffer records that were not events.", self.counters.undecodable.load(Ordering::Relaxed));
        let x = &self.exfil.counters;
        t.family("guard_dns_messages_total", "counter", "DNS messages of agent workloads, by how they parsed.");
        for (result, n) in [("parsed", x.dns_messages), ("malformed", x.dns_malformed), ("truncated", x.dns_truncated)] {
            t.sample("guard_dns_messages_total", &[("result", result)], n);
        }
        t.single("guard_sensitive_reads_total", "counter", "Opens of sensitive paths confirmed against the policy's globs.", x.sensitive_reads);
        t.single("guard_sensitive_opens_refused_total", "counter", "Opens of `action: deny` sensitive paths refused (EPERM) or killed, or in audit mode that would have been.", x.opens_denied);
        t.single("guard_egress_budget_exceeded_total", "counter", "Times a workload went over its byte budget to a destination.", x.budget_exceeded);
        let d = self.delete_counters;
        t.single("guard_delete_budget_kills_total", "counter", "Workloads killed for going past their deletion budget.", d.kills);
        t.single("guard_delete_budget_holds_total", "counter", "Processes stopped for approval past their deletion budget.", d.holds);
        t.single("guard_delete_budget_audits_total", "counter", "Deletion budgets exceeded in audit mode (nothing stopped).", d.audits);
        t.single("guard_dns_tunnels_total", "counter", "Workloads whose DNS was cut off for tunnel-shaped queries.", x.tunnels);
        t.single("guard_tainted_processes", "gauge", "Processes tainted by a sensitive read.", self.exfil.tainted() as u64);
        t.single("guard_learned_addresses", "gauge", "Addresses allowed from DNS answers for host rules.", self.exfil.learned() as u64);
        t.family("guard_verdicts_total", "counter", "Verdicts emitted, by decision.");
        for (decision, n) in &self.counters.verdicts {
            t.sample("guard_verdicts_total", &[("verdict", decision)], n);
        }
        t.family("guard_ring_buffer_drops_total", "counter", "Events the kernel dropped because the ring buffer was full, by kind.");
        for (kind, n) in self.loaded.drops().unwrap_or_default() {
            t.sample("guard_ring_buffer_drops_total", &[("kind", &format!("{kind:?}").to_lowercase())], n);
        }
        t.family("guard_ring_buffer_drops_reported_total", "counter", "Ring-buffer drops reported in events-lost verdicts, by kind (by any daemon of the pinned generation).");
        for (kind, n) in self.loaded.drops_reported().unwrap_or_default() {
            t.sample("guard_ring_buffer_drops_reported_total", &[("kind", &format!("{kind:?}").to_lowercase())], n);
        }
        t.single("guard_events_lost_reports_total", "counter", "Events-lost verdicts this daemon emitted.", self.lost.reports);
        t.family("guard_sink_sent_total", "counter", "Verdict lines written, by sink.");
        for s in &self.sinks.list {
            t.sample("guard_sink_sent_total", &[("sink", &s.name)], s.sent);
        }
        t.family("guard_sink_failed_total", "counter", "Verdicts lost, by sink: their write failed (a full disk), or the server rejected them for good.");
        for s in &self.sinks.list {
            t.sample("guard_sink_failed_total", &[("sink", &s.name)], s.failed);
        }
        t.family("guard_sink_write_errors_total", "counter", "Local writes (the verdict file, the spool) that failed, by sink.");
        for s in &self.sinks.list {
            t.sample("guard_sink_write_errors_total", &[("sink", &s.name)], s.write_errors);
        }
        t.family("guard_sink_backlog", "gauge", "Verdicts spooled and not yet delivered, by sink (network sinks; 0 for stdout and files).");
        for s in &self.sinks.list {
            t.sample("guard_sink_backlog", &[("sink", &s.name)], s.backlog);
        }
        t.family("guard_sink_dropped_total", "counter", "Verdicts dropped undelivered because the sink's spool was full, by sink (since the daemon started).");
        for s in &self.sinks.list {
            t.sample("guard_sink_dropped_total", &[("sink", &s.name)], s.dropped);
        }
        t.family("guard_sink_queue_dropped_total", "counter", "Verdicts dropped because the sink's writer thread was too far behind (standard output, files; also in guard_sink_failed_total), by sink.");
        for s in &self.sinks.list {
            t.sample("guard_sink_queue_dropped_total", &[("sink", &s.name)], s.queue_dropped);
        }
        let audit = self.audit.as_ref().map(|l| l.stats().clone()).unwrap_or_default();
        t.single("guard_audit_log_failures_total", "counter", "Audit-log writes (records, checkpoints, syncs) that failed, retries included.", audit.write_failures);
        t.single("guard_audit_log_lost_total", "counter", "Verdicts the audit log could not write (stated in its gap records).", audit.lost);
        t.single("guard_audit_log_queue_dropped_total", "counter", "Verdicts dropped before the audit log's writer saw them, its queue full (also in guard_audit_log_lost_total and its gap records).", self.audit.as_ref().map_or(0, |l| l.queue_dropped));
        t.single("guard_audit_log_gaps_total", "counter", "Gap records written to the audit log after write failures.", audit.gaps);
        t.single("guard_policy_reloads_total", "counter", "Policy reloads that took effect.", self.counters.reloads);
        t.single("guard_policy_reload_failures_total", "counter", "Policy reloads refused (the previous policy stayed).", self.counters.reload_failures);
        t.single("guard_policy_generation", "gauge", "Generation of the policy in force (each load or reload is one).", self.correlator.policies.current.generation());
        t.single("guard_verdicts_unattributed_total", "counter", "Records whose policy generation the daemon no longer held (rule and hash unknown; never expected).", self.correlator.unattributed);
        t.single("guard_holds_pending", "gauge", "Held processes waiting for a decision.", self.holds.iter().count());
        t.family("guard_hold_decision_seconds", "histogram", "Time to end a hold, by decider: policy (from exec to release), approved, denied, timeout, gate, daemon-stopped (from when the hold began waiting).");
        for (by, h) in &self.counters.hold_latency {
            t.histogram("guard_hold_decision_seconds", &[("decision", by)], h);
        }
        t.single("guard_process_table_entries", "gauge", "Processes in the daemon's process table.", self.correlator.process_table_len());
        t.single("guard_sessions_live", "gauge", "Live `guard-agent launch` sessions.", self.sessions.live().count());
        t.single("guard_agent_cgroups", "gauge", "Cgroups registered under an agent policy.", self.loaded.registrations.len());
        self.program_stats(&mut t);
        t.0
    }

    /// Per-program run time and count, which the kernel keeps only while
    /// `kernel.bpf_stats_enabled` is 1.
    fn program_stats(&self, t: &mut Text) {
        let enabled = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() == "1");
        t.single("guard_bpf_stats_enabled", "gauge", "1 when kernel.bpf_stats_enabled is on (per-program statistics are kept).", u8::from(enabled));
        if !enabled {
            return;
        }
        let stats: Vec<_> = loader::programs(self.loaded.tier)
            .iter()
            .filter_map(|name| {
                let info = aya::programs::ProgramInfo::from_pin(self.loaded.generation.prog(name)).ok()?;
                Some((*name, info.run_time().as_secs_f64(), info.run_count()))
            })
            .collect();
        t.family("guard_bpf_program_run_seconds_total", "counter", "Time spent in each eBPF program.");
        for (name, secs, _) in &stats {
            t.sample("guard_bpf_program_run_seconds_total", &[("program", name)], secs);
        }
        t.family("guard_bpf_program_runs_total", "counter", "Runs of each eBPF program.");
        for (name, _, runs) in &stats {
            t.sample("guard_bpf_program_runs_total", &[("program", name)], runs);
        }
    }
}
