//! The JSON-lines file sink, with rename-based rotation a log shipper (Filebeat, Vector, Fluent
//! Bit) can follow without loss: when the file reaches `rotate_bytes` or `rotate_age`, it is
//! renamed `PATH.1` (older ones shift to `.2`, `.3`, ...; beyond `keep` they are deleted) and a
//! new `PATH` is started. A shipper that tracks files by inode reads the renamed file to its
//! end. A file renamed or removed by someone else (logrotate) is noticed at the next burst and
//! a new one started; SIGHUP reopens too.
//!
//! Lines are buffered and written once per burst (or every [`WRITE_BUFFER`] bytes). A write
//! that fails (a full disk) is cut back to the last whole line, so the file never holds half a
//! verdict that the next line would run into; the lines of that write are counted as lost
//! ([`Counts`]), and the next burst tries again on a freshly opened file.
use std::{
    fs::{File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::SystemTime,
};

use crate::config::Rotation;

/// Buffered lines are written out at this size even before the burst ends.
const WRITE_BUFFER: usize = 256 << 10;

/// What a file sink wrote and lost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Lines written.
    pub written: u64,
    /// Lines lost: their write failed (or the file could not be opened).
    pub lost: u64,
    /// Writes, opens and rotations that failed.
    pub write_errors: u64,
    /// The error of the current run of failures; `None` while writing works.
    pub error: Option<String>,
}

pub struct FileSink {
    path: PathBuf,
    rotation: Rotation,
    /// `None` after a failure: reopened at the next write.
    writer: Option<Open>,
    /// Whether this burst has made sure the open file is still the one at `path`.
    checked: bool,
    /// Lines not yet written, each with its newline, and how many.
    buf: Vec<u8>,
    buffered: u64,
    pub counts: Counts,
}

struct Open {
    file: File,
    /// Bytes in the file: whole lines only.
    bytes: u64,
    since: SystemTime,
}

impl FileSink {
    /// Opens (appending to) `path`, creating its directory; an error here stops the start.
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut s = Self { path: path.to_owned(), rotation, writer: None, checked: true, buf: Vec::new(), buffered: 0, counts: Counts::default() };
        s.writer = Some(s.open_file()?);
        Ok(s)
    }

    fn open_file(&self) -> io::Result<Open> {
        let file = OpenOptions::new().create(true).append(true).mode(0o640).open(&self.path)?;
        let meta = file.metadata()?;
        // An existing file keeps its age across a daemon restart (its birth or last change).
        let since = if meta.len() == 0 { SystemTime::now() } else { meta.created().or_else(|_| meta.modified()).unwrap_or_else(|_| SystemTime::now()) };
        Ok(Open { file, bytes: meta.len(), since })
    }

    /// Buffers one line (written at the next [`FileSink::flush`]); an error (the line is lost
    /// and counted) when no file can be opened or rotated.
    pub fn write(&mut self, line: &str) -> io::Result<()> {
        if !self.checked {
            // Once per burst (a stat and an fstat): lines written to a removed or rotated
            // file would be lost.
            self.checked = true;
            if self.writer.as_ref().is_some_and(|o| self.moved_away(o)) {
                self.close();
            }
        }
        let adding = line.len() as u64 + 1;
        let due = self.writer.as_ref().is_some_and(|o| self.due(o, self.buf.len() as u64, adding));
        let ready = if due { self.rotate() } else { Ok(()) };
        let ready = ready.and_then(|()| match self.writer {
            Some(_) => Ok(()),
            None => self.open_file().map(|o| self.writer = Some(o)),
        });
        if let Err(e) = ready {
            self.counts.lost += 1;
            self.failed(&e);
            return Err(e);
        }
        self.buf.extend_from_slice(line.as_bytes());
        self.buf.push(b'\n');
        self.buffered += 1;
        if self.buf.len() >= WRITE_BUFFER { self.commit() } else { Ok(()) }
    }

    /// Writes out what is buffered; the next burst checks the file is still ours.
    pub fn flush(&mut self) -> io::Result<()> {
        self.checked = false;
        self.commit()
    }

    /// Writes the buffered lines in one write. On failure the file is cut back to its last
    /// whole line and the lines are counted as lost; the next write opens the file afresh.
    fn commit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let lines = std::mem::take(&mut self.buffered);
        let result = match &mut self.writer {
            Some(o) => match o.file.write_all(&self.buf) {
                Ok(()) => {
                    o.bytes += self.buf.len() as u64;
                    Ok(())
                }
                Err(e) => {
                    let _ = o.file.set_len(o.bytes);
                    Err(e)
                }
            },
            None => Err(io::Error::other("the verdict file is not open")),
        };
        self.buf.clear();
        match result {
            Ok(()) => {
                self.counts.written += lines;
                self.counts.error = None;
                Ok(())
            }
            Err(e) => {
                self.writer = None;
                self.counts.lost += lines;
                self.failed(&e);
                Err(e)
            }
        }
    }

    fn failed(&mut self, e: &io::Error) {
        self.counts.write_errors += 1;
        self.counts.error = Some(e.to_string());
    }

    /// Starts a new file at the next write (SIGHUP, after logrotate).
    pub fn reopen(&mut self) {
        self.close();
    }

    /// Writes what is buffered to the open file, and closes it.
    fn close(&mut self) {
        let _ = self.commit();
        self.writer = None;
    }

    fn moved_away(&self, o: &Open) -> bool {
        match (o.file.metadata(), std::fs::metadata(&self.path)) {
            (Ok(open), Ok(named)) => (open.dev(), open.ino()) != (named.dev(), named.ino()),
            _ => true,
        }
    }

    /// Whether a line of `line` bytes, after the open file's and `pending` buffered ones,
    /// calls for a new file.
    fn due(&self, o: &Open, pending: u64, line: u64) -> bool {
        let r = &self.rotation;
        let size = o.bytes + pending;
        let by_size = r.max_bytes > 0 && size > 0 && size + line > r.max_bytes;
        let by_age = r.max_age.is_some_and(|age| size > 0 && o.since.elapsed().is_ok_and(|e| e >= age));
        by_size || by_age
    }

    /// `PATH` becomes `PATH.1`, `PATH.N` becomes `PATH.N+1`, and the one past `keep` goes.
    fn rotate(&mut self) -> io::Result<()> {
        self.close();
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        let keep = self.rotation.keep;
        match std::fs::remove_file(numbered(keep.max(1))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (1..keep).rev() {
            match std::fs::rename(numbered(n), numbered(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        if keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            std::fs::rename(&self.path, numbered(1))?;
        }
        self.writer = Some(self.open_file()?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("guard-file-sink-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn read(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p).map(|t| t.lines().map(str::to_owned).collect()).unwrap_or_default()
    }

    #[test]
    fn rotates_by_size_keeping_order_and_the_retention_count() {
        let d = dir("size");
        let path = d.join("v.jsonl");
        // 10-byte lines ("{\"n\":NNN}" + newline), 35-byte files: 3 lines a file.
        let mut s = FileSink::open(&path, Rotation { max_bytes: 35, max_age: None, keep: 2 }).unwrap();
        for n in 100..112 {
            s.write(&format!("{{\"n\":{n}}}")).unwrap();
            s.flush().unwrap();
        }
        let n = |file: &Path| read(file).iter().map(|l| l[5..8].parse::<u32>().unwrap()).collect::<Vec<_>>();
        assert_eq!(n(&path), [109, 110, 111]);
        assert_eq!(n(&d.join("v.jsonl.1")), [106, 107, 108]);
        assert_eq!(n(&d.join("v.jsonl.2")), [103, 104, 105]);
        assert!(!d.join("v.jsonl.3").exists(), "more than `keep` rotated files");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failed_write_loses_only_its_lines_counts_them_and_leaves_no_partial_line() {
        let d = dir("full");
        let path = d.join("v.jsonl");
        let mut s = FileSink::open(&path, Rotation::default()).unwrap();
        s.write("{\"a\":1}").unwrap();
        s.flush().unwrap();
        // The disk is full: writes fail with ENOSPC.
        s.writer.as_mut().unwrap().file = OpenOptions::new().append(true).open("/dev/full").unwrap();
        // (The same file as far as the once-a-burst check knows.)
        s.checked = true;
        s.write("{\"a\":2}").unwrap();
        s.write("{\"a\":3}").unwrap();
        assert!(s.flush().is_err());
        assert_eq!((s.counts.written, s.counts.lost, s.counts.write_errors), (1, 2, 1));
        assert!(s.counts.error.as_deref().is_some_and(|e| e.contains("No space left on device")), "{:?}", s.counts);
        // Space again: the next burst opens the file afresh.
        s.write("{\"a\":4}").unwrap();
        s.flush().unwrap();
        assert_eq!(read(&path), ["{\"a\":1}", "{\"a\":4}"]);
        assert_eq!((s.counts.written, s.counts.lost, s.counts.error.clone()), (2, 2, None));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rotates_by_age_and_follows_outside_rotation() {
        let d = dir("age");
        let path = d.join("v.jsonl");
        let mut s = FileSink::open(&path, Rotation { max_bytes: 0, max_age: Some(Duration::from_millis(50)), keep: 5 }).unwrap();
        s.write("{\"a\":1}").unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(80));
        s.write("{\"a\":2}").unwrap();
        s.flush().unwrap();
        assert_eq!(read(&d.join("v.jsonl.1")), ["{\"a\":1}"]);
        assert_eq!(read(&path), ["{\"a\":2}"]);
        // Moved away by logrotate: the next burst starts a new file.
        std::fs::rename(&path, d.join("outside")).unwrap();
        s.write("{\"a\":3}").unwrap();
        s.flush().unwrap();
        assert_eq!(read(&path), ["{\"a\":3}"]);
        assert_eq!(read(&d.join("outside")), ["{\"a\":2}"]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
