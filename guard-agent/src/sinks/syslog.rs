//! The syslog sink: verdicts as RFC 5424 messages with guard's structured data, framed by octet
//! counting (RFC 6587 §3.4.1), over TCP or TLS (RFC 5425), delivered from the sink's spool by
//! its own thread (see the parent module).
//!
//! Syslog over TCP has no acknowledgement: a batch counts as delivered once it is written to
//! the socket. If the connection breaks, the batch in progress is sent again on a new
//! connection, so the collector may see a few messages twice (never lose them to a broken
//! connection); a collector that went away mid-write may lose what was in its buffers.
//!
//! One message per verdict:
//! `<PRI>1 TIMESTAMP HOSTNAME guard PROCID MSGID [guard@32473 k="v" ...] {verdict JSON}`
//! - PRI: the configured facility (default `authpriv`) and a severity from the verdict
//!   (killed/denied: warning, held/would-*: notice, else informational).
//! - MSGID: the OCSF class (`exec`, `network`, `policy`, `finding`, ...).
//! - Structured data (SD-ID `guard@32473`, the documentation enterprise number of RFC 5612 until
//!   guard has its own): verdict, agent, seq, rule, pid — what a syslog filter wants without
//!   parsing JSON. Values escape `"`, `\` and `]` as RFC 5424 §6.3.3 requires.
//! - MSG: the verdict's JSON, one line (JSON escapes newlines and control characters, so
//!   hostile argv cannot forge a second message; with octet counting it could not anyway).
use std::{
    fmt::Write as _,
    io::Write as _,
    net::TcpStream,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use serde_json::Value;

use super::spool::{Batch, Reader};
use crate::{
    config::{NetworkSink, Vendor},
    verdict::{Mark, Marks},
};

/// RFC 5612's enterprise number for documentation.
const SD_ID: &str = "guard@32473";

fn severity(verdict: &str) -> u8 {
    match verdict {
        "killed" | "denied" => 4,
        "held" | "would-kill" | "would-deny" | "would-hold" | "audited" => 5,
        _ => 6,
    }
}

fn msgid(class_uid: Option<u64>) -> &'static str {
    match class_uid {
        Some(1007) => "exec",
        Some(1001) => "file",
        Some(4001) => "network",
        Some(6002) => "policy",
        Some(2004) => "finding",
        _ => "verdict",
    }
}

/// A PARAM-VALUE with `"`, `\` and `]` escaped.
fn sd_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// A header field: printable US-ASCII without spaces, at most `max` long, `-` when empty.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if f.is_empty() { "-".into() } else { f }
}

/// RFC 3339 UTC with milliseconds, from milliseconds since the epoch.
fn timestamp(ms: u64) -> String {
    crate::time::utc(ms)
}

const BACKOFF_START: Duration = Duration::from_millis(250);

/// Starts the sender thread of a syslog sink. Fails (a settings error) if `tls_ca` cannot be
/// read.
pub fn start(cfg: &NetworkSink, reader: Reader) -> anyhow::Result<()> {
    let Vendor::Syslog { facility, tls, host, port } = &cfg.vendor else { anyhow::bail!("not a syslog sink") };
    let tls = if *tls { Some(tls_config(cfg.tls_ca.as_deref())?) } else { None };
    let mut sender = Sender {
        name: cfg.name.clone(),
        facility: *facility,
        host: host.clone(),
        port: *port,
        tls,
        timeout: cfg.timeout,
        backoff_max: cfg.backoff_max,
        origin: origin(crate::verdict::hostname()),
        conn: None,
        reader,
        batch: (cfg.batch_max_events, cfg.batch_max_bytes, cfg.batch_max_wait),
    };
    std::thread::Builder::new()
        .name(format!("sink-{}", cfg.name).chars().filter(char::is_ascii_graphic).take(15).collect())
        .spawn(move || sender.run())
        .context("starting the sink thread")?;
    Ok(())
}

/// A TLS client trusting the CAs of `tls` (the system bundle plus `tls_ca`).
fn tls_config(tls_ca: Option<&std::path::Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in super::tls::trusted(tls_ca)? {
        // A certificate rustls cannot use is skipped, as other TLS clients do.
        let _ = roots.add(rustls::pki_types::CertificateDer::from(c.der().to_vec()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

enum Conn {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Tcp(s) => s.write_all(bytes),
            Self::Tls(s) => s.write_all(bytes),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Tcp(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

struct Sender {
    name: String,
    facility: u8,
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    backoff_max: Duration,
    /// `HOSTNAME APP-NAME PROCID` of every message.
    origin: String,
    conn: Option<Conn>,
    reader: Reader,
    batch: (usize, usize, Duration),
}

impl Sender {
    fn run(&mut self) {
        let (events, bytes, wait) = self.batch;
        while let Some(batch) = self.reader.next_batch(events, bytes, wait) {
            if !self.deliver(&batch) {
                break;
            }
        }
        if let Some(Conn::Tls(s)) = &mut self.conn {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    }

    /// Writes one batch, reconnecting and retrying with backoff until it is written; false if
    /// shutdown interrupted it.
    fn deliver(&mut self, batch: &Batch) -> bool {
        let mut wire = Vec::new();
        let mut msg = String::new();
        for r in &batch.records {
            msg.clear();
            message_into(&mut msg, &r.line, r.marks.as_ref(), self.facility, &self.origin);
            frame_into(&mut wire, &msg);
        }
        let mut backoff = BACKOFF_START;
        loop {
            if !self.reader.is_current(batch) {
                return true;
            }
            match self.send(&wire) {
                Ok(()) => {
                    let n = batch.records.len();
                    self.reader.update(|s| {
                        s.sent += n as u64;
                        s.healthy = true;
                    });
                    self.reader.ack(batch, n);
                    return true;
                }
                Err(e) => {
                    self.conn = None;
                    self.reader.update(|s| s.healthy = false);
                    tracing::warn!(sink = %self.name, error = %e, retry_in = ?backoff, "syslog sink: cannot send; will retry");
                    if !self.reader.pause(backoff) {
                        return false;
                    }
                    backoff = (backoff * 2).min(self.backoff_max);
                }
            }
        }
    }

    fn send(&mut self, wire: &[u8]) -> anyhow::Result<()> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        let conn = self.conn.as_mut().context("no connection")?;
        conn.write_all(wire)?;
        conn.flush()?;
        Ok(())
    }

    fn connect(&self) -> anyhow::Result<Conn> {
        use std::net::ToSocketAddrs as _;
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", self.host))?
            .next()
            .with_context(|| format!("{} has no address", self.host))?;
        let tcp = TcpStream::connect_timeout(&addr, self.timeout).with_context(|| format!("connecting to {addr}"))?;
        tcp.set_write_timeout(Some(self.timeout))?;
        tcp.set_read_timeout(Some(self.timeout))?;
        let Some(config) = &self.tls else { return Ok(Conn::Tcp(tcp)) };
        let server = rustls::pki_types::ServerName::try_from(self.host.clone()).context("the syslog host is not a valid TLS name")?;
        let conn = rustls::ClientConnection::new(Arc::clone(config), server).context("starting TLS")?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        // Finish the handshake now, so a certificate error shows here, not mid-batch.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).context("TLS handshake")?;
        }
        Ok(Conn::Tls(Box::new(stream)))
    }
}

/// `HOSTNAME APP-NAME PROCID` (this process), the same in every message of this daemon.
fn origin(hostname: &str) -> String {
    format!("{} guard {}", header_field(hostname, 255), std::process::id())
}

/// One RFC 5424 message (without framing) for the verdict `line` (its JSON), with where its
/// values sit if the encoder marked them (what the sender writes, for tests and the output
/// bench).
#[cfg(test)]
pub fn message(line: &str, marks: Option<&Marks>, facility: u8, hostname: &str) -> String {
    let mut out = String::new();
    message_into(&mut out, line, marks, facility, &origin(hostname));
    out
}

/// [`message`] appended to `out`, with the `origin` fields made once.
fn message_into(out: &mut String, line: &str, marks: Option<&Marks>, facility: u8, origin: &str) {
    // The few values the header and structured data need, read without building the tree.
    const WANTED: [Mark; 8] = [Mark::Verdict, Mark::Time, Mark::ClassUid, Mark::Agent, Mark::Sequence, Mark::RuleId, Mark::Pid, Mark::ActorPid];
    let [verdict_v, time_v, class_v, agent_v, seq_v, rule_v, pid_v, actor_pid_v] = super::fields::marked(line, marks, WANTED).map(|(_, f)| f).unwrap_or_default();
    let verdict = verdict_v.as_ref().and_then(Value::as_str).unwrap_or("-");
    let pri = u16::from(facility) * 8 + u16::from(severity(verdict));
    let time = time_v.as_ref().and_then(Value::as_u64).map_or_else(|| "-".to_owned(), timestamp);
    let _ = write!(out, "<{pri}>1 {time} {origin} {} [{SD_ID}", msgid(class_v.as_ref().and_then(Value::as_u64)));
    let params = [
        ("verdict", verdict_v.as_ref()),
        ("agent", agent_v.as_ref()),
        ("seq", seq_v.as_ref()),
        ("rule", rule_v.as_ref()),
        ("pid", pid_v.as_ref().or(actor_pid_v.as_ref())),
    ];
    for (name, value) in params {
        let number;
        let text = match value {
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Number(n)) => {
                number = n.to_string();
                number.as_str()
            }
            _ => continue,
        };
        let _ = write!(out, " {name}=\"");
        sd_escape(text, out);
        out.push('"');
    }
    out.push_str("] ");
    out.push_str(line);
}

/// Octet-counting framing: `LEN SP MSG`.
#[cfg(test)]
pub fn frame(message: &str) -> Vec<u8> {
    let mut f = vec![];
    frame_into(&mut f, message);
    f
}

/// [`frame`] appended to `wire`.
fn frame_into(wire: &mut Vec<u8>, message: &str) {
    wire.extend_from_slice(itoa::Buffer::new().format(message.len()).as_bytes());
    wire.push(b' ');
    wire.extend_from_slice(message.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::facility;
    use serde_json::json;

    #[test]
    fn rfc5424_with_escaped_structured_data() {
        let line = json!({
            "class_uid": 1007, "time": 1_795_255_200_123u64, "metadata": { "sequence": 7 },
            "process": { "pid": 42 },
            "unmapped": { "verdict": "killed", "agent": "a\"b]c\\d", "argv": ["sh", "-c", "x\ny ] \" \u{fffd}"], "rule": { "id": 3 } },
        })
        .to_string();
        let m = message(&line, None, facility("authpriv").unwrap(), "host one");
        let head = format!("<84>1 2026-11-21T10:00:00.123Z hostone guard {} exec ", std::process::id());
        assert!(m.starts_with(&head), "{m}");
        assert!(m.contains(r#"[guard@32473 verdict="killed" agent="a\"b\]c\\d" seq="7" rule="3" pid="42"] {"#), "{m}");
        assert!(m.ends_with(&line) && !m.contains('\n'), "{m}");
        let f = frame(&m);
        let (len, rest) = std::str::from_utf8(&f).unwrap().split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), rest.len());
    }

    #[test]
    fn odd_input_never_panics() {
        let m = message("not json", None, 1, "");
        assert!(m.starts_with("<14>1 - - guard "), "{m}");
        assert_eq!(facility("local7"), Some(23));
        assert_eq!(facility("nope"), None);
    }
}
