//! Where verdicts go from the event loop: masked, numbered, into the audit log, then to every
//! sink and the live feed; the audit log's checkpoints also go to the network sinks.
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::Engine;
use crate::{
    mask::Masker,
    seq::Sequence,
    sinks::TailItem,
    verdict::{Verdict, decision_name},
};

impl Engine {
    pub(super) fn emit(&mut self, v: &Verdict) {
        let verdict = decision_name(v.decision);
        *self.counters.verdicts.entry(verdict).or_default() += 1;
        // The container (and pod) the workload runs in, for container cgroups.
        let container = v.cgroup_path.as_deref().and_then(|p| self.containers.of_cgroup(p));
        let Engine { masker, seq, audit, sinks, tail, .. } = self;
        encode(masker, seq, v, container.as_deref(), &mut |obj| {
            if let Some(log) = audit.as_mut() {
                // A verdict the log cannot take is counted by it and stated in a gap record
                // once it can write again (see `audit::Log`); it still goes to the sinks.
                let _ = log.append_canonical(&obj.audit_body(), Some(obj.sequence));
            }
            // A failing sink (closed pipe, full disk) is counted and retried; it never stops
            // the daemon.
            sinks.write(obj.line());
            if tail.receiver_count() > 0 {
                let _ = tail.send(Arc::new(TailItem { agent: v.agent.clone(), verdict, line: obj.line().to_owned() }));
            }
        });
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

/// One OCSF object as every sink gets it: masked, numbered, encoded once.
pub(super) struct Encoded {
    value: Value,
    line: String,
    /// Its `metadata.sequence`.
    pub sequence: u64,
}

impl Encoded {
    /// Its JSON, one line (no newline).
    pub fn line(&self) -> &str {
        &self.line
    }

    /// What the audit log hashes and stores: the canonical JSON (see `audit`).
    pub fn audit_body(&self) -> Vec<u8> {
        crate::audit::canonical(&self.value)
    }
}

/// The objects of one verdict, in order, each handed to `out`: its activity (OCSF), then, for
/// what the policy stopped or held (or would have, in audit mode), its Detection Finding.
/// Each is masked (nothing secret reaches any sink or the audit log) and numbered.
pub(super) fn encode(masker: &Masker, seq: &mut Sequence, v: &Verdict, container: Option<&crate::container::Info>, out: &mut dyn FnMut(&Encoded)) {
    let mut value = v.to_ocsf();
    if let Some(c) = container {
        crate::container::annotate(&mut value, c);
    }
    let obj = numbered(masker, seq, value);
    out(&obj);
    if let Some(mut finding) = v.finding(&obj.value) {
        if let Some(c) = container {
            crate::container::annotate(&mut finding, c);
        }
        out(&numbered(masker, seq, finding));
    }
}

/// Masks and numbers (`metadata.sequence`) one OCSF object.
fn numbered(masker: &Masker, seq: &mut Sequence, mut value: Value) -> Encoded {
    masker.mask_value(&mut value);
    let sequence = seq.next_or_degrade();
    value["metadata"]["sequence"] = json!(sequence);
    let line = value.to_string();
    Encoded { value, line, sequence }
}

#[cfg(test)]
mod bench;
