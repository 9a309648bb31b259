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
    verdict::{Marks, Verdict, decision_name},
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
                // Queued for the log's writer; a verdict it cannot write, or that the queue
                // has no room for, is counted and stated in a gap record (see `audit::Log`,
                // `audit::Queued`); it still goes to the sinks.
                log.append(obj.audit_body(), Some(obj.sequence));
            }
            // A failing sink (closed pipe, full disk) is counted and retried; it never stops
            // the daemon.
            sinks.write_marked(obj.line(), obj.marks.as_ref());
            if tail.receiver_count() > 0 {
                let _ = tail.send(Arc::new(TailItem { agent: v.agent.clone(), verdict, line: obj.line().to_owned() }));
            }
        });
    }

    /// Hands what the loop buffered to the sinks' threads, the audit log's writer and the
    /// spools, at most every [`FLUSH_EVERY`] (the loop calls it after every burst and tick).
    pub(super) fn flush(&mut self) {
        if self.flushed.elapsed() >= FLUSH_EVERY {
            self.flush_now();
        }
    }

    /// [`Engine::flush`] now (at start and shutdown).
    pub(super) fn flush_now(&mut self) {
        self.flushed = std::time::Instant::now();
        self.witness_checkpoints();
        self.sinks.flush();
    }

    /// Hands the burst's verdicts to the audit log's writer and the checkpoints it wrote since
    /// to the network sinks.
    fn witness_checkpoints(&mut self) {
        let Some(log) = &mut self.audit else { return };
        log.hand_over();
        witness(&mut self.sinks, log.take_checkpoints());
    }

    /// At shutdown: the audit log is sealed with a final checkpoint (also sent to the network
    /// sinks).
    pub(super) fn seal_audit_log(&mut self) {
        let Some(log) = self.audit.take() else { return };
        match log.close(std::time::Instant::now() + AUDIT_CLOSE_WITHIN) {
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

/// Verdicts are handed on at most this often: each hand-over wakes the threads that write
/// them, and on a busy host a wake-up per burst cost the daemon more than the writing. A
/// verdict reaches a file, stdout, a spool or the audit log at most about a tick (100 ms) after
/// the loop made it (the live feed, `tail`, gets it at once); the buffers are bounded and
/// handed on early when full.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// How long the audit log's writer gets at shutdown to write what is queued and seal the log.
const AUDIT_CLOSE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens the audit log of the settings, with its signing key if one is configured, and starts
/// its writer thread.
pub(super) fn open_audit_log(a: &crate::config::AuditLogConfig) -> anyhow::Result<crate::audit::Queued> {
    let key = a.key.as_deref().map(crate::audit::load_key).transpose().context("audit_log.key")?;
    if key.is_none() {
        tracing::warn!("audit_log has no `key`: checkpoints are not signed (create one with `guard-agent audit keygen`)");
    }
    let opts = crate::audit::LogOptions { max_file_bytes: a.max_file_bytes, checkpoint_every: a.checkpoint_every, checkpoint_interval: a.checkpoint_interval };
    let log = crate::audit::Log::open(&a.dir, key, opts).with_context(|| format!("opening the audit log in {}", a.dir.display()))?;
    crate::audit::Queued::start(log).context("starting the audit log's writer")
}

/// One OCSF object as every sink gets it: masked, numbered, encoded once.
pub(super) struct Encoded<'a> {
    line: &'a str,
    /// Its `metadata.sequence`.
    pub sequence: u64,
    /// Where the values the network sinks read sit in `line` (for the lines written straight
    /// from a verdict; the others are scanned by the sinks).
    pub marks: Option<Marks>,
}

impl Encoded<'_> {
    /// Its JSON, one line (no newline).
    pub fn line(&self) -> &str {
        self.line
    }

    /// What the audit log hashes and stores: the canonical JSON (see `audit`). The line is
    /// that already: serde_json's map keeps keys in byte order and escapes as the canonical
    /// form does, and the fast writer (`verdict::encode`) writes the same bytes
    /// (`daemon::output::tests`).
    pub fn audit_body(&self) -> &[u8] {
        self.line.as_bytes()
    }
}

thread_local! {
    /// The buffer exec and connect lines are written into, reused verdict after verdict.
    static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(4096));
}

/// The objects of one verdict, in order, each handed to `out`: its activity (OCSF), then, for
/// what the policy stopped or held (or would have, in audit mode), its Detection Finding.
/// Each is masked (nothing secret reaches any sink or the audit log) and numbered.
///
/// Exec and connect activities outside containers (nearly every verdict) are written straight
/// from the verdict into a reused buffer; the rest are built as `Value`s and masked whole.
pub(super) fn encode(masker: &Masker, seq: &mut Sequence, v: &Verdict, container: Option<&crate::container::Info>, out: &mut dyn FnMut(&Encoded<'_>)) {
    if container.is_none() && v.has_fast_line() {
        let sequence = seq.next_or_degrade();
        let base = LINE.with_borrow_mut(|line| {
            let marks = v.write_line(masker, sequence, line);
            out(&Encoded { line, sequence, marks });
            // The finding (rare: something was stopped or held) is made from the activity
            // as emitted.
            v.has_finding().then(|| serde_json::from_str::<Value>(line))
        });
        if let Some(Ok(base)) = base
            && let Some(finding) = v.finding(&base)
        {
            let (line, sequence) = numbered(masker, seq, finding);
            out(&Encoded { line: &line, sequence, marks: None });
        }
        return;
    }
    let mut value = v.to_ocsf();
    if let Some(c) = container {
        crate::container::annotate(&mut value, c);
    }
    let (line, sequence) = numbered_value(masker, seq, &mut value);
    out(&Encoded { line: &line, sequence, marks: None });
    if let Some(mut finding) = v.finding(&value) {
        if let Some(c) = container {
            crate::container::annotate(&mut finding, c);
        }
        let (line, sequence) = numbered(masker, seq, finding);
        out(&Encoded { line: &line, sequence, marks: None });
    }
}

/// Masks and numbers (`metadata.sequence`) one OCSF object: its line and number.
fn numbered(masker: &Masker, seq: &mut Sequence, mut value: Value) -> (String, u64) {
    numbered_value(masker, seq, &mut value)
}

fn numbered_value(masker: &Masker, seq: &mut Sequence, value: &mut Value) -> (String, u64) {
    masker.mask_value(value);
    let sequence = seq.next_or_degrade();
    value["metadata"]["sequence"] = json!(sequence);
    (value.to_string(), sequence)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod bench;

/// Sample verdicts and their lines, for tests elsewhere (the sinks' parsers).
#[cfg(test)]
pub(crate) mod samples {
    /// The verdict lines of a sample `kind` of verdict (see the output bench), each handed to `out`
    /// with its marks.
    pub fn lines(kind: &str, i: usize, out: &mut dyn FnMut(&str, Option<&crate::verdict::Marks>)) {
        let masker = crate::mask::Masker::default();
        let mut seq = crate::seq::Sequence::open(None).expect("an in-memory sequence");
        super::encode(&masker, &mut seq, &super::bench::sample(kind, i), None, &mut |e| out(e.line(), e.marks.as_ref()));
    }
}
