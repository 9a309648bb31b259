//! The log's files: their names, and reading their lines forwards (the verifier) and backwards
//! (the writer, which only needs the last few records to continue the chain).
use std::{
    fs::File,
    io::{self, BufRead, Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
};

/// No record is this long (a verdict's argv is cut at 4 KiB); a longer "line" is corruption,
/// and reading it whole would let a damaged file exhaust memory.
pub const MAX_LINE: usize = 16 << 20;

/// `verdicts-<first seq, 20 digits>.log`: sorting names sorts the files by their first record.
pub fn file_name(first_seq: u64) -> String {
    format!("verdicts-{first_seq:020}.log")
}

/// The first seq a log file's name says it starts at; `None` for any other name.
pub fn name_seq(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_prefix("verdicts-")?.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

/// The log files in `dir`, oldest first.
pub fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<(u64, PathBuf)> =
        std::fs::read_dir(dir)?.filter_map(|e| e.ok()).filter_map(|e| Some((name_seq(&e.path())?, e.path()))).collect();
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// One line read forwards.
pub enum Line {
    /// A line and whether it ended with a newline (only a file's last line can lack one).
    Text { bytes: Vec<u8>, newline: bool },
    /// Longer than [`MAX_LINE`].
    TooLong,
}

/// Reads the next line, at most [`MAX_LINE`] bytes of it; `None` at the end of the file.
pub fn read_line(r: &mut impl BufRead) -> io::Result<Option<Line>> {
    let mut bytes = Vec::new();
    let n = r.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', &mut bytes)?;
    if n == 0 {
        return Ok(None);
    }
    let newline = bytes.last() == Some(&b'\n');
    if newline {
        bytes.pop();
    } else if bytes.len() > MAX_LINE {
        return Ok(Some(Line::TooLong));
    }
    Ok(Some(Line::Text { bytes, newline }))
}

/// A file's complete lines from the last to the first, read in blocks from the end: the writer
/// reopening a large log reads only its tail.
pub struct RevLines {
    file: File,
    /// Where in the file `buf` starts.
    pos: u64,
    /// Bytes from `pos` up to the start of the last line returned.
    buf: Vec<u8>,
}

const BLOCK: usize = 64 << 10;

impl RevLines {
    /// Reads `file` backwards from `end`, which must be just after a newline (or 0).
    pub fn new(file: File, end: u64) -> Self {
        Self { file, pos: end, buf: Vec::new() }
    }

    /// The previous complete line, without its newline.
    pub fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        // `buf` is empty or ends with the newline of the line to return.
        if self.buf.is_empty() {
            if self.pos == 0 {
                return Ok(None);
            }
            self.fill()?;
        }
        self.buf.pop();
        loop {
            if let Some(i) = self.buf.iter().rposition(|&b| b == b'\n') {
                let line = self.buf.split_off(i + 1);
                return Ok(Some(line));
            }
            if self.pos == 0 {
                return Ok((!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf)));
            }
            if self.buf.len() > MAX_LINE {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "a line longer than 16 MiB"));
            }
            self.fill()?;
        }
    }

    /// Prepends the block before `pos` to `buf`.
    fn fill(&mut self) -> io::Result<()> {
        let n = (self.pos as usize).min(BLOCK);
        self.pos -= n as u64;
        let mut block = vec![0u8; n];
        self.file.seek(SeekFrom::Start(self.pos))?;
        self.file.read_exact(&mut block)?;
        block.extend_from_slice(&self.buf);
        self.buf = block;
        Ok(())
    }
}

/// Where the last complete line of `file` ends (just after its newline), reading backwards;
/// 0 when no newline is found.
pub fn end_of_last_line(file: &mut File, len: u64) -> io::Result<u64> {
    let mut pos = len;
    let mut block = vec![0u8; BLOCK];
    while pos > 0 {
        let n = (pos as usize).min(BLOCK);
        pos -= n as u64;
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut block[..n])?;
        if let Some(i) = block[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(pos + i as u64 + 1);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn names_sort_by_first_seq() {
        assert_eq!(file_name(42), "verdicts-00000000000000000042.log");
        assert_eq!(name_seq(Path::new("/x/verdicts-00000000000000000042.log")), Some(42));
        assert_eq!(name_seq(Path::new("verdicts-42.log")), None);
        assert_eq!(name_seq(Path::new("verdicts-0000000000000000004x.log")), None);
    }

    #[test]
    fn reverse_lines_cross_block_boundaries() {
        let path = std::env::temp_dir().join(format!("guard-audit-revlines-{}", std::process::id()));
        let lines: Vec<String> = (0..3000).map(|i| format!("{i}-{}", "x".repeat(i % 97))).collect();
        let mut f = File::create(&path).unwrap();
        for l in &lines {
            writeln!(f, "{l}").unwrap();
        }
        write!(f, "torn").unwrap();
        drop(f);
        let mut f = File::open(&path).unwrap();
        let len = f.metadata().unwrap().len();
        let end = end_of_last_line(&mut f, len).unwrap();
        assert_eq!(len - end, 4);
        let mut rev = RevLines::new(f, end);
        let mut got = Vec::new();
        while let Some(l) = rev.next_line().unwrap() {
            got.push(String::from_utf8(l).unwrap());
        }
        got.reverse();
        assert_eq!(got, lines);
        let _ = std::fs::remove_file(&path);
    }
}
