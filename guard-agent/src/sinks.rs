//! Where verdict lines go: standard output and JSON-lines files, any number at once, and the
//! live feed `guard-agent tail` subscribes to.
//!
//! A sink that fails (closed pipe, full disk, file removed) is counted and retried; it never
//! stops the daemon, and enforcement (in the kernel) never waits for it.
use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::PathBuf,
    sync::Arc,
};

use anyhow::Context as _;
use tokio::sync::broadcast;

use crate::config::SinkConfig;

/// Verdicts a slow `tail` client may fall behind by before it is told it lost some.
const TAIL_BACKLOG: usize = 1024;

/// One verdict on the live feed.
#[derive(Debug)]
pub struct TailItem {
    pub agent: Option<String>,
    pub verdict: &'static str,
    /// The verdict's JSON, one line.
    pub line: String,
}

pub type Feed = broadcast::Sender<Arc<TailItem>>;

pub fn feed() -> Feed {
    broadcast::channel(TAIL_BACKLOG).0
}

pub struct Sink {
    pub name: String,
    output: Output,
    /// Lines written.
    pub sent: u64,
    /// Lines (or flushes) that failed.
    pub failed: u64,
    /// Whether the last write or flush worked.
    pub healthy: bool,
}

enum Output {
    Stdout(BufWriter<io::Stdout>),
    /// `None` after a failure: reopened at the next write. `checked`: whether this burst has
    /// made sure the open file is still the one at `path`.
    File { path: PathBuf, writer: Option<BufWriter<File>>, checked: bool },
}

/// The open file is no longer the one at `path` (removed, or renamed by logrotate): reopen.
fn moved_away(path: &PathBuf, w: &BufWriter<File>) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (w.get_ref().metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => (open.dev(), open.ino()) != (named.dev(), named.ino()),
        _ => true,
    }
}

fn open_file(path: &PathBuf) -> io::Result<BufWriter<File>> {
    let file = OpenOptions::new().create(true).append(true).mode(0o640).open(path)?;
    Ok(BufWriter::new(file))
}

pub struct Sinks {
    pub list: Vec<Sink>,
}

impl Sinks {
    /// Opens every sink. A file sink that cannot be opened is an error here, at start, where
    /// an admin sees it; later failures are counted and retried.
    pub fn open(config: &[SinkConfig]) -> anyhow::Result<Self> {
        let mut list = Vec::new();
        for c in config {
            let output = match c {
                SinkConfig::Stdout => Output::Stdout(BufWriter::new(io::stdout())),
                SinkConfig::File { path } => {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                    }
                    let writer = open_file(path).with_context(|| format!("opening the verdict file {}", path.display()))?;
                    Output::File { path: path.clone(), writer: Some(writer), checked: true }
                }
            };
            list.push(Sink { name: c.name(), output, sent: 0, failed: 0, healthy: true });
        }
        Ok(Self { list })
    }

    pub fn write(&mut self, line: &str) {
        for sink in &mut self.list {
            let result = match &mut sink.output {
                Output::Stdout(w) => writeln!(w, "{line}"),
                Output::File { path, writer, checked } => {
                    // Once per burst (a stat and an fstat): lines written to a removed or
                    // rotated file would be lost.
                    if !*checked {
                        *checked = true;
                        if writer.as_ref().is_some_and(|w| moved_away(path, w)) {
                            if let Some(mut w) = writer.take() {
                                let _ = w.flush();
                            }
                        }
                    }
                    if writer.is_none() {
                        *writer = open_file(path).ok();
                    }
                    match writer {
                        Some(w) => writeln!(w, "{line}").inspect_err(|_| *writer = None),
                        None => Err(io::Error::other("cannot reopen")),
                    }
                }
            };
            match result {
                Ok(()) => sink.sent += 1,
                Err(_) => sink.failed += 1,
            }
            sink.healthy = result.is_ok();
        }
    }

    /// Writes out what is buffered: once per burst of verdicts.
    pub fn flush(&mut self) {
        for sink in &mut self.list {
            let result = match &mut sink.output {
                Output::Stdout(w) => w.flush(),
                Output::File { writer, checked, .. } => {
                    *checked = false;
                    writer.as_mut().map_or(Ok(()), |w| w.flush())
                }
            };
            sink.healthy &= result.is_ok();
            if result.is_err() {
                sink.failed += 1;
                if let Output::File { writer, .. } = &mut sink.output {
                    *writer = None;
                }
            }
        }
    }

    /// Reopens file sinks (after logrotate moved them away; on SIGHUP).
    pub fn reopen(&mut self) {
        self.flush();
        for sink in &mut self.list {
            if let Output::File { writer, .. } = &mut sink.output {
                *writer = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sink_appends_lines_and_follows_rotation_and_removal() {
        let dir = std::env::temp_dir().join(format!("guard-sink-{}", std::process::id()));
        let path = dir.join("v.jsonl");
        let mut sinks = Sinks::open(&[SinkConfig::File { path: path.clone() }]).unwrap();
        sinks.write("{\"a\":1}");
        sinks.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
        // logrotate moved it away: SIGHUP reopens, and the next line starts a new file.
        std::fs::rename(&path, dir.join("v.jsonl.1")).unwrap();
        sinks.reopen();
        sinks.write("{\"a\":2}");
        sinks.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":2}\n");
        // Moved away without a SIGHUP, or removed: the next burst notices and starts anew.
        std::fs::rename(&path, dir.join("v.jsonl.2")).unwrap();
        sinks.write("{\"a\":3}");
        sinks.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":3}\n");
        std::fs::remove_file(&path).unwrap();
        sinks.write("{\"a\":4}");
        sinks.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":4}\n");
        assert_eq!(std::fs::read_to_string(dir.join("v.jsonl.1")).unwrap(), "{\"a\":1}\n");
        assert_eq!(std::fs::read_to_string(dir.join("v.jsonl.2")).unwrap(), "{\"a\":2}\n");
        assert_eq!((sinks.list[0].sent, sinks.list[0].failed), (4, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
