//! The writer: appends records to the newest file of a log directory, continuing the chain of
//! whatever is already there, and seals it with signed checkpoints.
//!
//! Durability: each record is one `write(2)` of a whole line to a file opened `O_APPEND`, so a
//! crash leaves at most one torn line at the end, which the next `open` cuts away (and records
//! that it did). Verdict lines are not fsynced one by one (a burst would be bound by the disk);
//! every checkpoint, rotation and `close` is, and `sync` is there for callers that want more.
//! A checkpoint is handed out by `take_checkpoints` only after it is on disk, so the outside
//! witness never holds a checkpoint the log could lose in a crash.
//!
//! A failed write (a full disk) never leaves a partial line behind: the file is cut back to its
//! last whole record at once, and the chain goes on from that record. A verdict that could not
//! be written is counted ([`Stats`]) and remembered as part of a *gap*; once a write works again
//! (the next verdict, or `tick` at most once a second), the writer appends a `gap` note stating
//! how many verdicts are missing after which seq, when, why, and the range of their
//! `metadata.sequence`, and seals it at once with a signed checkpoint (reason `gap`). The
//! verifier reports such a gap as a note: the chain has no hole (seqs are given to records that
//! were written), and what is missing is said by the writer, under its signature. Should even
//! the cut fail, every call is refused (and counted as lost) until a later call manages it.
//! A daemon stopped during a gap tries to record it at `close`; if it still cannot, the count
//! is in its log (error level) and the next writer only sees a clean end or a torn line.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::{
        fd::AsRawFd as _,
        unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::{Value, json};

use super::{
    files::{self, RevLines},
    key,
    record::{self, Checkpoint, GENESIS, Kind, canonical, hex},
};

/// When to start a new file and when to seal.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// A new file is started before the first record once the current one is this large.
    pub max_file_bytes: u64,
    /// A checkpoint after this many records (0: never by count).
    pub checkpoint_every: u64,
    /// A checkpoint when `tick` finds unsealed records older than this.
    pub checkpoint_interval: Duration,
}

impl Default for LogOptions {
    /// 64 MiB files; a checkpoint every 1000 records or minute, whichever comes first.
    fn default() -> Self {
        Self { max_file_bytes: 64 << 20, checkpoint_every: 1000, checkpoint_interval: Duration::from_secs(60) }
    }
}

/// What the writer could not write, for `status` and metrics (since `open`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Verdicts that are not in the log because writing them failed.
    pub lost: u64,
    /// Writes that failed: records, checkpoints, syncs, new files (retries included).
    pub write_failures: u64,
    /// Gap records written: runs of lost verdicts stated in the log.
    pub gaps: u64,
    /// Verdicts lost since the last gap record: the next gap record states them.
    pub unrecorded: u64,
    /// The error of the current run of failures; `None` while writing works.
    pub error: Option<String>,
}

/// A run of verdicts that could not be written, until a gap record states it.
struct Gap {
    lost: u64,
    /// When the first and the last of them were lost (ms since the epoch).
    first_ms: u64,
    last_ms: u64,
    /// The range of their `metadata.sequence` (what every sink sees), when they had one.
    sequences: Option<(u64, u64)>,
    /// The first error.
    error: String,
    /// Why they are missing: "write failures", "queue full" (the writer thread was behind),
    /// or both.
    reason: &'static str,
}

/// A gap's reasons.
const WRITE_FAILURES: &str = "write failures";
const QUEUE_FULL: &str = "queue full";
const BOTH: &str = "write failures and queue full";

/// While a gap is open and no verdict arrives, `tick` tries to record it this often.
const GAP_RETRY: Duration = Duration::from_secs(1);

/// At most this many checkpoints wait for `take_checkpoints`; older ones are dropped (they are
/// still in the log) so a caller that never takes them does not grow without bound.
const MAX_PENDING: usize = 1024;

/// An open, locked log directory.
pub struct Log {
    dir: PathBuf,
    key: Option<SigningKey>,
    key_id: String,
    opts: LogOptions,
    file: File,
    path: PathBuf,
    file_bytes: u64,
    next_seq: u64,
    prev: [u8; 32],
    /// Records since the last checkpoint: 0 means the log is sealed.
    since_checkpoint: u64,
    last_checkpoint: Instant,
    pending: Vec<Value>,
    /// A failed write whose partial line could not be cut off: the file's end is unknown, so
    /// nothing is appended until a later call manages the cut.
    broken: Option<String>,
    gap: Option<Gap>,
    /// When `tick` last tried to record the gap.
    gap_tried: Instant,
    stats: Stats,
    closed: bool,
    /// Holds the directory's flock: two writers would fork the chain.
    _lock: File,
}

/// What `open` found at the end of the existing log.
struct Tail {
    /// The last record's seq and hash; `None` for a new log.
    last: Option<(u64, [u8; 32])>,
    since_checkpoint: u64,
    /// A torn last line that was cut away: the file's name and how many bytes.
    torn: Option<(String, u64)>,
}

impl Log {
    /// Opens (or starts) the log in `dir` and continues its chain. Without `key`, checkpoints
    /// are written unsigned (they still seal the chain against a truncation that stops short of
    /// them, but prove nothing about who wrote them).
    pub fn open(dir: &Path, key: Option<SigningKey>, opts: LogOptions) -> anyhow::Result<Log> {
        ensure_private_dir(dir)?;
        let lock = lock_dir(dir)?;
        let existing = files::list(dir).with_context(|| format!("listing {}", dir.display()))?;
        let tail = read_tail(&existing)?;
        let (next_seq, prev) = tail.last.map_or((1, GENESIS), |(seq, h)| (seq + 1, h));
        let (file, path) = open_current(dir, existing.last(), next_seq)?;
        let file_bytes = file.metadata()?.len();
        let key_id = key.as_ref().map(|k| key::key_id(&k.verifying_key())).unwrap_or_default();
        let mut log = Log {
            dir: dir.to_owned(),
            key,
            key_id,
            opts,
            file,
            path,
            file_bytes,
            next_seq,
            prev,
            since_checkpoint: tail.since_checkpoint,
            last_checkpoint: Instant::now(),
            pending: Vec::new(),
            broken: None,
            gap: None,
            gap_tried: Instant::now(),
            stats: Stats::default(),
            closed: false,
            _lock: lock,
        };
        log.note_recovery(&tail)?;
        Ok(log)
    }

    /// Appends one verdict; returns its seq. Writes a checkpoint after it when
    /// `checkpoint_every` records are unsealed. An error means the verdict is not in the log:
    /// it is counted as lost, and stated by the next gap record.
    pub fn append(&mut self, verdict: &Value) -> io::Result<u64> {
        self.append_canonical(&canonical(verdict), verdict.pointer("/metadata/sequence").and_then(Value::as_u64))
    }

    /// [`Log::append`] of a verdict already in canonical form (`body`), numbered `sequence`.
    pub fn append_canonical(&mut self, body: &[u8], sequence: Option<u64>) -> io::Result<u64> {
        let written = self.guarded(|log| {
            log.close_gap()?;
            log.rotate_if_full()?;
            log.write_record(Kind::Verdict, body)
        });
        let seq = written.inspect_err(|e| self.lose(sequence, e))?;
        if self.opts.checkpoint_every > 0 && self.since_checkpoint >= self.opts.checkpoint_every {
            // The verdict is in the log; a seal that cannot be written now is tried again
            // after the next record (and counted as a failed write).
            let _ = self.guarded(|log| log.checkpoint("records"));
        }
        Ok(seq)
    }

    /// Records a pending gap (at most once a second) and writes a checkpoint if records have
    /// been waiting for one for `checkpoint_interval`; says whether it wrote a checkpoint.
    /// Call it from a timer.
    pub fn tick(&mut self, now: Instant) -> io::Result<bool> {
        if self.gap.is_some() {
            if now.saturating_duration_since(self.gap_tried) < GAP_RETRY {
                return Ok(false);
            }
            self.gap_tried = now;
        }
        self.guarded(|log| {
            if log.close_gap()? {
                return Ok(true);
            }
            let due = log.since_checkpoint > 0 && now.saturating_duration_since(log.last_checkpoint) >= log.opts.checkpoint_interval;
            if due {
                log.checkpoint("interval")?;
            }
            Ok(due)
        })
    }

    /// What could not be written so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Forces everything written so far to disk (after a burst, say).
    pub fn sync(&mut self) -> io::Result<()> {
        self.guarded(|log| log.file.sync_data())
    }

    /// Checkpoint records written since the last call, oldest first, as JSON: for the SIEM
    /// sinks, so a copy of each seal lives outside this machine.
    pub fn take_checkpoints(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.pending)
    }

    /// Seals the log with a final checkpoint (unless it is sealed already) and syncs it; returns
    /// the checkpoints not yet taken, the final one included.
    pub fn close(mut self) -> io::Result<Vec<Value>> {
        self.close_in_place()
    }

    /// [`Log::close`] for an owner that cannot give the log away (its writer thread); nothing
    /// is written after it.
    pub(super) fn close_in_place(&mut self) -> io::Result<Vec<Value>> {
        self.closed = true;
        self.guarded(|log| {
            log.close_gap().map_err(|e| io::Error::new(e.kind(), format!("{} verdicts that could not be written are not recorded in the log either: {e}", log.stats.unrecorded)))?;
            if log.since_checkpoint > 0 {
                log.checkpoint("shutdown")?;
            }
            log.file.sync_all()
        })?;
        Ok(self.take_checkpoints())
    }

    /// The seq the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Runs a write step, first repairing the file if a failed write left it with a partial
    /// line; counts a failure, and says when a run of failures begins (not for every one).
    fn guarded<T>(&mut self, step: impl FnOnce(&mut Self) -> io::Result<T>) -> io::Result<T> {
        if let Some(why) = &self.broken {
            if let Err(e) = self.file.set_len(self.file_bytes) {
                self.stats.write_failures += 1;
                return Err(io::Error::other(format!("the audit log's last write failed ({why}) and its partial line cannot be cut off: {e}")));
            }
            self.broken = None;
        }
        step(self).inspect_err(|e| {
            self.stats.write_failures += 1;
            if self.stats.error.is_none() {
                tracing::error!(
                    dir = %self.dir.display(),
                    error = %e,
                    "audit log: cannot write; verdicts that cannot be written are counted (status, metrics) and stated in a gap record once writing works again"
                );
                self.stats.error = Some(e.to_string());
            }
        })
    }

    /// A verdict that could not be written joins the gap.
    fn lose(&mut self, sequence: Option<u64>, e: &io::Error) {
        self.stats.lost += 1;
        self.stats.unrecorded += 1;
        let now = now_ms();
        self.gap_add(1, sequence.map(|s| (s, s)), (now, now), &e.to_string(), WRITE_FAILURES);
    }

    /// `lost` verdicts (numbered `sequences`, lost between the two times) that never reached
    /// the writer: its queue was full. They join the gap like verdicts whose write failed, and
    /// the next record written states them.
    pub fn lose_queued(&mut self, lost: u64, sequences: Option<(u64, u64)>, first_ms: u64, last_ms: u64) {
        if lost == 0 {
            return;
        }
        self.stats.lost += lost;
        self.stats.unrecorded += lost;
        self.gap_add(lost, sequences, (first_ms, last_ms), "the audit log's writer was behind and its queue was full", QUEUE_FULL);
    }

    fn gap_add(&mut self, lost: u64, sequences: Option<(u64, u64)>, (first_ms, last_ms): (u64, u64), error: &str, reason: &'static str) {
        let g = self.gap.get_or_insert_with(|| Gap { lost: 0, first_ms, last_ms, sequences: None, error: error.to_owned(), reason });
        if g.reason != reason {
            g.reason = BOTH;
        }
        g.lost += lost;
        g.first_ms = g.first_ms.min(first_ms);
        g.last_ms = g.last_ms.max(last_ms);
        if let Some((first, last)) = sequences {
            g.sequences = Some(g.sequences.map_or((first, last), |(a, b)| (a.min(first), b.max(last))));
        }
    }

    /// States the open gap, if any, in a note record and seals it at once; says whether it
    /// did. The chain goes on from the last record written: the note is the writer's own
    /// account of what is missing, and the signed checkpoint after it covers it like any record.
    fn close_gap(&mut self) -> io::Result<bool> {
        let Some(g) = &self.gap else { return Ok(false) };
        let after_seq = self.next_seq - 1;
        let mut note = json!({
            "event": "gap",
            "lost": g.lost,
            "reason": g.reason,
            "error": g.error,
            "after_seq": after_seq,
            "first_ts": g.first_ms,
            "last_ts": g.last_ms,
        });
        if let Some((first, last)) = g.sequences {
            note["first_sequence"] = json!(first);
            note["last_sequence"] = json!(last);
        }
        let lost = g.lost;
        self.rotate_if_full()?;
        let seq = self.write_record(Kind::Note, &canonical(&note))?;
        self.gap = None;
        self.stats.unrecorded = 0;
        self.stats.gaps += 1;
        tracing::warn!(dir = %self.dir.display(), lost, after_seq, gap_record = seq, "audit log: writing again; the verdicts it could not write are stated in a gap record");
        // The note is written; a seal that fails now is written with a later one.
        let _ = self.checkpoint("gap").inspect_err(|_| self.stats.write_failures += 1);
        Ok(true)
    }

    /// Writes one verdict or note record, whole, in one write.
    fn write_record(&mut self, kind: Kind, body: &[u8]) -> io::Result<u64> {
        let (seq, ts) = (self.next_seq, now_ms());
        let h = record::hash(seq, ts, &self.prev, kind, body);
        self.write_line(&record::render_line(seq, ts, &self.prev, kind, body, &h), h)?;
        self.since_checkpoint += 1;
        Ok(seq)
    }

    /// Writes a checkpoint over everything so far, syncs it, and queues it for the witness.
    fn checkpoint(&mut self, reason: &str) -> io::Result<u64> {
        let (seq, ts) = (self.next_seq, now_ms());
        let mut c = Checkpoint { count: self.since_checkpoint, key_id: self.key_id.clone(), reason: reason.to_owned(), sig: String::new() };
        let h = record::hash(seq, ts, &self.prev, Kind::Checkpoint, &c.hashed());
        if let Some(k) = &self.key {
            c.sig = hex(&k.sign(&record::signed_message(&h)).to_bytes());
        }
        let line = record::render_line(seq, ts, &self.prev, Kind::Checkpoint, &c.render(), &h);
        self.write_line(&line, h)?;
        // Written: the next checkpoint counts from here, whether or not this one syncs. One
        // that does not is not handed to the witness (it might not survive a crash).
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        self.file.sync_data()?;
        if self.pending.len() >= MAX_PENDING {
            self.pending.remove(0);
        }
        self.pending.push(serde_json::from_slice(&line).map_err(io::Error::other)?);
        Ok(seq)
    }

    fn write_line(&mut self, line: &[u8], h: [u8; 32]) -> io::Result<()> {
        if self.next_seq > record::MAX_SEQ {
            return Err(io::Error::other("the log has used every seq; start a new log directory"));
        }
        if let Err(e) = self.file.write_all(line) {
            // A full disk may take part of the line: cut it off, so the file ends with the last
            // whole record and the chain can go on from it.
            if let Err(cut) = self.file.set_len(self.file_bytes) {
                self.broken = Some(format!("{e}; cutting off the partial line: {cut}"));
            }
            return Err(e);
        }
        self.file_bytes += line.len() as u64;
        self.next_seq += 1;
        self.prev = h;
        if self.stats.error.take().is_some() {
            tracing::info!(dir = %self.dir.display(), lost = self.stats.lost, write_failures = self.stats.write_failures, "audit log: writing again");
        }
        Ok(())
    }

    /// Seals the full file and starts the next, named after the seq it starts with. Sealing
    /// each file lets it be checked (and archived) on its own.
    fn rotate_if_full(&mut self) -> io::Result<()> {
        if self.file_bytes < self.opts.max_file_bytes {
            return Ok(());
        }
        if self.since_checkpoint > 0 {
            self.checkpoint("rotate")?;
        }
        self.file.sync_all()?;
        let path = self.dir.join(files::file_name(self.next_seq));
        self.file = create_log_file(&path)?;
        self.path = path;
        self.file_bytes = 0;
        sync_dir(&self.dir)
    }

    /// After a crash, says so in the log itself: a cut torn line and records the crashed writer
    /// left unsealed are then explained by a record, not silently passed over.
    fn note_recovery(&mut self, tail: &Tail) -> anyhow::Result<()> {
        let unsealed = tail.since_checkpoint;
        if tail.torn.is_none() && unsealed == 0 {
            return Ok(());
        }
        let (file, torn_bytes) = tail.torn.clone().unwrap_or_default();
        tracing::warn!(
            dir = %self.dir.display(),
            torn_file = %file,
            torn_bytes,
            unsealed,
            "audit log: the previous writer did not close it; continuing the chain after a recovery note"
        );
        let after_seq = self.next_seq.saturating_sub(1);
        let note = json!({ "event": "recovered", "torn_file": file, "torn_bytes": torn_bytes, "unsealed": unsealed, "after_seq": after_seq });
        let body = canonical(&note);
        self.guarded(|log| {
            log.write_record(Kind::Note, &body)?;
            log.file.sync_data()
        })
        .with_context(|| format!("writing to {}", self.path.display()))
    }
}

impl Drop for Log {
    /// A log dropped without `close` (an early return, a panic) is still sealed if it can be.
    fn drop(&mut self) {
        if self.closed || self.broken.is_some() || (self.since_checkpoint == 0 && self.gap.is_none()) {
            return;
        }
        if let Err(e) = self.close_gap().and_then(|_| if self.since_checkpoint > 0 { self.checkpoint("shutdown").map(drop) } else { Ok(()) }) {
            tracing::warn!(error = %e, path = %self.path.display(), "audit log: cannot write the closing checkpoint");
        }
    }
}

#[cfg(test)]
impl Log {
    /// Writes go to `file` from now on (`/dev/full`: a full disk); returns the file it wrote to.
    pub(super) fn swap_file(&mut self, file: File) -> File {
        std::mem::replace(&mut self.file, file)
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Creates `dir` (0700) or makes an existing one 0700: verdicts name users, commands and hosts.
fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mode = fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "audit log directory was open to others; made it 0700");
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// An exclusive flock on the directory itself (no lock file to trip over when globbing the
/// log's files), held as long as the `Log`.
fn lock_dir(dir: &Path) -> anyhow::Result<File> {
    let handle = File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    // SAFETY: flock on a descriptor we own; non-blocking.
    if unsafe { libc::flock(handle.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!("another writer holds the lock on {} (a daemon or `audit append` is writing this log)", dir.display());
    }
    Ok(handle)
}

/// Cuts a torn last line from the newest file, finds the last record (checking its own hash)
/// and how many records follow the last checkpoint. Reads backwards, so only the tail of a
/// long log is read.
fn read_tail(existing: &[PathBuf]) -> anyhow::Result<Tail> {
    let mut tail = Tail { last: None, since_checkpoint: 0, torn: None };
    for (i, path) in existing.iter().enumerate().rev() {
        let newest = i + 1 == existing.len();
        let mut file = OpenOptions::new().read(true).write(newest).open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata()?.len();
        let end = files::end_of_last_line(&mut file, len)?;
        if end < len && newest {
            file.set_len(end).with_context(|| format!("cutting the torn last line of {}", path.display()))?;
            file.sync_all()?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            tail.torn = Some((name, len - end));
        }
        let mut lines = RevLines::new(file, end);
        while let Some(line) = lines.next_line()? {
            let r = match record::parse_line(&line) {
                Ok(r) => r,
                Err(e) if tail.last.is_none() => bail!("the last record of {} is not valid ({e}); refusing to continue its chain", path.display()),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "audit log: a corrupt record before the tail; `audit verify` will report it");
                    return Ok(tail);
                }
            };
            let last = match tail.last {
                Some((last, _)) => last,
                None => {
                    tail.last = Some(checked_last(path, &r)?);
                    r.seq
                }
            };
            let seq = r.seq.min(last);
            if r.kind == Kind::Checkpoint {
                tail.since_checkpoint = last - seq;
                return Ok(tail);
            }
            tail.since_checkpoint = last - seq + 1;
        }
    }
    Ok(tail)
}

/// The last record's seq and hash, if it matches its hash: the chain must not continue from a
/// corrupt record.
fn checked_last(path: &Path, r: &record::RawRecord) -> anyhow::Result<(u64, [u8; 32])> {
    if !r.computed_hash().is_ok_and(|h| h == r.hash) {
        bail!("the last record of {} (seq {}) does not match its hash; refusing to continue its chain", path.display(), r.seq);
    }
    Ok((r.seq, r.hash))
}

/// The file to append to: the newest if it exists (an empty one is reused only if its name
/// says it starts where the chain goes on), else a new one.
fn open_current(dir: &Path, newest: Option<&PathBuf>, next_seq: u64) -> anyhow::Result<(File, PathBuf)> {
    if let Some(path) = newest {
        let empty = fs::metadata(path)?.len() == 0;
        if !empty || files::name_seq(path) == Some(next_seq) {
            let file = OpenOptions::new().append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
            if file.metadata()?.permissions().mode() & 0o077 != 0 {
                file.set_permissions(fs::Permissions::from_mode(0o600))?;
            }
            return Ok((file, path.clone()));
        }
        fs::remove_file(path).with_context(|| format!("removing the empty {}", path.display()))?;
    }
    let path = dir.join(files::file_name(next_seq));
    let file = create_log_file(&path).with_context(|| format!("creating {}", path.display()))?;
    sync_dir(dir)?;
    Ok((file, path))
}

/// A new log file, 0600, never replacing one.
fn create_log_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create_new(true).mode(0o600).open(path)
}

/// Makes a new file's directory entry durable, so a crash cannot lose a whole file.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
