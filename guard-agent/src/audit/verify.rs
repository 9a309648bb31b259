//! The verifier: reads log files in chain order and stops at the first record that is not what
//! the writer wrote, saying what is wrong with it.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    io::{self, BufReader},
    path::{Path, PathBuf},
};

use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{Value, json};

use super::{
    files::{self, Line},
    key,
    record::{self, Checkpoint, GENESIS, Kind, RawRecord, hex, signed_message},
};

/// What the caller knows besides the files.
#[derive(Debug, Default)]
pub struct VerifyOptions {
    /// Public keys checkpoints may be signed with; empty: signatures are not checked.
    pub keys: Vec<VerifyingKey>,
    /// The files are a later part of a log whose older files were removed: the first record
    /// may start after seq 1, and its link to what came before is taken on trust.
    pub partial: bool,
    /// Records after the last checkpoint, and an incomplete last line, are not an error (a log
    /// still being written).
    pub allow_unsealed_tail: bool,
    /// Checkpoints (seq, hash) kept outside this machine (the SIEM's copies).
    pub witness: BTreeMap<u64, [u8; 32]>,
}

/// What is wrong with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// Its content does not match its hash, it is not a record, or a hash was recomputed.
    Edited,
    /// Records are missing from the middle of a file.
    Deleted,
    /// Records are out of order, or one appears twice.
    Reordered,
    /// A file ends mid-record, is empty, a file does not continue the one before it, or the
    /// log ends after records no checkpoint seals.
    Truncated,
    /// A checkpoint's signature does not verify, or its key is not one given.
    BadSignature,
}

impl Problem {
    pub fn name(self) -> &'static str {
        match self {
            Problem::Edited => "edited",
            Problem::Deleted => "deleted",
            Problem::Reordered => "reordered",
            Problem::Truncated => "truncated",
            Problem::BadSignature => "bad signature",
        }
    }
}

/// The first bad record: where it is and what is wrong.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The seq that should be at `file:line` (unknown only when no record could be read yet).
    pub seq: Option<u64>,
    pub file: PathBuf,
    pub line: u64,
    pub problem: Problem,
    pub detail: String,
}

/// The outcome: counts for a summary, and the first problem if there is one.
#[derive(Debug, Default)]
pub struct Report {
    pub files: usize,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub checkpoints: u64,
    /// Checkpoints without a signature (the writer had no key).
    pub unsigned: u64,
    pub signatures_checked: bool,
    /// Key ids of the checkpoints seen (so an auditor knows which public key to ask for).
    pub key_ids: BTreeSet<String>,
    pub witnessed: u64,
    /// Things the writer recorded about itself (recovery after a crash, gaps).
    pub notes: Vec<String>,
    /// Verdicts the writer's gap records say it could not write.
    pub lost: u64,
    /// Oddities that are not evidence of tampering (clock steps, a partial log).
    pub warnings: Vec<String>,
    pub problem: Option<Finding>,
}

/// Checks `paths` (in any order) as one log. An `Err` only for files that cannot be read;
/// everything wrong with their contents is in the report.
pub fn verify(paths: &[PathBuf], opts: &VerifyOptions) -> io::Result<Report> {
    let files = chain_order(paths)?;
    let report = Report { files: files.len(), signatures_checked: !opts.keys.is_empty(), ..Report::default() };
    let mut v = Verifier { opts, report, files, prev: None, last_checkpoint: None, first_unsealed: None };
    v.run()?;
    Ok(v.report)
}

/// Most warnings listed; past that they are only counted.
const MAX_WARNINGS: usize = 20;

/// The previous record: what the next one must link to.
struct Prev {
    seq: u64,
    hash: [u8; 32],
    ts: u64,
    file: usize,
    line: u64,
}

struct Verifier<'a> {
    opts: &'a VerifyOptions,
    report: Report,
    files: Vec<PathBuf>,
    prev: Option<Prev>,
    /// The last checkpoint's seq (0: the start of the log); `None` before the first one of a
    /// partial log, when the count of the next one cannot be checked.
    last_checkpoint: Option<u64>,
    /// The first record after the last checkpoint, and where it is.
    first_unsealed: Option<(u64, usize, u64)>,
}

/// Stop at the first problem.
type Step = Result<(), Finding>;

impl Verifier<'_> {
    fn run(&mut self) -> io::Result<()> {
        for i in 0..self.files.len() {
            if let Err(f) = self.check_file(i)? {
                self.report.problem = Some(f);
                return Ok(());
            }
        }
        if let Err(f) = self.check_end() {
            self.report.problem = Some(f);
        }
        Ok(())
    }

    fn check_file(&mut self, file: usize) -> io::Result<Step> {
        let mut reader = BufReader::new(File::open(&self.files[file])?);
        let mut line = 0;
        while let Some(next) = files::read_line(&mut reader)? {
            line += 1;
            let step = match next {
                Line::TooLong => Err(self.finding(file, line, Problem::Edited, "a line longer than 16 MiB: not a record".into())),
                Line::Text { newline: false, bytes } if self.opts.allow_unsealed_tail && file + 1 == self.files.len() => {
                    self.warn(format!("{}:{line}: the last line is incomplete ({} bytes; being written?)", self.files[file].display(), bytes.len()));
                    break;
                }
                Line::Text { newline: false, bytes } => Err(self.cut_line(file, line, &bytes)),
                Line::Text { bytes, .. } => self.check_line(file, line, &bytes),
            };
            if step.is_err() {
                return Ok(step);
            }
        }
        if line == 0 {
            let detail = "the file is empty: its records were removed, or its writer crashed right after making it";
            return Ok(Err(self.finding(file, 1, Problem::Truncated, detail.into())));
        }
        Ok(Ok(()))
    }

    /// A last line without its newline: the start of a record cut short, or not a record.
    fn cut_line(&self, file: usize, line: u64, bytes: &[u8]) -> Finding {
        const START: &[u8] = b"{\"seq\":";
        if !bytes.starts_with(START) && !START.starts_with(bytes) {
            let e = record::parse_line(bytes).err().unwrap_or_default();
            return self.finding(file, line, Problem::Edited, format!("not a record of a guard audit log: {e}"));
        }
        let detail = format!("the file ends in the middle of a record ({} bytes after the last newline)", bytes.len());
        self.finding(file, line, Problem::Truncated, detail)
    }

    /// A finding at `file:line`, about the seq that belongs there (before any record was read,
    /// the one the file's name says it starts with, if it is named like a log file).
    fn finding(&self, file: usize, line: u64, problem: Problem, detail: String) -> Finding {
        let seq = self.prev.as_ref().map(|p| p.seq + 1).or_else(|| files::name_seq(&self.files[file]).filter(|_| line == 1));
        Finding { seq, file: self.files[file].clone(), line, problem, detail }
    }

    fn check_line(&mut self, file: usize, line: u64, bytes: &[u8]) -> Step {
        let r = record::parse_line(bytes).map_err(|e| self.finding(file, line, Problem::Edited, format!("not a record of a guard audit log: {e}")))?;
        let claims = |r: &RawRecord| match &self.prev {
            Some(p) if p.seq + 1 != r.seq => format!(" (the line claims seq {})", r.seq),
            _ => String::new(),
        };
        match r.computed_hash() {
            Err(e) => return Err(self.with_seq(self.finding(file, line, Problem::Edited, format!("{e}{}", claims(&r))), &r)),
            Ok(h) if h != r.hash => {
                let detail = format!("its content does not match its hash: the record was changed after it was written{}", claims(&r));
                return Err(self.with_seq(self.finding(file, line, Problem::Edited, detail), &r));
            }
            Ok(_) => {}
        }
        self.check_link(&r, file, line)?;
        self.check_witness(&r, file, line)?;
        match r.kind {
            Kind::Checkpoint => self.check_checkpoint(&r, file, line)?,
            Kind::Verdict | Kind::Note => {
                if self.first_unsealed.is_none() {
                    self.first_unsealed = Some((r.seq, file, line));
                }
                if r.kind == Kind::Note {
                    let (text, lost) = describe_note(r.seq, r.body);
                    self.report.notes.push(text);
                    self.report.lost += lost;
                }
            }
        }
        self.advance(&r, file, line);
        Ok(())
    }

    /// Without a previous record the seq in a finding is the record's own.
    fn with_seq(&self, mut f: Finding, r: &RawRecord) -> Finding {
        f.seq.get_or_insert(r.seq);
        f
    }

    /// The record follows the one before it: the next seq, linked by hash.
    fn check_link(&mut self, r: &RawRecord, file: usize, line: u64) -> Step {
        let Some(p) = &self.prev else { return self.check_start(r, file, line) };
        let expected = p.seq + 1;
        if r.seq == expected {
            if r.prev != p.hash {
                let detail = format!(
                    "the next record (seq {}) does not link to its hash: this record was rewritten and its hash recomputed, or the next one was",
                    r.seq
                );
                return Err(Finding { seq: Some(p.seq), file: self.files[p.file].clone(), line: p.line, problem: Problem::Edited, detail });
            }
            return Ok(());
        }
        let here = format!("{}:{line}", self.files[file].display());
        if r.seq < expected {
            let what = if r.seq == p.seq { "appears twice" } else { "comes after a later record" };
            let detail = format!("seq {} {what} (after seq {} at {here}): records were repeated or moved", r.seq, p.seq);
            return Err(Finding { seq: Some(r.seq), ..self.finding(file, line, Problem::Reordered, detail) });
        }
        if let Some((f, l)) = self.find_seq(expected, file, line).ok().flatten() {
            let detail = format!("seq {} is here where seq {expected} belongs; seq {expected} is at {}:{l}", r.seq, self.files[f].display());
            return Err(self.finding(file, line, Problem::Reordered, detail));
        }
        let missing = if r.seq - 1 == expected { format!("seq {expected} is") } else { format!("seqs {expected}..{} are", r.seq - 1) };
        if line == 1 && p.file != file {
            let detail = format!(
                "{} ends at seq {} but this file starts at seq {}: {missing} missing (the end of a file, or whole files, were removed)",
                self.files[p.file].display(),
                p.seq,
                r.seq
            );
            return Err(self.finding(file, line, Problem::Truncated, detail));
        }
        Err(self.finding(file, line, Problem::Deleted, format!("{missing} missing: seq {} follows seq {}", r.seq, p.seq)))
    }

    /// The first record: the genesis, or with `partial` wherever the kept files start.
    fn check_start(&mut self, r: &RawRecord, file: usize, line: u64) -> Step {
        let at = |problem, detail| Finding { seq: Some(r.seq), file: self.files[file].clone(), line, problem, detail };
        if r.seq == 1 {
            if r.prev != GENESIS {
                return Err(at(Problem::Edited, "seq 1 does not start from the genesis hash (all zeros)".into()));
            }
            self.last_checkpoint = Some(0);
            return Ok(());
        }
        if !self.opts.partial {
            let detail = format!(
                "the log starts at seq {} (in {}), not at 1: seqs 1..{} are missing (if older files were removed on purpose, check the rest with --partial)",
                r.seq,
                self.files[file].display(),
                r.seq - 1
            );
            return Err(Finding { seq: Some(1), ..at(Problem::Deleted, detail) });
        }
        self.report.warnings.push(format!("partial log: checked from seq {}; its link to the records before it is taken on trust", r.seq));
        Ok(())
    }

    /// Where seq `target` is, after `file:line` (the record that took its place): a record
    /// that turns up later was moved, one that never does was deleted.
    fn find_seq(&self, target: u64, file: usize, line: u64) -> io::Result<Option<(usize, u64)>> {
        for (i, path) in self.files.iter().enumerate().skip(file) {
            let mut reader = BufReader::new(File::open(path)?);
            let mut n = 0;
            while let Some(next) = files::read_line(&mut reader)? {
                n += 1;
                if i == file && n <= line {
                    continue;
                }
                if let Line::Text { bytes, .. } = next
                    && record::parse_line(&bytes).is_ok_and(|r| r.seq == target)
                {
                    return Ok(Some((i, n)));
                }
            }
        }
        Ok(None)
    }

    /// A checkpoint the outside witness also holds must be the same record.
    fn check_witness(&mut self, r: &RawRecord, file: usize, line: u64) -> Step {
        let Some(w) = self.opts.witness.get(&r.seq) else { return Ok(()) };
        if *w != r.hash {
            let detail = format!(
                "the witness holds checkpoint seq {} with hash {}, the log has {}: the log was rewritten at or before this record",
                r.seq,
                hex(w),
                hex(&r.hash)
            );
            return Err(Finding { seq: Some(r.seq), ..self.finding(file, line, Problem::Edited, detail) });
        }
        self.report.witnessed += 1;
        Ok(())
    }

    fn check_checkpoint(&mut self, r: &RawRecord, file: usize, line: u64) -> Step {
        let at = |problem, detail| Finding { seq: Some(r.seq), file: self.files[file].clone(), line, problem, detail };
        let c = Checkpoint::parse(r.body).map_err(|e| at(Problem::Edited, e))?;
        if c.key_id.is_empty() {
            self.report.unsigned += 1;
        } else {
            self.report.key_ids.insert(c.key_id.clone());
        }
        if !self.opts.keys.is_empty() {
            check_signature(&c, &r.hash, &self.opts.keys).map_err(|d| at(Problem::BadSignature, d))?;
        }
        let since = self.first_unsealed.map_or(0, |(s, _, _)| r.seq.saturating_sub(s));
        if self.last_checkpoint.is_some() && c.count != since {
            let problem = if c.count > since { Problem::Deleted } else { Problem::Edited };
            let detail = format!("the checkpoint seals {} records since the previous one, but {since} are there: the chain was rebuilt", c.count);
            return Err(at(problem, detail));
        }
        self.last_checkpoint = Some(r.seq);
        self.first_unsealed = None;
        self.report.checkpoints += 1;
        Ok(())
    }

    /// Counts the record and makes it the one the next must link to.
    fn advance(&mut self, r: &RawRecord, file: usize, line: u64) {
        if let Some(p) = &self.prev
            && r.ts < p.ts
        {
            self.warn(format!("seq {}: its time is {} ms before the previous record's (the clock was set back?)", r.seq, p.ts - r.ts));
        }
        self.report.records += 1;
        self.report.first_seq.get_or_insert(r.seq);
        self.report.last_seq = Some(r.seq);
        self.prev = Some(Prev { seq: r.seq, hash: r.hash, ts: r.ts, file, line });
    }

    fn warn(&mut self, w: String) {
        if self.report.warnings.len() < MAX_WARNINGS {
            self.report.warnings.push(w);
        } else if self.report.warnings.len() == MAX_WARNINGS {
            self.report.warnings.push("more warnings not shown".into());
        }
    }

    /// The log ends sealed, and no later than the witness says it got.
    fn check_end(&mut self) -> Step {
        let Some(p) = &self.prev else { return Ok(()) };
        if let Some((&w, _)) = self.opts.witness.range(p.seq + 1..).next() {
            let detail = format!("the witness holds checkpoint seq {w}, but the log ends at seq {}: its end was cut off", p.seq);
            return Err(Finding { seq: Some(p.seq + 1), file: self.files[p.file].clone(), line: p.line + 1, problem: Problem::Truncated, detail });
        }
        let Some((seq, file, line)) = self.first_unsealed else { return Ok(()) };
        let n = p.seq.saturating_sub(seq) + 1;
        let after = match self.last_checkpoint {
            Some(0) | None => "no checkpoint at all".to_owned(),
            Some(c) => format!("the last checkpoint (seq {c})"),
        };
        let detail = format!(
            "the tail is not sealed: {n} records after {after}. The log was cut back past a checkpoint, \
             or its writer is still running (see --allow-unsealed-tail) or crashed and has not restarted"
        );
        if self.opts.allow_unsealed_tail {
            self.report.warnings.push(detail);
            return Ok(());
        }
        Err(Finding { seq: Some(seq), file: self.files[file].clone(), line, problem: Problem::Truncated, detail })
    }
}

/// Verifies a checkpoint's Ed25519 signature with the given key it names.
fn check_signature(c: &Checkpoint, hash: &[u8; 32], keys: &[VerifyingKey]) -> Result<(), String> {
    if c.key_id.is_empty() {
        return Err("the checkpoint is not signed (its writer had no key)".into());
    }
    let Some(k) = keys.iter().find(|k| key::key_id(k) == c.key_id) else {
        let given: Vec<String> = keys.iter().map(key::key_id).collect();
        return Err(format!("signed with key {}, which is not a given public key ({}): a forged checkpoint", c.key_id, given.join(", ")));
    };
    let sig: [u8; 64] = record::unhex(c.sig.as_bytes()).and_then(|b| b.try_into().ok()).ok_or("the signature is not 64 bytes of hex")?;
    k.verify_strict(&signed_message(hash), &Signature::from_bytes(&sig))
        .map_err(|_| format!("the signature does not verify with key {}: a forged or altered checkpoint", c.key_id))
}

/// A note record, for people, and how many verdicts it says are missing.
fn describe_note(seq: u64, body: &[u8]) -> (String, u64) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if v["event"] == "gap" {
        return describe_gap(seq, &v);
    }
    if v["event"] != "recovered" {
        return (format!("seq {seq}: {v}"), 0);
    }
    let mut s = format!("seq {seq}: the writer restarted after an unclean stop (after seq {})", v["after_seq"]);
    if v["torn_bytes"].as_u64().is_some_and(|n| n > 0) {
        s += &format!("; it cut a torn last line of {} bytes from {}", v["torn_bytes"], v["torn_file"].as_str().unwrap_or("?"));
    }
    if v["unsealed"].as_u64().is_some_and(|n| n > 0) {
        s += &format!("; {} records before it had not been sealed by a checkpoint", v["unsealed"]);
    }
    (s, 0)
}

/// A gap record: verdicts the writer could not write (a full disk). Not a forgery: the chain
/// has no hole, and the gap is the writer's own statement, covered by the checkpoint after it.
fn describe_gap(seq: u64, v: &Value) -> (String, u64) {
    let lost = v["lost"].as_u64().unwrap_or(0);
    let after = v["after_seq"].as_u64().map_or("?".to_owned(), |a| a.to_string());
    let mut s = format!(
        "seq {seq}: {lost} record{} not written between seq {after} and seq {seq} ({}: {})",
        if lost == 1 { "" } else { "s" },
        v["reason"].as_str().unwrap_or("?"),
        v["error"].as_str().unwrap_or("?")
    );
    if let (Some(a), Some(b)) = (v["first_sequence"].as_u64(), v["last_sequence"].as_u64()) {
        s += &format!(", verdicts with metadata.sequence {a}..{b}");
    }
    if let (Some(a), Some(b)) = (v["first_ts"].as_u64(), v["last_ts"].as_u64()) {
        s += &format!(", from {} to {}", crate::time::utc(a), crate::time::utc(b));
    }
    s += "; the chain resumes with this signed gap record";
    (s, lost)
}

/// The files sorted by the seq their first record has (or their name says, when the first line
/// is unreadable), each once: the order they were given in does not matter.
fn chain_order(paths: &[PathBuf]) -> io::Result<Vec<PathBuf>> {
    let mut keyed = Vec::new();
    let mut seen = BTreeSet::new();
    for path in paths {
        if !seen.insert(std::fs::canonicalize(path)?) {
            continue;
        }
        keyed.push((first_seq(path)?.or_else(|| files::name_seq(path)).unwrap_or(u64::MAX), path.clone()));
    }
    keyed.sort_by_key(|(seq, _)| *seq);
    Ok(keyed.into_iter().map(|(_, p)| p).collect())
}

/// The seq of a file's first record, if its first line is one.
fn first_seq(path: &Path) -> io::Result<Option<u64>> {
    let mut reader = BufReader::new(File::open(path)?);
    Ok(match files::read_line(&mut reader)? {
        Some(Line::Text { bytes, .. }) => record::parse_line(&bytes).ok().map(|r| r.seq),
        _ => None,
    })
}

/// Reads a witness file: JSON lines holding the checkpoint records the daemon sent to its
/// sinks, either bare or as the value of one key of a wrapping object. Other lines are skipped
/// and counted.
pub fn read_witness(text: &str) -> (BTreeMap<u64, [u8; 32]>, usize) {
    let mut out = BTreeMap::new();
    let mut skipped = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        let found = std::iter::once(&v).chain(v.as_object().into_iter().flat_map(|m| m.values())).find_map(witness_entry);
        match found {
            Some((seq, h)) => {
                out.insert(seq, h);
            }
            None => skipped += 1,
        }
    }
    (out, skipped)
}

/// (seq, hash) of a checkpoint record given as JSON.
fn witness_entry(v: &Value) -> Option<(u64, [u8; 32])> {
    v.get("checkpoint")?;
    Some((v.get("seq")?.as_u64()?, record::unhex32(v.get("hash")?.as_str()?.as_bytes())?))
}

impl Report {
    /// Nothing wrong was found.
    pub fn intact(&self) -> bool {
        self.problem.is_none()
    }

    /// The one-line verdict: the summary, or the first bad record.
    pub fn headline(&self) -> String {
        if let Some(f) = &self.problem {
            let at = format!("{}:{}", f.file.display(), f.line);
            let at = f.seq.map_or(at.clone(), |s| format!("seq {s} ({at})"));
            return format!("first bad record: {at}: {}: {}", f.problem.name(), f.detail);
        }
        let range = match (self.first_seq, self.last_seq) {
            (Some(a), Some(b)) => format!("seq {a}..{b}"),
            _ => "no seq".into(),
        };
        let gaps = if self.lost > 0 { format!("; {} verdicts were not written (see the notes)", self.lost) } else { String::new() };
        format!("intact: {} records, {range}, {} checkpoints ({}), {} files{gaps}", self.records, self.checkpoints, self.signature_state(), self.files)
    }

    /// Whether signatures were checked, in words.
    fn signature_state(&self) -> String {
        let ids = self.key_ids.iter().cloned().collect::<Vec<_>>().join(", ");
        match (self.signatures_checked, self.unsigned) {
            // No checkpoint at all: nothing was signed, so nothing was verified.
            (true, _) if self.checkpoints == 0 => "0 signatures to verify: the log holds no checkpoint".into(),
            (true, _) => "signatures verified".into(),
            (false, 0) => format!("signatures NOT checked: no --pubkey; signed by key {ids}"),
            (false, n) => format!("signatures NOT checked: no --pubkey; {n} unsigned; key ids: {ids}"),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "intact": self.intact(),
            "files": self.files,
            "records": self.records,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "checkpoints": self.checkpoints,
            "unsigned_checkpoints": self.unsigned,
            "signatures_checked": self.signatures_checked,
            "key_ids": self.key_ids,
            "witnessed": self.witnessed,
            "notes": self.notes,
            "lost": self.lost,
            "warnings": self.warnings,
            "problem": self.problem.as_ref().map(|f| json!({
                "seq": f.seq,
                "file": f.file.display().to_string(),
                "line": f.line,
                "kind": f.problem.name(),
                "detail": f.detail,
            })),
        })
    }
}
