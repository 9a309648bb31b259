//! The writer and the verifier together: logs written through `Log`, damaged the way an
//! attacker or a crash would, and what `verify` says about them.
use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

use super::{Log, LogOptions, Report, VerifyOptions, log_files, verify, verify::Problem};

/// A scratch log directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!("guard-audit-unit-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let _ = fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn verdict(i: u64) -> Value {
    json!({ "class_uid": 1007, "time": 1_700_000_000_000u64 + i, "unmapped": { "verdict": "killed", "n": i, "argv": ["rm", "-rf", format!("/x{i}")] } })
}

/// `n` verdicts in small files (several per log), closed.
fn write_log(dir: &Path, n: u64) -> Vec<Value> {
    let opts = LogOptions { max_file_bytes: 1500, checkpoint_every: 7, checkpoint_interval: Duration::from_secs(3600) };
    let mut log = Log::open(dir, Some(key(1)), opts).unwrap();
    for i in 0..n {
        log.append(&verdict(i)).unwrap();
    }
    let mut cps = log.take_checkpoints();
    cps.extend(log.close().unwrap());
    cps
}

fn check(dir: &Path) -> Report {
    check_with(dir, &VerifyOptions { keys: vec![key(1).verifying_key()], ..VerifyOptions::default() })
}

fn check_with(dir: &Path, opts: &VerifyOptions) -> Report {
    let mut files = log_files(dir).unwrap();
    files.reverse();
    verify(&files, opts).unwrap()
}

/// All lines of all files, as (file, lines).
fn lines(dir: &Path) -> Vec<(PathBuf, Vec<String>)> {
    log_files(dir).unwrap().into_iter().map(|f| (f.clone(), fs::read_to_string(&f).unwrap().lines().map(str::to_owned).collect())).collect()
}

fn write_lines(file: &Path, lines: &[String]) {
    fs::write(file, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<Value>(line).unwrap()["seq"].as_u64().unwrap()
}

/// The problem and the first bad seq.
fn problem(r: &Report) -> (Problem, Option<u64>) {
    let f = r.problem.as_ref().unwrap_or_else(|| panic!("expected a problem, got {}", r.headline()));
    (f.problem, f.seq)
}

#[test]
fn an_intact_multi_file_log_verifies_in_any_file_order() {
    let d = Dir::new();
    let cps = write_log(&d.0, 40);
    let r = check(&d.0);
    assert!(r.intact(), "{}", r.headline());
    assert!(r.files >= 3, "{}", r.headline());
    assert_eq!(r.first_seq, Some(1));
    assert_eq!(r.records, r.last_seq.unwrap());
    assert_eq!(r.checkpoints as usize, cps.len());
    assert!(r.headline().starts_with("intact: "), "{}", r.headline());
    assert!(r.headline().contains("signatures verified"));
    // Every file ends sealed, and the next starts where it ended.
    for (_, ls) in lines(&d.0) {
        assert!(ls.last().unwrap().contains("\"checkpoint\":"), "{ls:?}");
    }
    let unchecked = check_with(&d.0, &VerifyOptions::default());
    assert!(unchecked.intact() && unchecked.headline().contains("NOT checked"), "{}", unchecked.headline());
}

#[test]
fn a_restart_continues_the_chain_without_a_note() {
    let d = Dir::new();
    write_log(&d.0, 10);
    let before = lines(&d.0).last().unwrap().1.last().unwrap().clone();
    write_log(&d.0, 10);
    let r = check(&d.0);
    assert!(r.intact(), "{}", r.headline());
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    let all: Vec<String> = lines(&d.0).into_iter().flat_map(|(_, l)| l).collect();
    let i = all.iter().position(|l| *l == before).unwrap();
    let next: Value = serde_json::from_str(&all[i + 1]).unwrap();
    assert_eq!(next["seq"].as_u64(), Some(seq_of(&before) + 1));
    assert_eq!(next["prev"], serde_json::from_str::<Value>(&before).unwrap()["hash"]);
}

#[test]
fn verdicts_a_full_disk_kept_out_are_stated_in_a_signed_gap_record_not_reported_as_damage() {
    let d = Dir::new();
    let opts = LogOptions { max_file_bytes: 1 << 20, checkpoint_every: 4, checkpoint_interval: Duration::from_secs(3600) };
    let mut log = Log::open(&d.0, Some(key(1)), opts).unwrap();
    for i in 0..5 {
        log.append(&verdict(i)).unwrap();
    }
    // Five verdicts and the checkpoint after the fourth.
    let last_written = log.next_seq() - 1;
    assert_eq!(last_written, 6);
    // Writes fail with ENOSPC, and the partial line cannot even be cut (a device).
    let real = log.swap_file(fs::OpenOptions::new().append(true).open("/dev/full").unwrap());
    for i in 5..8 {
        let mut v = verdict(i);
        v["metadata"] = json!({ "sequence": 100 + i });
        assert!(log.append(&v).is_err());
    }
    assert!(log.tick(Instant::now() + Duration::from_secs(2)).is_err(), "still full: the gap cannot be recorded");
    let s = log.stats().clone();
    assert_eq!((s.lost, s.unrecorded, s.gaps, s.write_failures), (3, 3, 0, 4), "{s:?}");
    assert!(s.error.as_deref().is_some_and(|e| e.contains("No space left on device")), "{s:?}");
    // Space again: the gap record and its seal, then the verdict.
    log.swap_file(real);
    assert_eq!(log.append(&verdict(8)).unwrap(), last_written + 3);
    let s = log.stats().clone();
    assert_eq!((s.lost, s.unrecorded, s.gaps, s.error), (3, 0, 1, None));
    log.close().unwrap();

    let r = check(&d.0);
    assert!(r.intact(), "{}", r.headline());
    assert_eq!((r.lost, r.notes.len()), (3, 1), "{:?}", r.notes);
    let note = &r.notes[0];
    let expect = format!("seq 7: 3 records not written between seq {last_written} and seq 7 (write failures: No space left on device");
    assert!(note.starts_with(&expect), "{note}");
    assert!(note.contains("verdicts with metadata.sequence 105..107") && note.ends_with("the chain resumes with this signed gap record"), "{note}");
    assert!(r.headline().contains("3 verdicts were not written (see the notes)"), "{}", r.headline());
    // The gap record is sealed at once, and covered like any record: changing it is an edit.
    let (file, mut ls) = lines(&d.0).swap_remove(0);
    let i = ls.iter().position(|l| l.contains("\"event\":\"gap\"")).unwrap();
    assert!(ls[i + 1].contains("\"reason\":\"gap\""), "{}", ls[i + 1]);
    ls[i] = ls[i].replacen("\"lost\":3", "\"lost\":2", 1);
    write_lines(&file, &ls);
    assert_eq!(problem(&check(&d.0)), (Problem::Edited, Some(7)));
}

#[test]
fn one_edited_byte_is_found_at_its_record() {
    let d = Dir::new();
    write_log(&d.0, 30);
    let (file, mut ls) = lines(&d.0).swap_remove(1);
    let i = ls.iter().position(|l| l.contains("\"verdict\":")).unwrap();
    let seq = seq_of(&ls[i]);
    ls[i] = ls[i].replacen("\"rm\"", "\"rn\"", 1);
    write_lines(&file, &ls);
    let r = check(&d.0);
    assert_eq!(problem(&r), (Problem::Edited, Some(seq)), "{}", r.headline());
}

#[test]
fn a_deleted_record_is_found() {
    let d = Dir::new();
    write_log(&d.0, 30);
    let (file, mut ls) = lines(&d.0).swap_remove(1);
    let seq = seq_of(&ls.remove(2));
    write_lines(&file, &ls);
    let r = check(&d.0);
    assert_eq!(problem(&r), (Problem::Deleted, Some(seq)), "{}", r.headline());
}

#[test]
fn two_swapped_records_are_found() {
    let d = Dir::new();
    write_log(&d.0, 30);
    let (file, mut ls) = lines(&d.0).swap_remove(1);
    let seq = seq_of(&ls[2]);
    ls.swap(2, 3);
    write_lines(&file, &ls);
    let r = check(&d.0);
    assert_eq!(problem(&r), (Problem::Reordered, Some(seq)), "{}", r.headline());
}

#[test]
fn a_cut_tail_is_found_whole_lines_or_half_a_line() {
    let d = Dir::new();
    write_log(&d.0, 30);
    let all = lines(&d.0);
    let (file, ls) = all.last().unwrap().clone();
    // The last checkpoint and the record before it: the rest is unsealed.
    write_lines(&file, &ls[..ls.len() - 2]);
    let last_cp = ls[..ls.len() - 2].iter().rev().chain(all[all.len() - 2].1.iter().rev()).find(|l| l.contains("\"checkpoint\":")).map(|l| seq_of(l)).unwrap();
    let r = check(&d.0);
    assert_eq!(problem(&r), (Problem::Truncated, Some(last_cp + 1)), "{}", r.headline());
    assert!(r.headline().contains("not sealed"), "{}", r.headline());

    let text = fs::read_to_string(&file).unwrap();
    fs::write(&file, &text[..text.len() - 20]).unwrap();
    let r = check(&d.0);
    assert_eq!(problem(&r).0, Problem::Truncated, "{}", r.headline());
    assert!(r.headline().contains("middle of a record"), "{}", r.headline());
}

#[test]
fn a_missing_middle_file_is_a_truncation() {
    let d = Dir::new();
    write_log(&d.0, 40);
    let files = log_files(&d.0).unwrap();
    let gone = fs::read_to_string(&files[1]).unwrap();
    fs::remove_file(&files[1]).unwrap();
    let r = check(&d.0);
    assert_eq!(problem(&r), (Problem::Truncated, Some(seq_of(gone.lines().next().unwrap()))), "{}", r.headline());
}

#[test]
fn forged_checkpoints_are_bad_signatures() {
    let d = Dir::new();
    write_log(&d.0, 12);
    let (file, ls) = lines(&d.0).pop().unwrap();
    let i = ls.iter().rposition(|l| l.contains("\"checkpoint\":")).unwrap();
    let sig = serde_json::from_str::<Value>(&ls[i]).unwrap()["checkpoint"]["sig"].as_str().unwrap().to_owned();
    // One flipped hex digit.
    let mut flipped = ls.clone();
    let last = sig.chars().last().unwrap();
    let other = if last == '0' { '1' } else { '0' };
    flipped[i] = ls[i].replace(&sig, &format!("{}{other}", &sig[..sig.len() - 1]));
    write_lines(&file, &flipped);
    let r = check(&d.0);
    assert_eq!(problem(&r), (Problem::BadSignature, Some(seq_of(&ls[i]))), "{}", r.headline());
    // Without the public key, that cannot be seen.
    assert!(check_with(&d.0, &VerifyOptions::default()).intact());

    // A whole log re-sealed by someone else's key.
    write_lines(&file, &ls[..i]);
    let mut forger = Log::open(&d.0, Some(key(2)), LogOptions::default()).unwrap();
    forger.append(&verdict(99)).unwrap();
    forger.close().unwrap();
    let r = check(&d.0);
    let (p, _) = problem(&r);
    assert_eq!(p, Problem::BadSignature, "{}", r.headline());
    assert!(r.headline().contains("not a given public key"), "{}", r.headline());
}

#[test]
fn a_torn_last_line_is_cut_and_noted_and_the_log_verifies() {
    let d = Dir::new();
    let opts = LogOptions { checkpoint_every: 0, ..LogOptions::default() };
    let mut log = Log::open(&d.0, Some(key(1)), opts.clone()).unwrap();
    for i in 0..5 {
        log.append(&verdict(i)).unwrap();
    }
    log.close().unwrap();
    // As if the writer had crashed writing seq 6 instead of sealing: half a line at the end.
    let file = log_files(&d.0).unwrap().pop().unwrap();
    let text = fs::read_to_string(&file).unwrap();
    let sealed_at = text.trim_end().rfind('\n').unwrap() + 1;
    fs::write(&file, format!("{}{{\"seq\":6,\"ts\":1,\"pr", &text[..sealed_at])).unwrap();

    let mut log = Log::open(&d.0, Some(key(1)), opts).unwrap();
    assert_eq!(log.next_seq(), 7, "records 1..5 and the recovery note");
    log.append(&verdict(6)).unwrap();
    let cps = log.close().unwrap();
    assert_eq!(cps.len(), 1);
    assert_eq!(cps[0]["checkpoint"]["count"], 7, "{}", cps[0]);
    let r = check(&d.0);
    assert!(r.intact(), "{}", r.headline());
    assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
    assert!(r.notes[0].contains("torn last line of 19 bytes") && r.notes[0].contains("5 records"), "{:?}", r.notes);
}

#[test]
fn a_second_writer_is_refused() {
    let d = Dir::new();
    let _log = Log::open(&d.0, None, LogOptions::default()).unwrap();
    let e = Log::open(&d.0, None, LogOptions::default()).err().unwrap();
    assert!(e.to_string().contains("another writer"), "{e}");
}

#[test]
fn a_corrupt_last_record_stops_the_writer() {
    let d = Dir::new();
    write_log(&d.0, 3);
    let file = log_files(&d.0).unwrap().pop().unwrap();
    let text = fs::read_to_string(&file).unwrap().replacen("\"checkpoint\":{\"count\":3", "\"checkpoint\":{\"count\":4", 1);
    fs::write(&file, text).unwrap();
    let e = Log::open(&d.0, Some(key(1)), LogOptions::default()).err().unwrap();
    assert!(e.to_string().contains("refusing to continue"), "{e}");
}

#[test]
fn ticks_seal_after_the_interval_only_when_something_is_unsealed() {
    let d = Dir::new();
    let opts = LogOptions { checkpoint_every: 0, checkpoint_interval: Duration::from_secs(10), ..LogOptions::default() };
    let mut log = Log::open(&d.0, None, opts).unwrap();
    let later = Instant::now() + Duration::from_secs(11);
    assert!(!log.tick(later).unwrap(), "nothing to seal");
    log.append(&verdict(1)).unwrap();
    assert!(!log.tick(Instant::now()).unwrap());
    assert!(log.tick(later).unwrap());
    assert_eq!(log.take_checkpoints()[0]["checkpoint"]["reason"], "interval");
    log.close().unwrap();
    let r = check_with(&d.0, &VerifyOptions::default());
    assert!(r.intact() && r.unsigned == 1, "{}", r.headline());
    let r = check(&d.0);
    assert_eq!(problem(&r).0, Problem::BadSignature, "unsigned, yet a key was given: {}", r.headline());
}

#[test]
fn a_witness_shows_a_cut_back_to_a_checkpoint() {
    let d = Dir::new();
    let cps = write_log(&d.0, 30);
    let witness = cps.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("\n");
    let (entries, skipped) = super::read_witness(&format!("{witness}\nnot json\n"));
    assert_eq!((entries.len(), skipped), (cps.len(), 1));
    let opts = VerifyOptions { keys: vec![key(1).verifying_key()], witness: entries, ..VerifyOptions::default() };
    assert!(check_with(&d.0, &opts).intact());
    // Cut the log back to its last checkpoint but one: sealed, and looks whole without the witness.
    let mut files = lines(&d.0);
    let cut = cps[cps.len() - 2]["seq"].as_u64().unwrap();
    while !files.last().unwrap().1.iter().any(|l| seq_of(l) == cut) {
        fs::remove_file(files.pop().unwrap().0).unwrap();
    }
    let (file, ls) = files.pop().unwrap();
    let keep: Vec<String> = ls.into_iter().filter(|l| seq_of(l) <= cut).collect();
    write_lines(&file, &keep);
    assert!(check(&d.0).intact());
    let r = check_with(&d.0, &opts);
    assert_eq!(problem(&r).0, Problem::Truncated, "{}", r.headline());
}

#[test]
fn garbage_and_empty_files_are_reported_not_panicked_on() {
    let d = Dir::new();
    fs::create_dir_all(&d.0).unwrap();
    let cases: [(&str, &[u8]); 5] = [
        ("garbage.log", b"hello world\n"),
        ("nonl.log", b"no newline at all"),
        ("json.log", b"{\"seq\":1,\"ts\":2}\n"),
        ("empty.log", b""),
        ("binary.log", b"\x00\xff\xfe{\n\n"),
    ];
    for (name, data) in cases {
        let p = d.0.join(name);
        fs::write(&p, data).unwrap();
        let r = verify(&[p], &VerifyOptions::default()).unwrap();
        let f = r.problem.as_ref().unwrap_or_else(|| panic!("{name}: {}", r.headline()));
        assert!(matches!(f.problem, Problem::Edited | Problem::Truncated), "{name}: {}", r.headline());
    }
}

#[test]
fn a_log_missing_its_oldest_file_needs_partial_and_an_open_tail_needs_allow_unsealed() {
    let d = Dir::new();
    write_log(&d.0, 40);
    fs::remove_file(&log_files(&d.0).unwrap()[0]).unwrap();
    let r = check(&d.0);
    assert_eq!(problem(&r), (Problem::Deleted, Some(1)), "{}", r.headline());
    let partial = VerifyOptions { keys: vec![key(1).verifying_key()], partial: true, ..VerifyOptions::default() };
    let r = check_with(&d.0, &partial);
    assert!(r.intact() && !r.warnings.is_empty(), "{} {:?}", r.headline(), r.warnings);

    let (file, ls) = lines(&d.0).pop().unwrap();
    write_lines(&file, &ls[..ls.len() - 1]);
    let open = VerifyOptions { allow_unsealed_tail: true, ..partial };
    let r = check_with(&d.0, &open);
    assert!(r.intact() && r.warnings.iter().any(|w| w.contains("not sealed")), "{} {:?}", r.headline(), r.warnings);
    // A line being written as the log is read.
    let mut text = fs::read_to_string(&file).unwrap();
    text.push_str("{\"seq\":");
    fs::write(&file, text).unwrap();
    let r = check_with(&d.0, &open);
    assert!(r.intact() && r.warnings.iter().any(|w| w.contains("incomplete")), "{} {:?}", r.headline(), r.warnings);
}

#[test]
fn a_file_given_twice_is_read_once_and_a_copied_file_is_a_repeat() {
    let d = Dir::new();
    write_log(&d.0, 20);
    let mut files = log_files(&d.0).unwrap();
    files.push(files[0].clone());
    let r = verify(&files, &VerifyOptions::default()).unwrap();
    assert!(r.intact(), "{}", r.headline());
    let copy = d.0.join("copy.log");
    fs::copy(&files[1], &copy).unwrap();
    files.push(copy);
    let r = verify(&files, &VerifyOptions::default()).unwrap();
    assert_eq!(problem(&r).0, Problem::Reordered, "{}", r.headline());
}

#[test]
fn random_damage_never_panics_and_changed_bytes_are_always_found() {
    let d = Dir::new();
    write_log(&d.0, 30);
    let pristine: Vec<(PathBuf, Vec<u8>)> = log_files(&d.0).unwrap().into_iter().map(|f| (f.clone(), fs::read(&f).unwrap())).collect();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rand = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    for round in 0..90 {
        for (f, data) in &pristine {
            fs::write(f, data).unwrap();
        }
        let (f, data) = &pristine[rand(pristine.len())];
        let mut bytes = data.clone();
        let what = round % 3;
        match what {
            0 => {
                let i = rand(bytes.len());
                bytes[i] = bytes[i].wrapping_add(1 + rand(255) as u8);
            }
            1 => bytes.truncate(rand(bytes.len())),
            _ => {
                let i = rand(bytes.len());
                let piece = bytes[rand(bytes.len())..].iter().take(rand(200)).copied().collect::<Vec<u8>>();
                bytes.splice(i..i, piece);
            }
        }
        fs::write(f, &bytes).unwrap();
        // A changed signature byte needs the key to be seen; elsewhere, keys only slow a debug
        // build down.
        if what == 0 {
            assert!(!check(&d.0).intact(), "round {round}: a changed byte went unnoticed");
        } else {
            check_with(&d.0, &VerifyOptions::default());
        }
    }
}
