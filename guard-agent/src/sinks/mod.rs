//! Where verdict lines go: standard output, JSON-lines files, Splunk HEC and Elasticsearch
//! (`_bulk`), any number at once, and the live feed `guard-agent tail` subscribes to.
//!
//! A sink that fails (closed pipe, full disk, file removed, a server down) is counted and
//! retried; it never stops the daemon, and enforcement (in the kernel) never waits for it.
//! A sink that cannot write locally (its file or its spool: a full disk) counts the verdicts
//! it lost (`failed`) and the writes that failed (`write_errors`), shows the error in `status`
//! (`error`), logs once when the failures begin and once when writing works again (with the
//! count), and tries again at every burst.
//!
//! Standard output and files never make the event loop wait either: a thread each writes them
//! ([`local`]); the loop hands it each burst through a queue bounded by bytes, and a burst that
//! would overflow it is dropped and counted (`queue_dropped`, and in `failed`).
//!
//! Network sinks never make the event loop wait: a verdict is appended to the sink's bounded
//! on-disk spool ([`spool`]), and the sink's own thread ([`http`], [`syslog`], [`kafka`]) delivers it, in order, when
//! the server takes it, across daemon restarts too. While a server is down its verdicts queue
//! in the spool; when the spool is full the oldest are dropped and counted (`dropped`). For
//! network sinks, `sent` counts verdicts the server accepted, `failed` the ones lost for good
//! (rejected by the server, or not spooled), `backlog` the ones spooled and not yet delivered.
//!
//! Network sink settings (in `sinks:`; see `config`):
//!
//! ```yaml
//! - type: splunk_hec                 # or elasticsearch
//!   name: splunk                     # metrics label and spool name [TYPE:HOST:PORT]
//!   url: https://splunk:8088         # HEC: /services/collector/event is added to a bare host;
//!                                    # Elasticsearch: /_bulk is added
//!   token_file: /etc/guard/hec-token # HEC (or `token:`); `index`, `source` [guard],
//!                                    # `sourcetype` [guard:ocsf] optional
//!   # Elasticsearch: `index:` (index or data stream, required), `username` + `password_file`,
//!   # or `api_key_file`
//!   gzip: true                       # Content-Encoding: gzip
//!   batch_max_events: 500            # a request holds at most this many verdicts,
//!   batch_max_bytes: 1MiB            # about this many bytes (one verdict at least),
//!   batch_max_wait: 1s               # and waits at most this long to fill up
//!   timeout: 10s                     # one request, connect to last byte
//!   backoff_max: 30s                 # longest wait between tries (Retry-After may say more)
//!   tls_ca: /etc/guard/siem-ca.pem   # trusted besides the system's CA bundle
//!   spool_dir: /var/lib/guard/spool/splunk   # [<state_dir>/spool/<name>]
//!   spool_max_bytes: 256MiB          # when full, the oldest verdicts are dropped and counted
//! ```
//!
//! ```yaml
//! - type: syslog                     # RFC 5424, octet-counted (RFC 6587)
//!   url: tls://siem.example.com:6514 # or tcp://HOST[:514]
//!   tls_ca: /etc/guard/siem-ca.pem
//!   facility: authpriv               # any RFC 5424 facility name
//!   # and the batching, timeout, backoff and spool keys above
//! ```
//!
//! ```yaml
//! - type: kafka                      # see `config::kafka` for TLS and SASL
//!   brokers: [kafka-1:9093, kafka-2:9093]
//!   topic: guard-verdicts
//!   # and the batching, timeout, backoff, tls_ca and spool keys above (not `url`, `gzip`)
//! ```
//!
//! A network sink without `spool_dir` needs `state_dir`; a credential or `tls_ca` that cannot
//! be read stops the start (exit 2), like a verdict file that cannot be opened. At shutdown
//! (SIGINT/SIGTERM) network sinks get 3 s to deliver their backlog; the rest stays spooled.
use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::sync::broadcast;

use crate::config::SinkConfig;

pub(crate) mod fields;
mod file;
mod http;
mod kafka;
mod local;
mod spool;
pub mod syslog;
mod tls;

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
    /// Lines written (network sinks: verdicts the server accepted).
    pub sent: u64,
    /// Lines lost: their write failed (network sinks: also rejected by the server for good).
    pub failed: u64,
    /// Local writes that failed (the file, the spool), whatever they held.
    pub write_errors: u64,
    /// The error of the current run of local write failures; `None` while writing works.
    pub error: Option<String>,
    /// Whether the log has said that `error` began (said once per run of failures).
    error_logged: bool,
    /// Whether the last write or flush worked (network sinks: the last delivery).
    pub healthy: bool,
    /// Verdicts waiting to be delivered (network sinks; 0 for the others).
    pub backlog: u64,
    /// Verdicts dropped unsent because the sink's spool was full (this daemon run).
    pub dropped: u64,
    /// Verdicts dropped because the sink's writer thread was too far behind (standard output,
    /// files; also counted in `failed`).
    pub queue_dropped: u64,
}

enum Output {
    /// Standard output or a file, written by a thread of its own.
    Local(local::Local),
    /// The spool's writing end (a thread of its own delivers); whether its last write worked
    /// (records it could not take are counted as failed by the spool).
    Network { spool: spool::Writer, spool_ok: bool },
}

pub struct Sinks {
    pub list: Vec<Sink>,
}

impl Sinks {
    /// Opens every sink. A file sink that cannot be opened, or a network sink whose spool,
    /// credential or CA file cannot be used, is an error here, at start, where an admin sees
    /// it; later failures are counted and retried. A network sink spools under
    /// `<state_dir>/spool/<name>` unless it names its `spool_dir`.
    pub fn open(config: &[SinkConfig], state_dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut list = Vec::new();
        let mut spools: Vec<std::path::PathBuf> = Vec::new();
        for c in config {
            let output = match c {
                SinkConfig::Stdout => Output::Local(local::Local::start(&c.name(), local::Target::Stdout).context("starting the standard output sink's writer")?),
                SinkConfig::File { path, rotation } => {
                    let f = file::FileSink::open(path, *rotation).with_context(|| format!("opening the verdict file {}", path.display()))?;
                    Output::Local(local::Local::start(&c.name(), local::Target::File(f)).context("starting the file sink's writer")?)
                }
                SinkConfig::Network(n) => {
                    let dir = match (&n.spool_dir, state_dir) {
                        (Some(d), _) => d.clone(),
                        (None, Some(s)) => s.join("spool").join(n.name.replace(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)), "_")),
                        (None, None) => anyhow::bail!("sink `{}` needs a spool: set `state_dir` (or --state-dir), or the sink's `spool_dir`", n.name),
                    };
                    if n.url.starts_with("http://") || n.url.starts_with("tcp://") {
                        tracing::warn!(sink = %n.name, url = %n.url, "the sink is not encrypted: verdicts (and any credential) travel in clear");
                    }
                    // Two sinks on one spool would deliver and delete each other's records.
                    if spools.contains(&dir) {
                        anyhow::bail!("sink `{}` would share the spool {} with another sink: give it its own `spool_dir` or `name`", n.name, dir.display());
                    }
                    spools.push(dir.clone());
                    let (writer, reader) = spool::open(&dir, n.spool_max_bytes).with_context(|| format!("opening the spool {} of sink `{}`", dir.display(), n.name))?;
                    match n.vendor {
                        crate::config::Vendor::Syslog { .. } => syslog::start(n, reader),
                        crate::config::Vendor::Kafka(_) => kafka::start(n, reader),
                        _ => http::start(n, reader),
                    }
                    .with_context(|| format!("sink `{}`", n.name))?;
                    Output::Network { spool: writer, spool_ok: true }
                }
            };
            let mut sink = Sink { name: c.name(), output, sent: 0, failed: 0, write_errors: 0, error: None, error_logged: false, healthy: true, backlog: 0, dropped: 0, queue_dropped: 0 };
            sink.refresh();
            list.push(sink);
        }
        Ok(Self { list })
    }

    /// One line to every sink.
    #[cfg(test)]
    pub fn write(&mut self, line: &str) {
        self.write_marked(line, None);
    }

    /// One verdict line to every sink, with where its marked values sit (network sinks keep
    /// that in their spools; see `verdict::Marks`).
    pub fn write_marked(&mut self, line: &str, marks: Option<&crate::verdict::Marks>) {
        for sink in &mut self.list {
            match &mut sink.output {
                Output::Network { spool, .. } => {
                    // Counted as sent once the server has it (see `refresh`); a failed write
                    // (the buffer filled up) is counted by the spool.
                    if let Err(e) = spool.append_marked(line, marks) {
                        sink.spooled(Err(e));
                    }
                }
                Output::Local(l) => l.write(line, &sink.name),
            }
        }
    }

    /// A line for network sinks only (SIEMs): the audit log's checkpoints, as an outside
    /// witness of the local chain. Standard output and files (the local record) do not get it.
    pub fn witness(&mut self, line: &str) {
        for sink in &mut self.list {
            if let Output::Network { spool, .. } = &mut sink.output
                && let Err(e) = spool.append(line)
            {
                sink.spooled(Err(e));
            }
        }
    }

    /// Writes out what is buffered: once per burst of verdicts. Network sinks' counters are
    /// brought up to date here too.
    pub fn flush(&mut self) {
        for sink in &mut self.list {
            match &mut sink.output {
                Output::Network { spool, .. } => {
                    // A failed write is counted by the spool (its records are lost).
                    if spool.buffered() > 0 {
                        let r = spool.commit();
                        sink.spooled(r);
                    }
                }
                Output::Local(l) => l.hand_over(&sink.name),
            }
            sink.refresh();
        }
    }

    /// At shutdown: writes out what is buffered, gives network sinks until `within` from now
    /// (all together) to deliver their backlog, and leaves the rest spooled for the next start.
    pub fn shutdown(&mut self, within: Duration) {
        self.flush();
        let deadline = Instant::now() + within;
        for sink in &mut self.list {
            match &mut sink.output {
                Output::Network { spool, .. } => {
                    spool.close(deadline);
                    sink.refresh();
                    if sink.backlog > 0 {
                        tracing::info!(sink = %sink.name, backlog = sink.backlog, "undelivered verdicts stay spooled for the next start");
                    }
                }
                Output::Local(l) => {
                    l.close(&sink.name, deadline);
                    sink.refresh();
                }
            }
        }
    }

    /// Brings every sink's counters up to date (for `status` and `/metrics`: the writer
    /// threads count as they write).
    pub fn refresh(&mut self) {
        for sink in &mut self.list {
            sink.refresh();
        }
    }

    /// Reopens file sinks (after logrotate moved them away; on SIGHUP), after the lines
    /// buffered so far.
    pub fn reopen(&mut self) {
        self.flush();
        for sink in &mut self.list {
            if let Output::Local(l) = &mut sink.output {
                l.reopen(&sink.name);
            }
        }
    }

    /// Waits (at most `within` per sink) until standard output and files have written
    /// everything handed to them, and brings their counters up to date.
    #[cfg(test)]
    pub fn sync(&mut self, within: Duration) {
        for sink in &mut self.list {
            if let Output::Local(l) = &mut sink.output {
                assert!(l.sync(within), "sink {} did not catch up", sink.name);
            }
            sink.refresh();
        }
    }
}

impl Sink {
    /// Copies a file or network sink's counters from its file, or its spool and sender, and
    /// says when local writes begin to fail and when they work again.
    fn refresh(&mut self) {
        match &self.output {
            Output::Network { spool, spool_ok } => {
                let s = spool.snapshot();
                self.sent = s.sent;
                self.failed = s.failed;
                self.backlog = s.backlog;
                self.dropped = s.dropped;
                self.healthy = s.healthy && *spool_ok;
            }
            Output::Local(l) => {
                let c = l.counts();
                self.queue_dropped = l.queue_dropped;
                (self.sent, self.failed, self.write_errors) = (c.written, c.lost + l.queue_dropped, c.write_errors);
                self.healthy = c.error.is_none();
                self.error = c.error;
            }
        }
        match (&self.error, self.error_logged) {
            (Some(e), false) => tracing::error!(
                sink = %self.name,
                error = %e,
                "cannot write verdicts; those lost are counted (status, metrics) and writing is tried again at every burst"
            ),
            (None, true) => tracing::warn!(sink = %self.name, lost = self.failed, write_errors = self.write_errors, "writing verdicts again"),
            _ => {}
        }
        self.error_logged = self.error.is_some();
    }

    /// The outcome of a network sink's write to its spool.
    fn spooled(&mut self, r: std::io::Result<()>) {
        let Output::Network { spool_ok, .. } = &mut self.output else { return };
        *spool_ok = r.is_ok();
        match r {
            Ok(()) => self.error = None,
            Err(e) => {
                self.write_errors += 1;
                self.error = Some(format!("spool: {e}"));
            }
        }
    }
}

/// What the Splunk HEC (and with `es` the Elasticsearch) sink makes of one line (for `daemon::output`'s harness).
#[cfg(test)]
pub fn bench_http_encode(line: &str, marks: Option<&crate::verdict::Marks>, es: bool) -> (Vec<u8>, Vec<u8>) {
    http::bench_encode(line, marks, es)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rotation;

    #[test]
    fn file_sink_appends_lines_and_follows_rotation_and_removal() {
        let dir = std::env::temp_dir().join(format!("guard-sink-{}", std::process::id()));
        let path = dir.join("v.jsonl");
        let mut sinks = Sinks::open(&[SinkConfig::File { path: path.clone(), rotation: Rotation::default() }], None).unwrap();
        sinks.write("{\"a\":1}");
        sinks.flush();
        sinks.sync(Duration::from_secs(5));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
        // logrotate moved it away: SIGHUP reopens, and the next line starts a new file.
        std::fs::rename(&path, dir.join("v.jsonl.1")).unwrap();
        sinks.reopen();
        sinks.sync(Duration::from_secs(5));
        sinks.write("{\"a\":2}");
        sinks.flush();
        sinks.sync(Duration::from_secs(5));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":2}\n");
        // Moved away without a SIGHUP, or removed: the next burst notices and starts anew.
        std::fs::rename(&path, dir.join("v.jsonl.2")).unwrap();
        sinks.write("{\"a\":3}");
        sinks.flush();
        sinks.sync(Duration::from_secs(5));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":3}\n");
        std::fs::remove_file(&path).unwrap();
        sinks.write("{\"a\":4}");
        sinks.flush();
        sinks.sync(Duration::from_secs(5));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":4}\n");
        assert_eq!(std::fs::read_to_string(dir.join("v.jsonl.1")).unwrap(), "{\"a\":1}\n");
        assert_eq!(std::fs::read_to_string(dir.join("v.jsonl.2")).unwrap(), "{\"a\":2}\n");
        assert_eq!((sinks.list[0].sent, sinks.list[0].failed), (4, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
