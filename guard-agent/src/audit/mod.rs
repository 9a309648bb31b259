//! The tamper-evident verdict log: an append-only, hash-chained record of every verdict, sealed
//! by Ed25519-signed checkpoints, so that anyone holding the public key can tell whether the
//! log is what the daemon wrote.
//!
//! # Files
//!
//! A log is a directory (mode 0700) of files `verdicts-<seq of the first record, 20 digits>.log`
//! (mode 0600), each JSON lines, one record a line. A new file is started once the current one
//! reaches `max_file_bytes`; the old one is sealed with a checkpoint first. The chain runs on
//! across files and restarts: a file's first record links to the previous file's last. The
//! writer holds an exclusive flock on the directory, so two writers can never fork the chain.
//!
//! # Records
//!
//! Every line has exactly this layout (keys in this order, no whitespace):
//!
//! ```text
//! {"seq":N,"ts":MS,"prev":"<64 hex>","verdict":<verdict>,"hash":"<64 hex>"}
//! {"seq":N,"ts":MS,"prev":"<64 hex>","checkpoint":{"count":C,"key_id":"<16 hex>","reason":"records","sig":"<128 hex>"},"hash":"<64 hex>"}
//! {"seq":N,"ts":MS,"prev":"<64 hex>","note":{"event":"recovered",...},"hash":"<64 hex>"}
//! ```
//!
//! - `seq` starts at 1 and goes up by one per record, checkpoints and notes included (so
//!   removing a checkpoint is noticed like removing a verdict).
//! - `ts` is the writer's clock in milliseconds since the Unix epoch.
//! - `prev` is the previous record's `hash`; 32 zero bytes for seq 1.
//! - The body (`verdict`, `checkpoint` or `note`) is written as canonical JSON: object keys
//!   sorted by their bytes, no whitespace, minimal string escapes (`record::canonical`; it
//!   sorts by itself, whatever serde_json's `preserve_order` feature says).
//! - `hash` = SHA-256 of `"guard-audit-v1\n" ‖ seq (u64 BE) ‖ ts (u64 BE) ‖ prev (32 bytes) ‖
//!   kind ('V', 'C' or 'N') ‖ body length (u64 BE) ‖ body bytes`. The body is hashed exactly as
//!   written, never re-serialised, so numbers serde_json cannot round-trip do not matter. For a
//!   checkpoint the hashed body is its canonical JSON without `sig`.
//! - A checkpoint's `sig` is Ed25519 over `"guard-audit-checkpoint-v1\n" ‖ hash`, by the key
//!   whose id is `key_id` (the first 16 hex digits of SHA-256 of the public key). `count` is
//!   the number of records since the previous checkpoint (or the start of the log). `reason`
//!   is `records` (every `checkpoint_every` records), `interval` (`tick` found records older
//!   than `checkpoint_interval`), `rotate` (the file is full), `shutdown` (`close`) or `gap`
//!   (right after a gap note). A writer without a key writes empty `key_id` and `sig`.
//! - A `note` is the writer speaking for itself. `recovered`: on opening a log whose last
//!   writer did not close it, the writer cuts a torn last line (a crash mid-write), and records
//!   that it did (`torn_file`, `torn_bytes`), how many records the crashed writer left unsealed
//!   (`unsealed`) and the seq it goes on after (`after_seq`). `gap`: verdicts the writer could
//!   not write (a full disk), or that never reached it because its queue was full (the writer
//!   thread behind the daemon's event loop, see `queue`): `lost`, `reason` (`write failures`,
//!   `queue full`, or `write failures and queue full`), the first `error`, the last
//!   seq written before them (`after_seq`), when (`first_ts`, `last_ts`) and, when the verdicts
//!   were numbered, the range of their `metadata.sequence` (`first_sequence`,
//!   `last_sequence`), so a SIEM that has them can fill the hole. No seq is spent on a record
//!   that was not written, so the chain itself has no hole; `verify` lists the gap as a note
//!   (and its count as `lost`), not as damage.
//!
//! # What `verify` detects, and what it cannot
//!
//! Reading the files in chain order, it stops at the first record that fails, and says
//! which seq should be there, where (`file:line`) and what is wrong:
//!
//! - **edited**: a record's bytes do not match its hash (any byte, anywhere in the line: the
//!   layout is fixed and the body is hashed as written), the line is not a record, or a
//!   record's hash was recomputed after a change (the next record's `prev` does not match);
//!   a checkpoint not in its canonical form; a checkpoint the witness holds differently.
//! - **deleted**: a seq is missing inside a file and does not turn up later; the log does not
//!   start at seq 1 (unless `--partial`); a checkpoint's `count` is larger than the records
//!   there are.
//! - **reordered**: a seq turns up later than its place (two records swapped, one moved), or
//!   appears twice.
//! - **truncated**: a file ends mid-line; a file is empty; a file does not start where the
//!   previous one ended; the log ends with records no checkpoint seals; the witness holds a
//!   checkpoint past the log's end.
//! - **bad signature** (with `--pubkey`): a checkpoint's signature does not verify, it names a
//!   key that was not given, or it is unsigned.
//!
//! Limits, by construction:
//!
//! - The hash chain alone is not a secret: someone who can write the files can rewrite the
//!   log from any point and recompute every hash. What they cannot make without the signing
//!   key is a checkpoint signed by it; so without `--pubkey`, only accidental damage and
//!   careless tampering are caught, and a flipped signature byte is not (the summary says
//!   signatures were not checked). The key is root-only on the same host: against root there,
//!   only the checkpoints already sent to a SIEM (`--witness`) still testify.
//! - A truncation that ends exactly on a checkpoint leaves a log that is sealed and valid: it
//!   looks like a log that stopped there. Only an outside copy of a later checkpoint shows it:
//!   the daemon sends every checkpoint to its SIEM sinks (`Log::take_checkpoints`), and
//!   `verify --witness FILE` checks the log against those copies.
//! - Records written after the last checkpoint are not sealed. If the log ends with such
//!   records, verify cannot tell a cut-off tail from a writer that crashed (or is still
//!   running: `--allow-unsealed-tail`); it reports the tail as truncated from the first
//!   unsealed seq. After a crash the next writer seals those records, with a note saying so.
//! - A `gap` note is the writer's word, as trustworthy as the signed checkpoint after it: with
//!   `--pubkey`, a note made up to hide deleted verdicts fails like any other rewrite; without
//!   it, nothing is (see above).
//! - Timestamps are the writer's clock: one that goes back is a warning, not a failure.
//! - `--partial` takes the first given record's link to older, removed files on trust.
//!
//! # Keys and commands
//!
//! `guard-agent audit keygen` (or [`create_key`]) writes the secret key (hex, 0600) and its
//! `.pub`; the public key is printed for whoever verifies. `guard-agent audit verify FILES...`
//! checks a log. `guard-agent audit append --dir D --key K < lines.jsonl` (hidden from the
//! help: not an everyday command) appends JSON lines from stdin through [`Log`] and seals them,
//! printing each checkpoint on stdout: for records made outside the daemon, and for tests.
//!
//! # The writer for the daemon
//!
//! `Log::open(dir, key, LogOptions)` continues the chain in `dir` (repairing a crash's torn
//! line, see above); `append(&verdict)` per verdict; `tick(now)` from a timer for time-based
//! checkpoints; `take_checkpoints()` for the SIEM sinks; `close()` at shutdown (dropping the
//! `Log` seals it too, best effort). The fsync policy is in `writer`'s docs.
mod files;
mod key;
mod queue;
mod record;
mod verify;
mod writer;

pub use files::list as log_files;
pub use key::{create_key, load_key, parse_public, pub_path, write_new_key};
pub use verify::{Report, VerifyOptions, read_witness, verify};
#[cfg(test)]
pub use record::canonical;
pub use queue::Queued;
pub use writer::{Log, LogOptions};

/// Where `keygen` puts the key by default (root-only state).
pub const DEFAULT_KEY: &str = "/var/lib/guard/audit.key";

#[cfg(test)]
mod tests;
