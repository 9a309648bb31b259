//! The ring-buffer reader. The programs submit routine records (an allowed exec, a fork, an
//! exit, a connect the kernel already decided) without waking anyone: a wake-up costs the
//! producing CPU an interrupt and a cross-CPU wake per record, which was most of what guard
//! cost an agent's exec loop. Urgent records (a hold, a kill the daemon carries out, any
//! verdict but "allowed", a DNS message, a new cgroup) wake the reader at once, and so does the
//! routine record that takes the queued bytes past each eighth of the buffer (only that one: a
//! forced wake-up on every record once a busy reader fell an eighth behind made each cost ~8 µs);
//! otherwise it reads on a short timer. Either way it reads everything queued and hands it on in batches.
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::MissedTickBehavior,
};

use crate::events::{self, Event};

/// How long a routine record may wait in the ring buffer before the daemon reads it.
pub const POLL: Duration = Duration::from_millis(50);
/// Events per batch handed to the event loop.
pub const BATCH: usize = 256;

/// Records read in one go, in ring-buffer order.
pub struct Batch {
    pub events: Vec<Event>,
    /// On the last batch of a pass that read the ring buffer empty: when that pass began.
    /// Every record submitted before then is in this batch or an earlier one.
    pub drained: Option<Instant>,
}

/// The running reader: `stop` makes it read what is left and end.
pub struct Reader {
    task: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
}

pub fn spawn(ring: AsyncFd<RingBuf<MapData>>, tx: mpsc::Sender<Batch>, undecodable: Arc<AtomicU64>) -> Reader {
    let (stop, stopped) = oneshot::channel();
    Reader { task: tokio::spawn(read(ring, tx, undecodable, stopped)), stop: Some(stop) }
}

impl Reader {
    /// Reads what the programs queued up to now and ends, within `grace`.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

async fn read(
    mut ring: AsyncFd<RingBuf<MapData>>,
    tx: mpsc::Sender<Batch>,
    undecodable: Arc<AtomicU64>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            r = ring.readable_mut() => match r {
                // Cleared before reading: a record submitted after this read wakes it again.
                Ok(mut guard) => { guard.clear_ready(); false }
                Err(e) => {
                    tracing::error!(error = %e, "event ring buffer poll failed");
                    return;
                }
            },
            _ = poll.tick() => false,
            _ = &mut stopped => true,
        };
        if !drain(ring.get_mut(), &tx, &undecodable).await || last {
            return;
        }
    }
}

/// Reads every queued record; false once the event loop is gone. A pass that read nothing
/// sends nothing (the event loop is not woken for it).
async fn drain(ring: &mut RingBuf<MapData>, tx: &mpsc::Sender<Batch>, undecodable: &AtomicU64) -> bool {
    let began = Instant::now();
    let mut events = Vec::new();
    let mut sent = false;
    while let Some(item) = ring.next() {
        match events::decode(&item) {
            Ok(ev) => events.push(ev),
            Err(e) => {
                undecodable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "undecodable event");
            }
        }
        drop(item);
        if events.len() == BATCH {
            let full = Batch { events: std::mem::replace(&mut events, Vec::with_capacity(BATCH)), drained: None };
            if tx.send(full).await.is_err() {
                return false;
            }
            sent = true;
        }
    }
    (events.is_empty() && !sent) || tx.send(Batch { events, drained: Some(began) }).await.is_ok()
}
