//! Held database clients whose stdin is a pipe another process still writes to (`echo … |
//! sqlite3`, where the writer may not have finished when the client execs): the client stays
//! stopped, and each tick looks again; once no writer is left the buffered statements are all it
//! will ever read and it is judged; past [`SQL_WAIT`] what it would read later cannot be known and
//! it is judged as uninspectable.
use std::time::{Duration, Instant};

use super::{Engine, Outcome, hold::HeldAt};
use crate::{holds::Pidfd, policy::eval::ExecContext, sql, verdict::Verdict};

/// How long a held client waits for the writers of its stdin to finish.
pub const SQL_WAIT: Duration = Duration::from_secs(2);

pub(super) struct SqlWait {
    at: HeldAt,
    pidfd: Pidfd,
    client: String,
    ctx: ExecContext,
    v: Verdict,
    until: Instant,
}

impl SqlWait {
    pub(super) fn new(
        at: HeldAt,
        pidfd: Pidfd,
        client: String,
        ctx: ExecContext,
        v: Verdict,
    ) -> Self {
        Self {
            at,
            pidfd,
            client,
            ctx,
            v,
            until: Instant::now() + SQL_WAIT,
        }
    }
}

impl Engine {
    pub(super) fn wait_for_writers(&mut self, w: SqlWait) {
        tracing::debug!(pid = w.at.pid, client = %w.client, "held database client: its stdin pipe is still being written; waiting");
        self.sql_waits.push(w);
    }

    /// Looks again at every waiting client (each tick).
    pub(super) fn retry_sql_waits(&mut self) {
        if self.sql_waits.is_empty() {
            return;
        }
        let now = Instant::now();
        for mut w in std::mem::take(&mut self.sql_waits) {
            let last = now >= w.until;
            let report = sql::inspect(
                &w.client,
                &w.ctx.argv,
                sql::Proc {
                    pid: Some(w.at.pid),
                    cwd: w.ctx.cwd.as_deref(),
                },
                last,
            );
            if !report.writers.is_empty() {
                self.sql_waits.push(w);
                continue;
            }
            w.ctx.sql = Some(report);
            self.judge_held(w.at, w.pidfd, w.ctx, w.v);
        }
    }

    /// The daemon is stopping: nobody will look again. Killed, as undecided holds are.
    pub(super) fn end_sql_waits(&mut self) {
        for w in std::mem::take(&mut self.sql_waits) {
            self.decide_now(
                w.at.pid,
                w.v,
                Outcome::Kill,
                "the daemon stopped before the client's stdin could be judged",
            );
        }
    }
}
