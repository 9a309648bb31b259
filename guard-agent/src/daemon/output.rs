//! Where verdicts go from the event loop: masked, numbered, into the audit log, then to every
//! sink and the live feed; the audit log's checkpoints also go to the network sinks.
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::Engine;
use crate::{
    sinks::TailItem,
    verdict::{Verdict, decision_name},
};

impl Engine {
    pub(super) fn emit(&mut self, v: &Verdict) {
        let verdict = decision_name(v.decision);
        *self.counters.verdicts.entry(verdict).or_default() += 1;
        let mut value = v.to_ocsf();
        // The container (and pod) the workload runs in, for container cgroups.
        let container = v.cgroup_path.as_deref().and_then(|p| self.containers.of_cgroup(p));
        if let Some(c) = &container {
            crate::container::annotate(&mut value, c);
        }
        self.write_numbered(&mut value, v, verdict);
        if let Some(mut finding) = v.finding(&value) {
            if let Some(c) = &container {
                crate::container::annotate(&mut finding, c);
            }
            self.write_numbered(&mut finding, v, verdict);
        }
    }

    /// Numbers one OCSF object (`metadata.sequence`) and writes it, one line, to the sinks and
    /// the live feed.
    fn write_numbered(&mut self, value: &mut Value, v: &Verdict, verdict: &'static str) {
        self.masker.mask_value(value);
        value["metadata"]["sequence"] = serde_json::json!(self.seq.next_or_degrade());
        if let Some(log) = &mut self.audit {
            // A verdict the log cannot take is counted by it and stated in a gap record once
            // it can write again (see `audit::Log`); it still goes to the sinks.
            let _ = log.append(value);
        }
        let line = value.to_string();
        // A failing sink (closed pipe, full disk) is counted and retried; it never stops the
        // daemon.
        self.sinks.write(&line);
        if self.tail.receiver_count() > 0 {
            let _ = self.tail.send(Arc::new(TailItem { agent: v.agent.clone(), verdict, line }));
        }
    }

    pub(super) fn flush(&mut self) {
        self.witness_checkpoints();
        self.sinks.flush();
    }

    fn witness_checkpoints(&mut self) {
        let Some(log) = &mut self.audit else { return };
        witness(&mut self.sinks, log.take_checkpoints());
    }

    /// At shutdown: the audit log is sealed with a final checkpoint (also sent to the network
    /// sinks).
    pub(super) fn seal_audit_log(&mut self) {
        let Some(log) = self.audit.take() else { return };
        match log.close() {
            Ok(checkpoints) => witness(&mut self.sinks, checkpoints),
            Err(e) => tracing::error!(error = %e, "cannot seal the audit log"),
        }
        self.sinks.flush();
    }
}

/// The audit log's checkpoints go to the network sinks too: a copy outside this host that an
/// attacker who rewrites the local log cannot reach.
fn witness(sinks: &mut crate::sinks::Sinks, checkpoints: Vec<Value>) {
    for c in checkpoints {
        sinks.witness(&json!({ "time": c["ts"], "guard_audit_checkpoint": c }).to_string());
    }
}

/// Opens the audit log of the settings, with its signing key if one is configured.
pub(super) fn open_audit_log(a: &crate::config::AuditLogConfig) -> anyhow::Result<crate::audit::Log> {
    let key = a.key.as_deref().map(crate::audit::load_key).transpose().context("audit_log.key")?;
    if key.is_none() {
        tracing::warn!("audit_log has no `key`: checkpoints are not signed (create one with `guard-agent audit keygen`)");
    }
    let opts = crate::audit::LogOptions { max_file_bytes: a.max_file_bytes, checkpoint_every: a.checkpoint_every, checkpoint_interval: a.checkpoint_interval };
    crate::audit::Log::open(&a.dir, key, opts).with_context(|| format!("opening the audit log in {}", a.dir.display()))
}

