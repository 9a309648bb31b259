//! Unit tests of `spool`.
use super::*;

/// A scratch directory, removed on drop (a failed test too).
struct Dir(PathBuf);

impl std::ops::Deref for Dir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Dir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(name: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("guard-spool-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    Dir(d)
}

fn take(r: &mut Reader, n: usize) -> Vec<String> {
    let b = r.next_batch(n, 1 << 20, Duration::ZERO).unwrap();
    let lines = b.records.iter().map(|r| r.line.clone()).collect();
    let len = b.records.len();
    r.ack(&b, len);
    lines
}

#[test]
fn records_come_out_in_order_across_segments_and_restarts() {
    let d = dir("order");
    let (mut w, mut r) = open(&d, 1 << 20).unwrap();
    for i in 0..3000 {
        w.append(&format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(100))).unwrap();
        if i % 100 == 99 {
            w.commit().unwrap();
        }
    }
    assert!(std::fs::read_dir(&d).unwrap().count() > 3, "several segments");
    // A batch never spans two segments.
    let mut first = take(&mut r, 1000);
    assert!(first.len() < 1000);
    while first.len() < 1000 {
        let more = take(&mut r, 1000 - first.len());
        first.extend(more);
    }
    assert!(first[0].starts_with("{\"n\":0,") && first[999].starts_with("{\"n\":999,"));
    assert_eq!(w.snapshot().backlog, 2000);
    // A restart (and a torn last line, as if the daemon died mid-write) resumes after 999.
    drop((w, r));
    let last = std::fs::read_dir(&d).unwrap().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "seg")).max().unwrap();
    OpenOptions::new().append(true).open(&last).unwrap().write_all(b"{\"torn\":").unwrap();
    let (mut w, mut r) = open(&d, 1 << 20).unwrap();
    assert_eq!(w.snapshot().backlog, 2000);
    w.append("{\"n\":\"after\"}").unwrap();
    w.commit().unwrap();
    let mut rest = Vec::new();
    while rest.len() < 2001 {
        let more = take(&mut r, 700);
        rest.extend(more);
    }
    assert!(rest[0].starts_with("{\"n\":1000,"));
    assert!(rest[1999].starts_with("{\"n\":2999,"));
    assert_eq!(rest[2000], "{\"n\":\"after\"}");
    assert_eq!(w.snapshot().backlog, 0);
    // Delivered segments are deleted; only the head is left.
    let segs = std::fs::read_dir(&d).unwrap().flatten().filter(|e| e.path().extension().is_some_and(|x| x == "seg")).count();
    assert_eq!(segs, 1);
    let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn a_full_spool_drops_the_oldest_and_counts_them() {
    let d = dir("bound");
    let (mut w, mut r) = open(&d, 1 << 20).unwrap();
    let line = format!("{{\"pad\":\"{}\"}}", "y".repeat(1000));
    for i in 0..3000 {
        w.append(&format!("{{\"n\":{i}}}{line}")).unwrap();
        if i % 50 == 49 {
            w.commit().unwrap();
        }
    }
    let s = w.snapshot();
    assert!(s.dropped > 0, "{s:?}");
    assert_eq!(s.dropped + s.backlog, 3000, "{s:?}");
    let on_disk: u64 = std::fs::read_dir(&d).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum();
    assert!(on_disk <= (1 << 20) + 4096, "{on_disk}");
    // What is left is the newest, in order.
    let mut got = Vec::new();
    while (got.len() as u64) < s.backlog {
        got.extend(take(&mut r, 500));
    }
    let first: u64 = got[0][5..got[0].find('}').unwrap()].parse().unwrap();
    assert_eq!(first, s.dropped);
    assert!(got.last().unwrap().starts_with("{\"n\":2999}"));
}

#[test]
fn a_batch_in_flight_when_its_segment_is_dropped_is_not_counted_twice() {
    let d = dir("inflight");
    let (mut w, mut r) = open(&d, 1 << 20).unwrap();
    let pad = "z".repeat(2000);
    for _ in 0..40 {
        w.append(&format!("{{\"p\":\"{pad}\"}}")).unwrap();
    }
    w.commit().unwrap();
    let b = r.next_batch(10, 1 << 20, Duration::ZERO).unwrap();
    for _ in 0..2000 {
        w.append(&format!("{{\"p\":\"{pad}\"}}")).unwrap();
        w.commit().unwrap();
    }
    let before = w.snapshot();
    assert!(before.dropped >= 40, "{before:?}");
    r.ack(&b, 10);
    let after = w.snapshot();
    assert_eq!(after.dropped, before.dropped - 10);
    assert_eq!(after.backlog, before.backlog);
}

#[test]
fn shutdown_wakes_a_waiting_sender_and_never_waits_past_the_deadline() {
    let d = dir("stop");
    let (mut w, mut r) = open(&d, 1 << 20).unwrap();
    let t = std::thread::spawn(move || {
        assert!(r.next_batch(10, 1 << 20, Duration::from_secs(60)).is_none());
    });
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    w.close(Instant::now() + Duration::from_secs(5));
    t.join().unwrap();
    assert!(start.elapsed() < Duration::from_secs(2));
    // A sender that never finishes: close returns at the deadline.
    let d2 = dir("stop2");
    let (mut w2, r2) = open(&d2, 1 << 20).unwrap();
    let start = Instant::now();
    w2.close(Instant::now() + Duration::from_millis(200));
    assert!(start.elapsed() >= Duration::from_millis(200) && start.elapsed() < Duration::from_secs(2));
    drop(r2);
}

#[test]
fn records_keep_their_bytes_through_a_reused_read_buffer() {
    let d = dir("bytes");
    let (mut w, mut r) = open(&d, 1 << 20).unwrap();
    // A long record, then short ones read into the same (larger) buffer; a raw newline
    // becomes a space; a record longer than the batch's byte limit still comes out whole.
    let long = format!("{{\"pad\":\"{}\"}}", "y".repeat(5000));
    for line in [long.as_str(), "{\"a\":1}", "{\"b\":\n2}", "{\"é\":\"ü\"}"] {
        w.append(line).unwrap();
    }
    w.commit().unwrap();
    assert_eq!(take(&mut r, 1), [long.clone()]);
    assert_eq!(take(&mut r, 10), ["{\"a\":1}", "{\"b\": 2}", "{\"é\":\"ü\"}"]);
    w.append(&long).unwrap();
    w.append("{\"c\":3}").unwrap();
    w.commit().unwrap();
    // (The read that finds the long record's end may find more whole records after it.)
    let b = r.next_batch(10, 100, Duration::ZERO).unwrap();
    assert_eq!(b.records[0].line, long);
    r.ack(&b, 1);
    assert_eq!(take(&mut r, 10), ["{\"c\":3}"]);
    // A damaged byte on disk (not the daemon's UTF-8) is replaced, not fatal.
    drop((w, r));
    let seg = std::fs::read_dir(&d).unwrap().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "seg")).max().unwrap();
    OpenOptions::new().append(true).open(&seg).unwrap().write_all(b"{\"d\":\"\xff\"}\n").unwrap();
    let (_w, mut r) = open(&d, 1 << 20).unwrap();
    assert_eq!(take(&mut r, 10), ["{\"d\":\"\u{fffd}\"}"]);
}

/// Marks come back with their line, across a restart; unmarked lines (and marks of another form)
/// come back without; a raw 0x1f in a line cannot pass for marks.
#[test]
fn marks_are_kept_beside_their_line() {
    use crate::verdict::Mark;
    let d = dir("marks");
    let mut m = Marks::default();
    m.set(Mark::Time, (8, 21));
    m.set_len(23);
    {
        let (mut w, _r) = open(&d, 1 << 20).unwrap();
        w.append_marked("{\"a\":1,\"time\":1700000000123}", Some(&m)).unwrap();
        w.append("{\"a\":2}").unwrap();
        w.append("{\"a\":\"x\u{1f}m1,0,,,,,,,,\"}").unwrap();
        w.commit().unwrap();
    }
    let seg = std::fs::read_dir(&d).unwrap().flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|x| x == "seg")).unwrap();
    OpenOptions::new().append(true).open(&seg).unwrap().write_all(b"{\"a\":4}\x1fm9,whatever\n").unwrap();
    let (_w, mut r) = open(&d, 1 << 20).unwrap();
    let b = r.next_batch(10, 1 << 20, Duration::ZERO).unwrap();
    let got: Vec<(&str, Option<Marks>)> = b.records.iter().map(|r| (r.line.as_str(), r.marks)).collect();
    assert_eq!(got, [("{\"a\":1,\"time\":1700000000123}", Some(m)), ("{\"a\":2}", None), ("{\"a\":\"x m1,0,,,,,,,,\"}", None), ("{\"a\":4}", None)]);
}
