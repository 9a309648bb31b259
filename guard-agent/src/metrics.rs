//! Prometheus metrics: the text exposition format over a minimal HTTP/1.1 endpoint
//! (`GET /metrics`), off unless an address is configured. The numbers come from the event loop
//! (asked over a channel), so a scrape sees the same state `status` does.
use std::{fmt::Write as _, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc, oneshot},
};

use crate::control::ControlMsg;

/// A scrape's request head may be at most this long.
const MAX_HEAD: usize = 8 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served at once.
const MAX_CONNECTIONS: usize = 8;

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "metrics are served off loopback; the endpoint has no authentication");
    }
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, tx: mpsc::Sender<ControlMsg>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else { return };
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(TIMEOUT, scrape(stream, tx)).await;
            drop(permit);
        });
    }
}

async fn scrape(mut stream: TcpStream, tx: mpsc::Sender<ControlMsg>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "request head too large\n").await;
        }
    }
    let line = String::from_utf8_lossy(head.split(|b| *b == b'\n').next().unwrap_or_default()).into_owned();
    let mut words = line.split_ascii_whitespace();
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    if method == "HEAD" {
        return respond(&mut stream, "405 Method Not Allowed", "").await;
    }
    if method != "GET" {
        return respond(&mut stream, "405 Method Not Allowed", "only GET /metrics\n").await;
    }
    // Scrapers may add a query string (`?name[]=...`); everything is always served.
    if target.split('?').next() != Some("/metrics") {
        return respond(&mut stream, "404 Not Found", "metrics are at /metrics\n").await;
    }
    let (reply, rx) = oneshot::channel();
    if tx.send(ControlMsg::Metrics(reply)).await.is_err() {
        return respond(&mut stream, "503 Service Unavailable", "the daemon is stopping\n").await;
    }
    let body = rx.await.unwrap_or_default();
    respond(&mut stream, "200 OK", &body).await
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// A latency histogram in seconds, with Prometheus's cumulative buckets.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Hold decisions range from well under a millisecond (argv rules decided by the daemon) to
/// minutes (a person).
const BOUNDS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0, 30.0, 120.0, 600.0];

impl Default for Histogram {
    fn default() -> Self {
        Self { counts: vec![0; BOUNDS.len()], sum: 0.0, count: 0 }
    }
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|b| s <= *b) {
            self.counts[i] += 1;
        }
        self.sum += s;
        self.count += 1;
    }
}

/// Builds the exposition text: `# HELP`/`# TYPE` once per family, then its samples.
#[derive(Default)]
pub struct Text(pub String);

impl Text {
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// One metric with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let mut cumulative = 0;
        for (bound, n) in BOUNDS.iter().zip(&h.counts) {
            cumulative += n;
            let le = bound.to_string();
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &l, cumulative);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &l, h.count);
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count);
    }
}

/// Label values escape `\`, `"` and newlines.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(1000));
        let mut t = Text::default();
        t.histogram("x", &[("by", "a\"b")], &h);
        assert!(t.0.contains("x_bucket{by=\"a\\\"b\",le=\"0.0005\"} 1\n"), "{}", t.0);
        assert!(t.0.contains("x_bucket{by=\"a\\\"b\",le=\"0.005\"} 2\n"), "{}", t.0);
        assert!(t.0.contains("x_bucket{by=\"a\\\"b\",le=\"600\"} 2\n"), "{}", t.0);
        assert!(t.0.contains("x_bucket{by=\"a\\\"b\",le=\"+Inf\"} 3\n"), "{}", t.0);
        assert!(t.0.contains("x_count{by=\"a\\\"b\"} 3\n"), "{}", t.0);
    }
}
