//! Verdict sequence numbers (`metadata.sequence`): strictly increasing across daemon restarts
//! when a state directory is configured, so a SIEM (or a test) can tell every verdict exactly
//! once and in order.
//!
//! The file `<state_dir>/verdict-seq` holds a *reservation*: the first number the daemon may
//! not use yet. It is moved forward (written and renamed, then fsynced) a block at a time,
//! before any number in the block is handed out. A daemon that dies mid-block leaves a gap,
//! never a repeat; a restart starts at the reservation.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

/// Numbers reserved per write.
const BLOCK: u64 = 4096;
const FILE: &str = "verdict-seq";

pub struct Sequence {
    next: u64,
    reserved: u64,
    file: Option<PathBuf>,
}

impl Sequence {
    /// From `state_dir` (created if missing), or, without one, starting at 1 each run.
    pub fn open(state_dir: Option<&Path>) -> anyhow::Result<Self> {
        let Some(dir) = state_dir else {
            return Ok(Self { next: 1, reserved: u64::MAX, file: None });
        };
        std::fs::create_dir_all(dir).with_context(|| format!("creating the state directory {}", dir.display()))?;
        let file = dir.join(FILE);
        let start = match std::fs::read_to_string(&file) {
            Ok(text) => text.trim().parse::<u64>().with_context(|| format!("{} does not hold a number: {:?}", file.display(), text.trim()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        let mut s = Self { next: start.max(1), reserved: start.max(1), file: Some(file) };
        s.reserve()?;
        Ok(s)
    }

    /// The next number. Fails only if the reservation cannot be written (then no number is
    /// handed out that a restart could repeat).
    pub fn next(&mut self) -> anyhow::Result<u64> {
        if self.next >= self.reserved {
            self.reserve()?;
        }
        let n = self.next;
        self.next += 1;
        Ok(n)
    }

    /// Like [`Sequence::next`], but verdicts never stop: if the reservation cannot be written
    /// (full disk), the error is logged and numbering goes on in memory (a restart may then
    /// repeat numbers; the log says so).
    pub fn next_or_degrade(&mut self) -> u64 {
        match self.next() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot reserve verdict sequence numbers; a restart may repeat some");
                self.reserved = self.reserved.max(self.next.saturating_add(BLOCK));
                let n = self.next;
                self.next += 1;
                n
            }
        }
    }

    fn reserve(&mut self) -> anyhow::Result<()> {
        let Some(file) = &self.file else { return Ok(()) };
        let upto = self.next.saturating_add(BLOCK);
        let tmp = file.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{upto}")?;
            f.sync_all()?;
            std::fs::rename(&tmp, file)
        };
        write().with_context(|| format!("writing {}", file.display()))?;
        self.reserved = upto;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_never_repeat_across_restarts() {
        let dir = std::env::temp_dir().join(format!("guard-seq-{}", std::process::id()));
        let mut a = Sequence::open(Some(&dir)).unwrap();
        let first: Vec<u64> = (0..5000).map(|_| a.next().unwrap()).collect();
        assert!(first.windows(2).all(|w| w[1] == w[0] + 1) && first[0] == 1);
        drop(a);
        // A "crash" after 5000: the next daemon starts above every number handed out.
        let mut b = Sequence::open(Some(&dir)).unwrap();
        assert!(b.next().unwrap() > 5000);
        std::fs::write(dir.join(FILE), "garbage").unwrap();
        assert!(Sequence::open(Some(&dir)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        let mut none = Sequence::open(None).unwrap();
        assert_eq!((none.next().unwrap(), none.next().unwrap()), (1, 2));
    }
}
