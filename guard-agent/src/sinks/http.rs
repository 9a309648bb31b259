//! The sender of a network sink: one thread that reads batches from the sink's spool and
//! delivers them, in order, to Splunk HEC or Elasticsearch `_bulk` over HTTP(S), with blocking
//! I/O that never touches the daemon's event loop.
//!
//! - **Splunk HEC**: `POST /services/collector/event`, `Authorization: Splunk <token>`, a body of
//!   event objects one after another (no array, no commas): `{"time":<epoch s.ms>,"host":..,
//!   "source":..,"sourcetype":..,["index":..,]"event":<verdict>}`. 200 is success.
//! - **Elasticsearch**: `POST <url>/_bulk`, `Content-Type: application/x-ndjson`, for each verdict
//!   `{"create":{"_index":..,"_id":"<host>-<metadata.sequence>"}}` and the verdict's ECS projection
//!   (`crate::ecs`, with `@timestamp`), each on its own line.
//!   `create` with host and sequence as `_id` (hosts sharing an index never collide) makes redelivery harmless: a 409 (already there) counts
//!   as delivered. With `errors: true`, each item is judged: 2xx and 409 delivered, 429 and 5xx
//!   sent again, any other status dropped and counted as failed (with the reason logged).
//!
//! Bodies are gzip'd (`Content-Encoding: gzip`) unless `gzip: false`. TLS is rustls, trusting
//! the system's CA bundle (or Mozilla's roots when the system has none) plus `tls_ca`. Proxies
//! come from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`, as for other tools.
//!
//! A batch is tried until the sink takes it: connection errors, timeouts, 408, 429 and 5xx are
//! tried again after an exponential backoff (250 ms doubling up to `backoff_max`, ±25%), or
//! after `Retry-After` seconds when the sink says so (at most 5 min). 401, 403 and 404 (a wrong
//! token or URL) are tried again too (the log says so): dropping verdicts for a setting an
//! admin can fix would lose them all; the bounded spool decides what is lost. A batch refused
//! for its content (400, 413) is halved and each half sent on its own, so one bad record (a
//! single-record batch refused) is dropped and counted as failed instead of stalling the sink
//! forever; a HEC 400 that names the `invalid-event-number` drops just that event (the ones
//! before it were indexed). HEC has no idempotency key: a batch delivered just before a crash
//! (before its position was recorded) is delivered again after the restart. A batch being
//! retried whose records the full spool dropped meanwhile (they were the oldest) is abandoned,
//! so what arrives after an overflow is the newest verdicts, in order.
use std::{
    collections::VecDeque,
    io::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::Value;
use ureq::tls::{RootCerts, TlsConfig};

use super::spool::{Batch, Reader};
use crate::config::{EsAuth, NetworkSink, Vendor};

const BACKOFF_START: Duration = Duration::from_millis(250);
/// The longest `Retry-After` honoured.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);
/// Responses are read up to this size (an Elasticsearch reply to a large batch is big).
const RESPONSE_MAX: u64 = 64 << 20;
/// Records whose rejection is logged one by one, per batch.
const LOG_REJECTS: usize = 5;

/// Starts the sender thread of `cfg`, reading `reader`. Fails (a settings error) if a credential
/// or `tls_ca` cannot be read.
pub fn start(cfg: &NetworkSink, reader: Reader) -> anyhow::Result<()> {
    let encoder = Encoder::new(&cfg.vendor)?;
    let auth = match &cfg.vendor {
        Vendor::SplunkHec { token, .. } => {
            Some(format!("Splunk {}", token.reveal().context("reading the Splunk HEC token")?))
        }
        Vendor::Elasticsearch { auth: Some(EsAuth::Basic { username, password }), .. } => {
            let pw = password.reveal().context("reading the Elasticsearch password")?;
            Some(format!("Basic {}", base64(format!("{username}:{pw}").as_bytes())))
        }
        Vendor::Elasticsearch { auth: Some(EsAuth::ApiKey(key)), .. } => {
            Some(format!("ApiKey {}", key.reveal().context("reading the Elasticsearch API key")?))
        }
        Vendor::Elasticsearch { auth: None, .. } => None,
        Vendor::Syslog { .. } | Vendor::Kafka(_) => anyhow::bail!("not an HTTP sink"),
    };
    if auth.as_ref().is_some_and(|a| a.contains(['\r', '\n'])) {
        anyhow::bail!("the credential of sink `{}` holds a line break", cfg.name);
    }
    let roots = if cfg.url.starts_with("https://") { roots(cfg.tls_ca.as_deref())? } else { RootCerts::WebPki };
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(cfg.timeout))
        .max_redirects(0)
        .user_agent(format!("guard/{}", env!("CARGO_PKG_VERSION")))
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .build();
    let mut sender = Sender {
        cfg: cfg.clone(),
        agent: config.into(),
        auth,
        encoder,
        reader,
        rng: u64::from(std::process::id()) ^ (crate::sessions::now_ms() << 16) | 1,
        failing_since: None,
    };
    std::thread::Builder::new()
        .name(format!("sink-{}", cfg.name).chars().filter(char::is_ascii_graphic).take(15).collect())
        .spawn(move || sender.run())
        .context("starting the sink thread")?;
    Ok(())
}

/// The trusted CAs (see `tls`), or Mozilla's roots when there are none at all.
fn roots(tls_ca: Option<&Path>) -> anyhow::Result<RootCerts> {
    let certs = super::tls::trusted(tls_ca)?;
    Ok(if certs.is_empty() { RootCerts::WebPki } else { RootCerts::new_with_certs(&certs) })
}

/// Standard base64 with padding (for HTTP Basic authentication).
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Turns verdict lines into the vendor's wire format.
enum Encoder {
    /// `"host":..,"source":..,"sourcetype":..[,"index":..],` : the fields every event shares.
    Hec { fields: String },
    /// The `_index`, as JSON.
    Es { index: String },
}

impl Encoder {
    fn new(vendor: &Vendor) -> anyhow::Result<Self> {
        let js = |s: &str| serde_json::to_string(s).expect("a string serializes");
        Ok(match vendor {
            Vendor::SplunkHec { index, source, sourcetype, .. } => {
                let mut fields = format!("\"host\":{},\"source\":{},\"sourcetype\":{},", js(crate::verdict::hostname()), js(source), js(sourcetype));
                if let Some(i) = index {
                    fields.push_str(&format!("\"index\":{},", js(i)));
                }
                Self::Hec { fields }
            }
            Vendor::Elasticsearch { index, .. } => Self::Es { index: js(index) },
            Vendor::Syslog { .. } | Vendor::Kafka(_) => anyhow::bail!("not an HTTP sink"),
        })
    }

    /// One record's bytes in the request body; an error for a record that is not a JSON object.
    fn encode(&self, line: &str, marks: Option<&crate::verdict::Marks>) -> Result<Vec<u8>, String> {
        match self {
            Self::Hec { fields } => {
                // Only `time` is needed: read it, not the whole tree.
                let (object, [time]) = super::fields::marked(line, marks, [crate::verdict::Mark::Time]).map_err(|e| format!("not JSON: {e}"))?;
                if !object {
                    return Err("not a JSON object".into());
                }
                let time_ms = time.as_ref().and_then(Value::as_u64).unwrap_or_else(crate::sessions::now_ms);
                let mut out = Vec::with_capacity(line.len() + fields.len() + 40);
                write!(out, "{{\"time\":{}.{:03},{fields}\"event\":{line}}}", time_ms / 1000, time_ms % 1000).expect("writing to a Vec");
                Ok(out)
            }
            Self::Es { index } => {
                let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
                let Value::Object(_) = &v else { return Err("not a JSON object".into()) };
                let time_ms = v["time"].as_u64().unwrap_or_else(crate::sessions::now_ms);
                let id = v.pointer("/metadata/sequence").and_then(Value::as_u64);
                let doc = es_document(&v, time_ms);
                let mut out = Vec::with_capacity(line.len() + 100);
                match id {
                    Some(id) => writeln!(out, "{{\"create\":{{\"_index\":{index},\"_id\":{}}}}}", serde_json::to_string(&format!("{}-{id}", crate::verdict::hostname())).expect("a string serializes")),
                    None => writeln!(out, "{{\"create\":{{\"_index\":{index}}}}}"),
                }
                .expect("writing to a Vec");
                serde_json::to_writer(&mut out, &doc).expect("a Value serializes");
                out.push(b'\n');
                Ok(out)
            }
        }
    }
}

/// One line as a Splunk HEC event and as an Elasticsearch `_bulk` item.
#[cfg(test)]
pub(super) fn bench_encode(line: &str, marks: Option<&crate::verdict::Marks>, es: bool) -> (Vec<u8>, Vec<u8>) {
    let hec = Encoder::Hec { fields: "\"host\":\"h\",".into() }.encode(line, marks).unwrap_or_default();
    let es = if es { Encoder::Es { index: "\"guard\"".into() }.encode(line, marks).unwrap_or_default() } else { vec![] };
    (hec, es)
}

/// The Elasticsearch document of a verdict: its ECS projection (see `crate::ecs`), which has
/// the `@timestamp` data streams require.
fn es_document(v: &Value, time_ms: u64) -> Value {
    // A verdict is projected; anything else (the audit log's checkpoint witness) goes as it is.
    let mut doc = if v.get("class_uid").is_some() { crate::ecs::project(v) } else { v.clone() };
    if !doc.is_object() {
        doc = v.clone();
    }
    if doc.get("@timestamp").is_none() {
        doc["@timestamp"] = Value::String(crate::time::utc(time_ms));
    }
    doc
}


/// One encoded record of a batch.
struct Item {
    /// Its index in the batch.
    idx: usize,
    bytes: Vec<u8>,
}

/// What the sink said to one request.
#[derive(Debug, PartialEq)]
enum Reply {
    /// It has every item.
    Ok,
    /// Try the whole request again later (after `after`, when the sink said).
    Later { after: Option<Duration>, why: String },
    /// The request was refused for its content: halve it (a single item is dropped).
    Split { why: String },
    /// Per item, in order.
    Items(Vec<Fate>),
}

#[derive(Debug, PartialEq)]
enum Fate {
    Delivered,
    Rejected(String),
    /// Send again after a backoff.
    Again,
    /// Send again right away (HEC: the events after an invalid one).
    Next,
}

struct Sender {
    cfg: NetworkSink,
    agent: ureq::Agent,
    /// The `Authorization` header's value. Never logged.
    auth: Option<String>,
    encoder: Encoder,
    reader: Reader,
    rng: u64,
    /// When the current run of failed tries began, and how many.
    failing_since: Option<(Instant, u64)>,
}

impl Sender {
    fn run(&mut self) {
        let c = &self.cfg;
        let (events, bytes, wait) = (c.batch_max_events, c.batch_max_bytes, c.batch_max_wait);
        while let Some(batch) = self.reader.next_batch(events, bytes, wait) {
            let (resolved, interrupted) = self.deliver(&batch);
            self.reader.ack(&batch, resolved);
            if interrupted {
                break;
            }
        }
    }

    /// Sends one batch until every record is delivered or rejected for good. Returns how many
    /// records from its start are done with, and whether shutdown interrupted it.
    fn deliver(&mut self, batch: &Batch) -> (usize, bool) {
        let mut done = vec![false; batch.records.len()];
        let mut items = Vec::with_capacity(batch.records.len());
        let mut rejected = 0;
        for (idx, r) in batch.records.iter().enumerate() {
            match self.encoder.encode(&r.line, r.marks.as_ref()) {
                Ok(bytes) => items.push(Item { idx, bytes }),
                Err(e) => {
                    self.reject(&mut rejected, &format!("a spooled record is unusable ({e})"));
                    done[idx] = true;
                }
            }
        }
        let mut queue: VecDeque<Vec<Item>> = VecDeque::new();
        if !items.is_empty() {
            queue.push_back(items);
        }
        let mut backoff = BACKOFF_START;
        let prefix = |done: &[bool]| done.iter().take_while(|d| **d).count();
        while let Some(group) = queue.pop_front() {
            // The spool was full and dropped this batch's segment meanwhile: these are the
            // oldest verdicts, already counted as dropped. Sending them now would leave a gap
            // before the newer ones.
            if !self.reader.is_current(batch) {
                return (prefix(&done), false);
            }
            let reply = self.send(&group);
            let mut wait = None;
            match reply {
                Reply::Ok => {
                    self.recovered();
                    backoff = BACKOFF_START;
                    let n = group.len() as u64;
                    self.reader.update(|s| {
                        s.sent += n;
                        s.healthy = true;
                    });
                    group.iter().for_each(|i| done[i.idx] = true);
                }
                Reply::Later { after, why } => {
                    self.failed_try(&why);
                    wait = Some(after.unwrap_or_else(|| self.jitter(backoff)));
                    backoff = (backoff * 2).min(self.cfg.backoff_max);
                    queue.push_front(group);
                }
                Reply::Split { why } => {
                    self.recovered();
                    if group.len() == 1 {
                        self.reject(&mut rejected, &why);
                        done[group[0].idx] = true;
                    } else {
                        let mut first = group;
                        let second = first.split_off(first.len() / 2);
                        queue.push_front(second);
                        queue.push_front(first);
                    }
                }
                Reply::Items(fates) => {
                    self.recovered();
                    let (mut again, mut sent, mut later) = (Vec::new(), 0, false);
                    for (item, fate) in group.into_iter().zip(fates) {
                        match fate {
                            Fate::Delivered => {
                                sent += 1;
                                done[item.idx] = true;
                            }
                            Fate::Rejected(why) => {
                                self.reject(&mut rejected, &why);
                                done[item.idx] = true;
                            }
                            Fate::Again => {
                                later = true;
                                again.push(item);
                            }
                            Fate::Next => again.push(item),
                        }
                    }
                    self.reader.update(|s| {
                        s.sent += sent;
                        s.healthy = true;
                    });
                    if !again.is_empty() {
                        queue.push_front(again);
                    }
                    if later {
                        wait = Some(self.jitter(backoff));
                        backoff = (backoff * 2).min(self.cfg.backoff_max);
                    }
                }
            }
            if let Some(d) = wait {
                // At shutdown, a sink that is not taking verdicts is not waited for: what is
                // left stays spooled for the next start.
                if self.reader.stopping() || !self.reader.pause(d) {
                    return (prefix(&done), true);
                }
            }
        }
        if rejected > LOG_REJECTS {
            tracing::warn!(sink = %self.cfg.name, rejected, "verdicts rejected by the sink (the first {LOG_REJECTS} logged)");
        }
        (prefix(&done), false)
    }

    fn reject(&mut self, count: &mut usize, why: &str) {
        *count += 1;
        if *count <= LOG_REJECTS {
            tracing::warn!(sink = %self.cfg.name, reason = %why, "a verdict was rejected for good; dropped");
        }
        self.reader.update(|s| s.failed += 1);
    }

    fn failed_try(&mut self, why: &str) {
        self.reader.update(|s| s.healthy = false);
        match &mut self.failing_since {
            Some((_, n)) => {
                *n += 1;
                tracing::debug!(sink = %self.cfg.name, error = %why, tries = *n, "delivery failed; will try again");
            }
            None => {
                tracing::warn!(sink = %self.cfg.name, error = %why, "delivery failed; verdicts are spooled and will be tried again");
                self.failing_since = Some((Instant::now(), 1));
            }
        }
    }

    fn recovered(&mut self) {
        if let Some((since, tries)) = self.failing_since.take() {
            tracing::info!(sink = %self.cfg.name, failed_tries = tries, down_for_s = since.elapsed().as_secs(), "delivering again");
        }
    }

    /// `d` ±25%.
    fn jitter(&mut self, d: Duration) -> Duration {
        // xorshift64: spreads the retries of many daemons; nothing secret.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let f = 0.75 + (self.rng % 1000) as f64 / 2000.0;
        d.mul_f64(f)
    }

    /// One request with `items`.
    fn send(&self, items: &[Item]) -> Reply {
        let raw_len: usize = items.iter().map(|i| i.bytes.len()).sum();
        let body = if self.cfg.gzip {
            // Each item straight into the compressor: no uncompressed copy of the body.
            let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(raw_len / 4), flate2::Compression::fast());
            let written = items.iter().try_for_each(|i| gz.write_all(&i.bytes));
            match written.and_then(|()| gz.finish()) {
                Ok(z) => z,
                Err(e) => return Reply::Later { after: None, why: format!("gzip: {e}") },
            }
        } else {
            let mut body = Vec::with_capacity(raw_len);
            for i in items {
                body.extend_from_slice(&i.bytes);
            }
            body
        };
        let content_type = match self.encoder {
            Encoder::Hec { .. } => "application/json",
            Encoder::Es { .. } => "application/x-ndjson",
        };
        let mut req = self.agent.post(&self.cfg.url).header("Content-Type", content_type);
        if self.cfg.gzip {
            req = req.header("Content-Encoding", "gzip");
        }
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        let mut resp = match req.send(&body[..]) {
            Ok(r) => r,
            Err(e) => return Reply::Later { after: None, why: e.to_string() },
        };
        let status = resp.status().as_u16();
        let after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(RETRY_AFTER_MAX));
        let text = match resp.body_mut().with_config().limit(RESPONSE_MAX).lossy_utf8(true).read_to_string() {
            Ok(t) => t,
            // Success without a readable answer: Elasticsearch's items are unknown, so all go
            // again (create makes that harmless); HEC's 200 needs no body.
            Err(e) if status == 200 && matches!(self.encoder, Encoder::Es { .. }) => return Reply::Later { after: None, why: format!("reading the reply: {e}") },
            Err(_) => String::new(),
        };
        match self.encoder {
            Encoder::Hec { .. } => hec_reply(status, &text, after, items.len()),
            Encoder::Es { .. } => es_reply(status, &text, after, items.len()),
        }
    }
}

/// A short, single-line excerpt of a response body for the log.
fn excerpt(text: &str) -> String {
    let t: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
    if t.is_empty() { "(no body)".into() } else { t }
}

/// Statuses shared by both vendors; `None` for the ones each judges itself.
fn common_reply(status: u16, text: &str, after: Option<Duration>) -> Option<Reply> {
    let why = || format!("HTTP {status}: {}", excerpt(text));
    match status {
        408 | 429 | 500..=599 => Some(Reply::Later { after, why: why() }),
        401 | 403 => Some(Reply::Later { after, why: format!("{} (check the credential)", why()) }),
        404 => Some(Reply::Later { after, why: format!("{} (check the url)", why()) }),
        413 => Some(Reply::Split { why: why() }),
        _ => None,
    }
}

fn hec_reply(status: u16, text: &str, after: Option<Duration>, n: usize) -> Reply {
    if (200..300).contains(&status) {
        return Reply::Ok;
    }
    if let Some(r) = common_reply(status, text, after) {
        return r;
    }
    let why = format!("HTTP {status}: {}", excerpt(text));
    // HEC's 400s that are settings, not content: 7 incorrect index, 10/11 data channel. Keep
    // the verdicts until an admin fixes it (the spool bound decides what is lost).
    let code = serde_json::from_str::<Value>(text).ok().and_then(|v| v["code"].as_u64());
    if status == 400 && matches!(code, Some(7 | 10 | 11)) {
        return Reply::Later { after, why: format!("{why} (check the sink's index and HEC settings)") };
    }
    if status == 400 {
        // The events before the invalid one were indexed.
        let bad = serde_json::from_str::<Value>(text).ok().and_then(|v| v["invalid-event-number"].as_u64()).map(|i| i as usize);
        if let Some(bad) = bad.filter(|b| *b < n) {
            let mut fates: Vec<Fate> = (0..n).map(|_| Fate::Next).collect();
            fates[..bad].iter_mut().for_each(|f| *f = Fate::Delivered);
            fates[bad] = Fate::Rejected(why);
            return Reply::Items(fates);
        }
        return Reply::Split { why };
    }
    // Another status (a redirect, 405, ...) is a setting to fix: keep the verdicts.
    Reply::Later { after, why }
}

fn es_reply(status: u16, text: &str, after: Option<Duration>, n: usize) -> Reply {
    if let Some(r) = common_reply(status, text, after) {
        return r;
    }
    let why = format!("HTTP {status}: {}", excerpt(text));
    match status {
        200 | 201 => {}
        400 => return Reply::Split { why },
        _ => return Reply::Later { after, why },
    }
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return Reply::Later { after: None, why: format!("the _bulk reply is not JSON: {}", excerpt(text)) };
    };
    if v["errors"] == Value::Bool(false) {
        return Reply::Ok;
    }
    let items = v["items"].as_array().map(Vec::as_slice).unwrap_or_default();
    if items.len() != n {
        return Reply::Later { after: None, why: format!("the _bulk reply has {} items for {n} documents", items.len()) };
    }
    Reply::Items(
        items
            .iter()
            .map(|item| {
                // One key: the action (`create`).
                let result = item.as_object().and_then(|o| o.values().next()).unwrap_or(&Value::Null);
                match result["status"].as_u64().unwrap_or(0) {
                    200..=299 | 409 => Fate::Delivered,
                    429 | 500..=599 | 0 => Fate::Again,
                    s => {
                        let e = &result["error"];
                        Fate::Rejected(format!("item status {s}: {} {}", e["type"].as_str().unwrap_or("?"), e["reason"].as_str().unwrap_or("")))
                    }
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests;
