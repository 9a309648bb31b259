//! The Kafka sink: one thread that reads batches from the sink's spool (see the parent module)
//! and produces them, in order, to a topic with librdkafka (the `rdkafka` binding, linked
//! against the system's `librdkafka`).
//!
//! - **Records**: the verdict's JSON as the value, the host name as the key (so one host's
//!   verdicts stay in one partition, in order), the verdict's `time` as the timestamp.
//! - **Delivery**: an idempotent producer (`enable.idempotence=true`, so `acks=all` and at
//!   most 5 requests in flight) that never times a record out (`message.timeout.ms=0`): while
//!   the brokers are down, librdkafka keeps the batch and sends it again with the same
//!   producer sequence numbers, so the brokers drop any copy they already have. A batch is
//!   acknowledged in the spool only once every record's delivery report says the brokers have
//!   it; meanwhile new verdicts wait in the spool, bounded by `spool_max_bytes` as for the other
//!   network sinks, and across restarts.
//! - **Rejected records**: a record the brokers refuse for its content (too large, invalid) is
//!   dropped and counted as failed; any other error (authorization, an unknown topic, broker
//!   trouble) is tried again after a backoff, and the sink shows as unhealthy until it works.
//! - **Fatal producer errors** (the idempotence state is lost): the producer is made anew and
//!   the undelivered records of the batch go again.
//!
//! What it cannot promise: idempotence holds within one producer session. A batch that
//! reached the brokers just before the daemon stopped or crashed, whose acknowledgement did not
//! arrive, is produced again after the restart by a new producer: consumers that must see each
//! verdict once deduplicate by key and `metadata.sequence` (unique per host), as the
//! Elasticsearch sink does with its document ids.
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use rdkafka::{
    ClientConfig, ClientContext,
    config::RDKafkaLogLevel,
    error::{KafkaError, RDKafkaErrorCode},
    producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext, PurgeConfig},
};
use serde_json::Value;

use super::spool::{Batch, Reader};
use crate::config::{Kafka, NetworkSink, Vendor};

const BACKOFF_START: Duration = Duration::from_millis(250);
/// How long delivery may make no progress, with the client reporting errors, before the sink
/// shows as unhealthy.
const STALL: Duration = Duration::from_millis(500);
/// Records whose rejection is logged one by one, per batch.
const LOG_REJECTS: usize = 5;

/// What librdkafka's callbacks (run inside `poll`, on the sender's thread) tell the sender.
#[derive(Default)]
struct Ctx {
    /// Delivery reports: the record's index in the batch and its outcome.
    reports: Mutex<Vec<(usize, Result<(), KafkaError>)>>,
    /// The client's last error (a broker down, a failed authentication), cleared by progress.
    last_error: Mutex<Option<String>>,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        // Errors also come through `error` and are said once per run of failures; the
        // library's own lines are for debugging.
        tracing::debug!(target: "librdkafka", ?level, fac, "{message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", %error, reason, "client error");
        *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(format!("{error}: {reason}"));
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, idx: usize) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        };
        self.reports.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((idx, outcome));
    }
}

type Producer = BaseProducer<Ctx>;

/// The librdkafka settings of a sink. Reads the SASL password, and checks that the TLS files
/// can be read (a settings error at start, like the other sinks' credentials).
fn client_config(cfg: &NetworkSink, k: &Kafka) -> anyhow::Result<ClientConfig> {
    let ms = |d: Duration| d.as_millis().clamp(1, i32::MAX as u128).to_string();
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", k.brokers.join(","))
        .set("client.id", format!("guard/{}", env!("CARGO_PKG_VERSION")))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        // Never give a record up: the spool bounds what waits, as for the other sinks.
        .set("message.timeout.ms", "0")
        .set("linger.ms", "5")
        .set("compression.codec", k.compression)
        .set("request.timeout.ms", ms(cfg.timeout))
        .set("reconnect.backoff.max.ms", ms(cfg.backoff_max))
        .set("security.protocol", k.security_protocol);
    let readable = |what: &str, p: &std::path::Path| -> anyhow::Result<String> {
        std::fs::File::open(p).with_context(|| format!("reading {what} {}", p.display()))?;
        Ok(p.display().to_string())
    };
    if k.tls() {
        if let Some(ca) = &cfg.tls_ca {
            c.set("ssl.ca.location", readable("tls_ca", ca)?);
        }
        if let (Some(cert), Some(key)) = (&k.tls_cert, &k.tls_key) {
            c.set("ssl.certificate.location", readable("tls_cert", cert)?);
            c.set("ssl.key.location", readable("tls_key", key)?);
        }
    }
    if let Some(s) = &k.sasl {
        let password = s.password.reveal().context("reading the Kafka SASL password")?;
        c.set("sasl.mechanisms", s.mechanism).set("sasl.username", &s.username).set("sasl.password", password);
    }
    Ok(c)
}

fn create(config: &ClientConfig) -> anyhow::Result<Producer> {
    config.create_with_context(Ctx::default()).map_err(|e| anyhow::anyhow!("the Kafka producer: {e}"))
}

/// Starts the sender thread of a kafka sink. Fails (a settings error) if the password or a
/// TLS file cannot be read, or librdkafka refuses the settings.
pub fn start(cfg: &NetworkSink, reader: Reader) -> anyhow::Result<()> {
    let Vendor::Kafka(k) = &cfg.vendor else { anyhow::bail!("not a kafka sink") };
    let config = client_config(cfg, k)?;
    let producer = create(&config)?;
    if !k.tls() {
        tracing::warn!(sink = %cfg.name, url = %cfg.url, security_protocol = k.security_protocol, "the sink is not encrypted: verdicts (and any credential) travel in clear");
    }
    let mut sender = Sender {
        name: cfg.name.clone(),
        topic: k.topic.clone(),
        host: crate::verdict::hostname().to_owned(),
        batch: (cfg.batch_max_events, cfg.batch_max_bytes, cfg.batch_max_wait),
        backoff_max: cfg.backoff_max,
        config,
        producer,
        rng: u64::from(std::process::id()) ^ (crate::sessions::now_ms() << 16) | 1,
        failing_since: None,
        reader,
    };
    std::thread::Builder::new()
        .name(format!("sink-{}", cfg.name).chars().filter(char::is_ascii_graphic).take(15).collect())
        .spawn(move || sender.run())
        .context("starting the sink thread")?;
    Ok(())
}

/// A record's timestamp (the verdict's `time`, ms), or why it cannot be sent.
fn check(line: &str, marks: Option<&crate::verdict::Marks>) -> Result<Option<i64>, String> {
    let (object, [time]) = super::fields::marked(line, marks, [crate::verdict::Mark::Time]).map_err(|e| format!("not JSON: {e}"))?;
    if !object {
        return Err("not a JSON object".into());
    }
    Ok(time.as_ref().and_then(Value::as_u64).and_then(|t| i64::try_from(t).ok()))
}

/// Whether the brokers refused a record for its content: sending it again cannot help.
fn for_good(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(code, C::MessageSizeTooLarge | C::InvalidMessage | C::InvalidMessageSize | C::InvalidRecord | C::InvalidTimestamp)
}

fn code(e: &KafkaError) -> Option<RDKafkaErrorCode> {
    e.rdkafka_error_code()
}

struct Sender {
    name: String,
    topic: String,
    host: String,
    batch: (usize, usize, Duration),
    backoff_max: Duration,
    config: ClientConfig,
    producer: Producer,
    rng: u64,
    /// When the current run of failed tries began, and how many.
    failing_since: Option<(Instant, u64)>,
    reader: Reader,
}

impl Sender {
    fn run(&mut self) {
        let (events, bytes, wait) = self.batch;
        while let Some(batch) = self.reader.next_batch(events, bytes, wait) {
            let (resolved, interrupted) = self.deliver(&batch);
            self.reader.ack(&batch, resolved);
            if interrupted {
                break;
            }
        }
    }

    fn ctx(&self) -> &Arc<Ctx> {
        self.producer.context()
    }

    /// Produces one batch until every record is delivered or rejected for good. Returns how
    /// many records from its start are done with, and whether shutdown interrupted it.
    fn deliver(&mut self, batch: &Batch) -> (usize, bool) {
        let n = batch.records.len();
        let mut done = vec![false; n];
        let mut stamps = vec![None; n];
        let mut todo: VecDeque<usize> = VecDeque::with_capacity(n);
        let mut rejected = 0;
        for (i, r) in batch.records.iter().enumerate() {
            match check(&r.line, r.marks.as_ref()) {
                Ok(t) => {
                    stamps[i] = t;
                    todo.push_back(i);
                }
                Err(e) => {
                    self.reject(&mut rejected, &format!("a spooled record is unusable ({e})"));
                    done[i] = true;
                }
            }
        }
        let prefix = |done: &[bool]| done.iter().take_while(|d| **d).count();
        let (mut outstanding, mut backoff, mut retry_at) = (0usize, BACKOFF_START, None::<Instant>);
        let mut progress = Instant::now();
        // What the client said while idle (a broker closing an idle connection) is not about
        // this batch.
        if self.failing_since.is_none() {
            *self.ctx().last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
        loop {
            // The full spool dropped this batch's segment: these are the oldest verdicts,
            // already counted as dropped. What has not left yet is not sent.
            if !self.reader.is_current(batch) {
                self.producer.purge(PurgeConfig::default().queue());
                todo.clear();
                if outstanding == 0 {
                    return (prefix(&done), false);
                }
            }
            if retry_at.is_none_or(|t| Instant::now() >= t) {
                retry_at = None;
                while let Some(&i) = todo.front() {
                    let mut rec = BaseRecord::with_opaque_to(&self.topic, i).key(&self.host).payload(&batch.records[i].line);
                    if let Some(t) = stamps[i] {
                        rec = rec.timestamp(t);
                    }
                    match self.producer.send(rec) {
                        Ok(()) => {
                            todo.pop_front();
                            outstanding += 1;
                        }
                        // The local queue is full: the poll below makes room.
                        Err((e, _)) if code(&e) == Some(RDKafkaErrorCode::QueueFull) => break,
                        Err((e, _)) if code(&e).is_some_and(for_good) => {
                            todo.pop_front();
                            self.reject(&mut rejected, &e.to_string());
                            done[i] = true;
                        }
                        Err((e, _)) => {
                            self.failed_try(&e.to_string());
                            retry_at = Some(Instant::now() + self.jitter(backoff));
                            backoff = (backoff * 2).min(self.backoff_max);
                            break;
                        }
                    }
                }
            }
            if outstanding == 0 && todo.is_empty() {
                if rejected > LOG_REJECTS {
                    tracing::warn!(sink = %self.name, rejected, "verdicts rejected by Kafka (the first {LOG_REJECTS} logged)");
                }
                return (prefix(&done), false);
            }
            self.producer.poll(Duration::from_millis(100));
            let reports = std::mem::take(&mut *self.ctx().reports.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
            let mut sent = 0;
            for (i, outcome) in reports {
                outstanding = outstanding.saturating_sub(1);
                match outcome {
                    Ok(()) => {
                        done[i] = true;
                        sent += 1;
                    }
                    Err(e) if code(&e).is_some_and(for_good) => {
                        self.reject(&mut rejected, &e.to_string());
                        done[i] = true;
                    }
                    // Our own purge (an abandoned batch): not sent, not counted.
                    Err(e) if matches!(code(&e), Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)) => {}
                    Err(e) => {
                        self.failed_try(&e.to_string());
                        // Back in order: the next try sends it before anything after it.
                        let at = todo.iter().position(|j| *j > i).unwrap_or(todo.len());
                        todo.insert(at, i);
                        retry_at = Some(Instant::now() + self.jitter(backoff));
                        backoff = (backoff * 2).min(self.backoff_max);
                    }
                }
            }
            if sent > 0 {
                progress = Instant::now();
                backoff = BACKOFF_START;
                *self.ctx().last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                self.recovered();
                self.reader.update(|s| {
                    s.sent += sent;
                    s.healthy = true;
                });
            }
            if let Some((code, why)) = self.producer.client().fatal_error() {
                tracing::error!(sink = %self.name, ?code, reason = %why, "the Kafka producer failed for good; starting a new one (the batch's undelivered verdicts go again)");
                match create(&self.config) {
                    Ok(p) => {
                        // Dropping the old one purges what it held; its reports are stale.
                        self.producer = p;
                        outstanding = 0;
                        todo = (0..n).filter(|i| !done[*i]).collect();
                        self.failed_try(&why);
                    }
                    Err(e) => self.failed_try(&format!("{e:#}")),
                }
                retry_at = Some(Instant::now() + self.jitter(backoff));
                backoff = (backoff * 2).min(self.backoff_max);
            }
            // The brokers are not taking the records, and the client says why.
            if progress.elapsed() >= STALL {
                let err = self.ctx().last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
                if let Some(e) = err {
                    self.failed_try(&e);
                }
            }
            // At shutdown, brokers that are not taking verdicts are not waited for: what is
            // left stays spooled for the next start.
            if self.reader.stopping() && (self.failing_since.is_some() || progress.elapsed() >= STALL) {
                return (prefix(&done), true);
            }
        }
    }

    fn reject(&mut self, count: &mut usize, why: &str) {
        *count += 1;
        if *count <= LOG_REJECTS {
            tracing::warn!(sink = %self.name, reason = %why, "a verdict was rejected for good; dropped");
        }
        self.reader.update(|s| s.failed += 1);
    }

    fn failed_try(&mut self, why: &str) {
        self.reader.update(|s| s.healthy = false);
        match &mut self.failing_since {
            Some((_, n)) => {
                *n += 1;
                tracing::debug!(sink = %self.name, error = %why, tries = *n, "delivery failed; will try again");
            }
            None => {
                tracing::warn!(sink = %self.name, error = %why, "delivery failed; verdicts are spooled and will be tried again");
                self.failing_since = Some((Instant::now(), 1));
            }
        }
    }

    fn recovered(&mut self) {
        if let Some((since, tries)) = self.failing_since.take() {
            tracing::info!(sink = %self.name, failed_tries = tries, down_for_s = since.elapsed().as_secs(), "delivering again");
        }
    }

    /// `d` ±25%.
    fn jitter(&mut self, d: Duration) -> Duration {
        // xorshift64: spreads the retries of many daemons; nothing secret.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        d.mul_f64(0.75 + (self.rng % 1000) as f64 / 2000.0)
    }
}

#[cfg(test)]
mod tests;
