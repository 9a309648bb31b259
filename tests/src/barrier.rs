//! Barriers: the event a test waits on, with a deadline, before asserting that something did
//! not happen or happened exactly once, instead of a settle sleep.
use std::{
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{Daemon, field, launch_with, unique};

/// The session label a barrier's workload carries (see [`Daemon::barrier`]).
pub const BARRIER_LABEL: &str = "guard-test-barrier";

/// Is `v` a verdict (or finding) of a [`Daemon::barrier`]'s own workload?
pub fn is_barrier(v: &Value) -> bool {
    !field(v, &format!("/unmapped/session/labels/{BARRIER_LABEL}")).is_empty()
}

impl Daemon {
    /// Returns once the daemon has emitted every verdict of what the kernel saw before this
    /// call: runs `/bin/true` in `agent` (labelled, see [`is_barrier`]) and waits for its exec
    /// verdict. The kernel queues records in one ring buffer in the order they happen and the
    /// daemon reads them, and emits kernel-decided verdicts, in that order; the harness reads
    /// stdout in order too. So this is the event to wait on before asserting that something
    /// did not happen, or happened exactly once, instead of a settle sleep. A barrier exec the
    /// kernel dropped (ring buffer full) is tried again; returns how many execs it took.
    pub fn barrier(&self, agent: &str) -> u32 {
        let deadline = Instant::now() + crate::secs(30);
        for attempt in 1.. {
            let tag = unique("barrier");
            // Its exit does not matter (an allow list may kill it): its verdict does.
            launch_with(&["--label", &format!("{BARRIER_LABEL}={tag}")], agent, &["/bin/true"], &[]);
            let mine = |v: &Value| field(v, &format!("/unmapped/session/labels/{BARRIER_LABEL}")) == tag;
            let retry_at = Instant::now() + crate::secs(3);
            while Instant::now() < retry_at {
                if !self.verdicts(mine).is_empty() {
                    return attempt;
                }
                thread::sleep(Duration::from_millis(10));
            }
            assert!(Instant::now() < deadline, "no barrier verdict in {agent} within 30 s ({attempt} tries); stderr:\n{}", self.stderr_text());
        }
        unreachable!("the loop above returns or panics")
    }

    /// Exactly one verdict matching `pred` (barrier verdicts aside): waits for it (up to 10 s),
    /// then a [`Daemon::barrier`] in `agent`, so a duplicate would be out by the time it counts.
    pub fn only_verdict(&self, agent: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let pred = |v: &Value| !is_barrier(v) && pred(v);
        self.await_verdict(what, 10, pred);
        self.barrier(agent);
        let found = self.verdicts(pred);
        assert_eq!(found.len(), 1, "expected exactly one verdict for {what}, got {found:#?}\nall: {:#?}", self.verdicts(|_| true));
        found.into_iter().next().unwrap()
    }

    /// No verdict matching `pred` (barrier verdicts aside) once a [`Daemon::barrier`] in
    /// `agent` is through.
    pub fn assert_no_verdict_by(&self, agent: &str, what: &str, pred: impl Fn(&Value) -> bool) {
        self.barrier(agent);
        let found = self.verdicts(|v| !is_barrier(v) && pred(v));
        assert!(found.is_empty(), "expected no verdict for {what}, got {found:#?}");
    }
}
