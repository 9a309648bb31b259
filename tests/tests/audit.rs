//! The tamper-evident verdict log through the real binary, no daemon: `audit keygen` makes the
//! key, `audit append` writes a multi-file log (twice: a restart), and `audit verify` must pass
//! it intact and name the first bad record of every damaged copy, with the right kind of damage.
use std::{
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use guard_tests::{TempDir, agent_bin, agent_cmd};
use serde_json::Value;

/// Runs `guard-agent ARGS...` with `stdin` as its standard input.
fn agent_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(agent_bin()).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run guard-agent");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!("exit {:?}\nstdout:\n{}\nstderr:\n{}", out.status.code(), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `n` verdict-like JSON lines, numbered from `from`.
fn verdicts(from: u64, n: u64) -> String {
    (from..from + n).map(|i| format!("{{\"class_uid\":1007,\"time\":{i},\"unmapped\":{{\"verdict\":\"killed\",\"argv\":[\"rm\",\"-rf\",\"/x{i}\"]}}}}\n")).collect()
}

/// Makes a key in `dir`; returns (key path, public key hex).
fn keygen(dir: &TempDir, name: &str) -> (String, String) {
    let key = dir.path(name).to_str().unwrap().to_owned();
    let out = agent_cmd(&["audit", "keygen", "--out", &key]);
    assert!(out.status.success(), "{}", text(&out));
    (key, String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

/// Appends `input` to the log in `log` (small files, a checkpoint every 8 records).
fn append(log: &Path, key: &str, input: &str) -> Output {
    let out = agent_with_stdin(&["audit", "append", "--dir", log.to_str().unwrap(), "--key", key, "--max-file-bytes", "1500", "--checkpoint-every", "8"], input);
    assert_ne!(out.status.code(), Some(101), "panicked: {}", text(&out));
    out
}

/// `audit verify --json ARGS...`: exit code and the report.
fn verify(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["audit", "verify", "--json"];
    all.extend_from_slice(args);
    let out = agent_cmd(&all);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("report is not JSON ({e}): {}", text(&out)));
    (out.status.code().unwrap_or(-1), report)
}

/// The problem's kind and first bad seq, asserting verification failed.
fn problem(code: i32, report: &Value) -> (String, u64) {
    assert_eq!(code, 1, "{report:#}");
    let p = &report["problem"];
    (p["kind"].as_str().unwrap().to_owned(), p["seq"].as_u64().unwrap_or(0))
}

/// Each log file and its lines, oldest first.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<String>)> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "log")).collect();
    names.sort();
    names.into_iter().map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap().lines().map(str::to_owned).collect())).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

fn record(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

fn seq(line: &str) -> u64 {
    record(line)["seq"].as_u64().unwrap()
}

/// A copy of the log in `src`, to damage.
fn copy(src: &Path, scratch: &TempDir, name: &str) -> PathBuf {
    let dst = scratch.path(name);
    std::fs::create_dir_all(&dst).unwrap();
    for (p, _) in files(src) {
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    dst
}

/// A log of 45 verdicts written by two runs (a restart), several files, and its key.
struct Fixture {
    dir: TempDir,
    log: PathBuf,
    key: String,
    public: String,
}

fn fixture(name: &str) -> Fixture {
    let dir = TempDir::new(name);
    let (key, public) = keygen(&dir, "audit.key");
    let log = dir.path("log");
    let first = append(&log, &key, &verdicts(1, 30));
    assert!(first.status.success(), "{}", text(&first));
    let second = append(&log, &key, &verdicts(31, 15));
    assert!(second.status.success(), "{}", text(&second));
    Fixture { dir, log, key, public }
}

impl Fixture {
    fn verify(&self, log: &Path) -> (i32, Value) {
        verify(&[log.to_str().unwrap(), "--pubkey", &self.public])
    }
}

#[test]
fn keygen_prints_the_public_key_and_never_replaces_a_key_unasked() {
    let dir = TempDir::new("audit-keygen");
    let (key, public) = keygen(&dir, "keys/audit.key");
    assert_eq!(public.len(), 64, "{public}");
    assert_eq!(std::fs::read_to_string(format!("{key}.pub")).unwrap().trim(), public);
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let again = agent_cmd(&["audit", "keygen", "--out", &key]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"), "{}", text(&again));
    assert_eq!(std::fs::read_to_string(format!("{key}.pub")).unwrap().trim(), public, "refused, yet replaced");
    let forced = agent_cmd(&["audit", "keygen", "--out", &key, "--force"]);
    assert!(forced.status.success(), "{}", text(&forced));
    assert_ne!(String::from_utf8_lossy(&forced.stdout).trim(), public);
}

#[test]
fn an_intact_multi_file_log_written_across_a_restart_verifies() {
    let f = fixture("audit-intact");
    let fs = files(&f.log);
    assert!(fs.len() >= 3, "expected several files, got {}", fs.len());
    // Every file ends sealed, and each one starts where the one before it ended.
    for pair in fs.windows(2) {
        let (last, next) = (record(pair[0].1.last().unwrap()), record(&pair[1].1[0]));
        assert!(last.get("checkpoint").is_some(), "{last}");
        assert_eq!(next["seq"].as_u64(), Some(last["seq"].as_u64().unwrap() + 1));
        assert_eq!(next["prev"], last["hash"]);
    }
    let (code, report) = f.verify(&f.log);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["first_seq"], 1);
    assert_eq!(report["records"], report["last_seq"]);
    assert!(report["records"].as_u64().unwrap() > 45, "45 verdicts and their checkpoints: {report}");
    assert_eq!(report["notes"], serde_json::json!([]), "a clean restart needs no note");

    // Files in any order; the text summary.
    let mut paths: Vec<String> = fs.iter().map(|(p, _)| p.to_str().unwrap().to_owned()).collect();
    paths.reverse();
    let mut args = vec!["audit", "verify", "--pubkey"];
    let pubfile = format!("{}.pub", f.key);
    args.push(&pubfile);
    args.extend(paths.iter().map(String::as_str));
    let out = agent_cmd(&args);
    assert!(out.status.success(), "{}", text(&out));
    let summary = String::from_utf8_lossy(&out.stdout);
    let expected = format!("intact: {} records, seq 1..{}, ", report["records"], report["last_seq"]);
    assert!(summary.starts_with(&expected) && summary.contains("(signatures verified)") && summary.contains(&format!(", {} files", fs.len())), "{summary}");

    // Without the public key it still passes, and says what it did not check.
    let out = agent_cmd(&["audit", "verify", f.log.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("signatures NOT checked"), "{}", text(&out));
}

#[test]
fn one_edited_byte_is_found() {
    let f = fixture("audit-edit");
    let log = copy(&f.log, &f.dir, "edited");
    let (path, mut lines) = files(&log).swap_remove(1);
    let i = lines.iter().position(|l| l.contains("\"verdict\":")).unwrap();
    let at = seq(&lines[i]);
    let edited = lines[i].replacen("/x", "/y", 1);
    assert_eq!(edited.len(), lines[i].len());
    lines[i] = edited;
    write_lines(&path, &lines);
    let (code, report) = f.verify(&log);
    assert_eq!(problem(code, &report), ("edited".into(), at), "{report:#}");

    // The text form names the record and where it is.
    let out = agent_cmd(&["audit", "verify", log.to_str().unwrap(), "--pubkey", &f.public]);
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_owned();
    let want = format!("first bad record: seq {at} ({}:{}): edited: ", path.display(), i + 1);
    assert!(line.starts_with(&want), "{line}\nwanted: {want}");
}

#[test]
fn a_deleted_record_is_found() {
    let f = fixture("audit-delete");
    let log = copy(&f.log, &f.dir, "deleted");
    let (path, mut lines) = files(&log).swap_remove(1);
    let gone = seq(&lines.remove(3));
    write_lines(&path, &lines);
    let (code, report) = f.verify(&log);
    assert_eq!(problem(code, &report), ("deleted".into(), gone), "{report:#}");
}

#[test]
fn two_swapped_records_are_found() {
    let f = fixture("audit-swap");
    let log = copy(&f.log, &f.dir, "swapped");
    let (path, mut lines) = files(&log).swap_remove(1);
    let first = seq(&lines[2]);
    lines.swap(2, 3);
    write_lines(&path, &lines);
    let (code, report) = f.verify(&log);
    assert_eq!(problem(code, &report), ("reordered".into(), first), "{report:#}");
}

#[test]
fn a_truncated_tail_is_found() {
    let f = fixture("audit-truncate");
    // The last three lines: the closing checkpoint goes with them.
    let log = copy(&f.log, &f.dir, "cut-lines");
    let all = files(&log);
    let (path, lines) = all.last().unwrap().clone();
    write_lines(&path, &lines[..lines.len() - 3]);
    let last_checkpoint = all.iter().flat_map(|(_, l)| l).filter(|l| l.contains("\"checkpoint\":") && seq(l) < seq(&lines[lines.len() - 3])).map(|l| seq(l)).max().unwrap();
    let (code, report) = f.verify(&log);
    assert_eq!(problem(code, &report), ("truncated".into(), last_checkpoint + 1), "{report:#}");
    assert!(report["problem"]["detail"].as_str().unwrap().contains("not sealed"), "{report:#}");

    // Half of the last line.
    let log = copy(&f.log, &f.dir, "cut-half");
    let (path, lines) = files(&log).pop().unwrap();
    let whole = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &whole[..whole.len() - lines.last().unwrap().len() / 2]).unwrap();
    let (code, report) = f.verify(&log);
    assert_eq!(problem(code, &report), ("truncated".into(), seq(lines.last().unwrap())), "{report:#}");

    // A whole file from the middle.
    let log = copy(&f.log, &f.dir, "cut-file");
    let (path, lines) = files(&log).swap_remove(1);
    std::fs::remove_file(path).unwrap();
    let (code, report) = f.verify(&log);
    assert_eq!(problem(code, &report), ("truncated".into(), seq(&lines[0])), "{report:#}");
}

#[test]
fn forged_checkpoints_are_found() {
    let f = fixture("audit-forge");
    // The same verdicts logged under another key: its checkpoint signatures are well-formed.
    let (other_key, _) = keygen(&f.dir, "other.key");
    let other_log = f.dir.path("other-log");
    assert!(append(&other_log, &other_key, &verdicts(1, 30)).status.success());
    let foreign_sig = record(files(&other_log).last().unwrap().1.last().unwrap())["checkpoint"]["sig"].as_str().unwrap().to_owned();

    for name in ["foreign-sig", "flipped-sig"] {
        let log = copy(&f.log, &f.dir, name);
        let (path, mut lines) = files(&log).pop().unwrap();
        let i = lines.len() - 1;
        let sig = record(&lines[i])["checkpoint"]["sig"].as_str().unwrap().to_owned();
        let forged = match name {
            "foreign-sig" => foreign_sig.clone(),
            _ => format!("{}{}", &sig[..sig.len() - 1], if sig.ends_with('0') { '1' } else { '0' }),
        };
        lines[i] = lines[i].replace(&sig, &forged);
        assert_ne!(lines[i], files(&f.log).pop().unwrap().1[i], "{name}: nothing was changed");
        write_lines(&path, &lines);
        let (code, report) = f.verify(&log);
        assert_eq!(problem(code, &report), ("bad signature".into(), seq(&lines[i])), "{name}: {report:#}");
    }

    // The log cut back and re-sealed by someone holding another key.
    let log = copy(&f.log, &f.dir, "resealed");
    let (path, lines) = files(&log).pop().unwrap();
    write_lines(&path, &lines[..lines.len() - 1]);
    assert!(append(&log, &other_key, &verdicts(100, 1)).status.success());
    let (code, report) = f.verify(&log);
    let (kind, _) = problem(code, &report);
    assert_eq!(kind, "bad signature", "{report:#}");
    assert!(report["problem"]["detail"].as_str().unwrap().contains("not a given public key"), "{report:#}");
}

#[test]
fn a_torn_line_from_a_crash_is_cut_noted_and_the_chain_goes_on() {
    let f = fixture("audit-torn");
    let (path, lines) = files(&f.log).pop().unwrap();
    let whole = std::fs::read_to_string(&path).unwrap();
    // The writer died writing its closing checkpoint.
    std::fs::write(&path, &whole[..whole.len() - lines.last().unwrap().len() / 2]).unwrap();
    let out = append(&f.log, &f.key, &verdicts(50, 2));
    assert!(out.status.success(), "{}", text(&out));
    let (code, report) = f.verify(&f.log);
    assert_eq!(code, 0, "{report:#}");
    let notes = report["notes"].to_string();
    assert!(notes.contains("torn last line") && notes.contains("not been sealed"), "{report:#}");
}

#[test]
fn bad_input_is_a_clear_error_never_a_panic() {
    let dir = TempDir::new("audit-garbage");
    let cases: [(&str, &[u8], &str); 5] = [
        ("garbage.log", b"this is not a log\n", "not a record"),
        ("notjson.log", b"{\"seq\":1,\"ts\":2,\"prev\":\"x\"}\n", "not a record"),
        ("empty.log", b"", "empty"),
        ("binary.log", b"\x00\xff\xfe\x01\n\n", "not a record"),
        ("half.log", b"{\"seq\":1,\"ts\":", "middle of a record"),
    ];
    for (name, data, says) in cases {
        let p = dir.path(name);
        std::fs::write(&p, data).unwrap();
        let out = agent_cmd(&["audit", "verify", p.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("first bad record: ") && stdout.contains(says), "{name}: {}", text(&out));
    }
    for args in [&["audit", "verify", "/nonexistent/guard-audit"][..], &["audit", "verify", dir.0.to_str().unwrap()], &["audit", "verify", "x.log", "--pubkey", "zz"]] {
        let out = agent_cmd(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("error: "), "{args:?}: {}", text(&out));
    }

    // A line that is not JSON stops `append`; what came before it is appended and sealed.
    let (key, public) = keygen(&dir, "audit.key");
    let log = dir.path("log");
    let out = append(&log, &key, "{\"a\":1}\n{\"a\":2}\nnot json\n{\"a\":3}\n");
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stdin line 3 is not JSON"), "{}", text(&out));
    let (code, report) = verify(&[log.to_str().unwrap(), "--pubkey", &public]);
    assert_eq!((code, report["records"].as_u64()), (0, Some(3)), "two verdicts and a checkpoint: {report:#}");
}
