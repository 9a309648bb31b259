//! Events the kernel dropped because the ring buffer was full, reported as a verdict ("events
//! lost") so the SIEM sees the gap. Enforcement never depended on them: the kernel decided
//! and acted before it tried to queue the event.
//!
//! The kernel counts drops per kind in `DROPS`; what daemons have already reported is in
//! `DROPS_REPORTED`, pinned with the generation (see `Loaded::drops_reported`). So a restarted
//! daemon reports exactly the drops nobody reported (those made while no daemon ran, or that
//! its predecessor saw but died before reporting), and never one twice. A daemon stopped with
//! SIGSTOP sees the growth at its first check after SIGCONT.
//!
//! One verdict per occasion: drops seen growing are reported once they have stopped growing
//! (a check later), or after [`MAX_DELAY`] of continuous growth, and at stop.
use std::time::{Duration, Instant};

use guard_common::EventKind;

use super::Engine;
use crate::{sessions, verdict::Subject};

/// How often `DROPS` is read.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Longest a growing count waits to be reported.
const MAX_DELAY: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(super) struct LostEvents {
    /// `DROPS` at the last check (`None` before the first).
    last: Option<Vec<(EventKind, u64)>>,
    last_check: Option<Instant>,
    /// When drops were first seen past what was reported, while they are not yet.
    pending_since: Option<Instant>,
    /// Drops of replaced generations, reported with the first report (their counters are gone).
    replaced: Vec<(EventKind, u64)>,
    /// "events lost" verdicts this daemon emitted.
    pub reports: u64,
}

impl LostEvents {
    pub(super) fn new(replaced: Vec<(EventKind, u64)>) -> Self {
        Self { replaced, ..Self::default() }
    }

    fn due(&self, now: Instant) -> bool {
        self.last_check.is_none_or(|t| now.duration_since(t) >= CHECK_EVERY)
    }
}

/// The lower-case name of an event kind, as in `status` and the metrics.
pub(super) fn kind_name(kind: EventKind) -> String {
    format!("{kind:?}").to_lowercase()
}

/// `now - before` per kind, kinds with nothing left out.
fn growth(now: &[(EventKind, u64)], before: &[(EventKind, u64)]) -> Vec<(EventKind, u64)> {
    now.iter()
        .map(|(kind, n)| (*kind, n.saturating_sub(before.iter().find(|(k, _)| k == kind).map_or(0, |(_, b)| *b))))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// What a check does with the counts it read.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Nothing,
    Wait,
    Report,
}

/// Decides from the drops not yet reported, whether they grew since the last check, and how
/// long they have been waiting.
fn step(unreported: bool, grew: bool, waited: Duration, last: bool) -> Step {
    match (unreported, grew) {
        (false, _) => Step::Nothing,
        _ if last || waited >= MAX_DELAY => Step::Report,
        (true, true) => Step::Wait,
        (true, false) => Step::Report,
    }
}

impl Engine {
    /// Reads `DROPS` if a check is due (or `last`: at stop) and reports what grew past
    /// `DROPS_REPORTED` once it holds still.
    pub(super) fn check_lost(&mut self, last: bool) {
        let now = Instant::now();
        if !last && !self.lost.due(now) {
            return;
        }
        self.lost.last_check = Some(now);
        let (drops, reported) = match (self.loaded.drops(), self.loaded.drops_reported()) {
            (Ok(d), Ok(r)) => (d, r),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot read the ring buffer's drop counters");
                return;
            }
        };
        let unreported = growth(&drops, &reported);
        // The first check compares with what was reported: growth a previous daemon never saw
        // settles for one more check, like any other.
        let grew = self.lost.last.as_ref().map_or(!unreported.is_empty(), |l| *l != drops);
        self.lost.last = Some(drops.clone());
        let pending = !unreported.is_empty() || !self.lost.replaced.is_empty();
        let since = *self.lost.pending_since.get_or_insert(now);
        match step(pending, grew, now.duration_since(since), last) {
            Step::Nothing => self.lost.pending_since = None,
            Step::Wait => {}
            Step::Report => {
                self.lost.pending_since = None;
                self.report_lost(&unreported, &drops);
                // Written after the verdict: a daemon dying in between reports these again
                // rather than never.
                if let Err(e) = self.loaded.mark_drops_reported(&drops) {
                    tracing::error!(error = %e, "cannot record the reported drops; a restarted daemon will report them again");
                }
            }
        }
    }

    fn report_lost(&mut self, unreported: &[(EventKind, u64)], drops: &[(EventKind, u64)]) {
        let replaced = std::mem::take(&mut self.lost.replaced);
        let mut lost = unreported.to_vec();
        for (kind, n) in &replaced {
            match lost.iter_mut().find(|(k, _)| k == kind) {
                Some((_, sum)) => *sum += n,
                None => lost.push((*kind, *n)),
            }
        }
        lost.sort_by_key(|(k, _)| *k as u32);
        self.lost.reports += 1;
        let names = |c: &[(EventKind, u64)]| c.iter().map(|(k, n)| (kind_name(*k), *n)).collect::<Vec<_>>();
        let total: u64 = lost.iter().map(|(_, n)| n).sum();
        let summary = lost.iter().map(|(k, n)| format!("{n} {}", kind_name(*k))).collect::<Vec<_>>().join(", ");
        tracing::warn!(total, lost = %summary, "events lost: the ring buffer was full");
        let subject = Subject::Lost {
            lost: names(&lost),
            totals: names(drops),
            replaced: names(&replaced),
            ring_buffer_bytes: self.settings.load_options().ring_buffer_bytes,
        };
        let hash = self.correlator.policies.current.hash.clone();
        let reason = format!(
            "{total} events lost ({summary}): the kernel's ring buffer was full; the kernel still enforced every decision, but these were never reported"
        );
        let mut v = self.daemon_verdict(subject, &hash, Some(reason));
        v.decision = guard_common::Decision::Audited;
        v.time_ms = sessions::now_ms();
        self.emit(&v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_per_kind_and_leaves_out_kinds_without_any() {
        let before = [(EventKind::Exec, 5), (EventKind::Fork, 2), (EventKind::Exit, 0)];
        let now = [(EventKind::Exec, 9), (EventKind::Fork, 2), (EventKind::Exit, 3)];
        assert_eq!(growth(&now, &before), [(EventKind::Exec, 4), (EventKind::Exit, 3)]);
        // A counter below its baseline (never expected) is not a negative loss.
        assert_eq!(growth(&before, &now), []);
        assert_eq!(growth(&now, &[]), [(EventKind::Exec, 9), (EventKind::Fork, 2), (EventKind::Exit, 3)]);
    }

    #[test]
    fn drops_are_reported_once_they_hold_still_or_have_waited_too_long() {
        let s = Duration::from_secs;
        assert_eq!(step(false, false, s(0), false), Step::Nothing);
        assert_eq!(step(false, true, s(0), true), Step::Nothing);
        assert_eq!(step(true, true, s(1), false), Step::Wait);
        assert_eq!(step(true, false, s(1), false), Step::Report);
        assert_eq!(step(true, true, MAX_DELAY, false), Step::Report);
        assert_eq!(step(true, true, s(0), true), Step::Report);
    }
}
