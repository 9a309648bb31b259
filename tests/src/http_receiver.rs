//! A local stand-in for Splunk HEC and Elasticsearch `_bulk`, for the sink tests: an HTTP/1.1
//! server (plain, or TLS with a certificate from a CA it makes itself) on 127.0.0.1 that checks
//! every request against the wire format each vendor documents, records what it accepted, and
//! can be switched down (connections refused, 503 or 429 with `Retry-After`, or hanging) and up.
//!
//! What it checks, per request (a failed check is recorded as a violation, which the tests
//! assert there are none of, and answered as the vendor would):
//! - both: `POST`, `Content-Encoding: gzip` exactly when the sink gzips (then the body must
//!   gunzip), a `Content-Length` body;
//! - HEC: path `/services/collector/event`, `Authorization: Splunk <token>`, a body of JSON
//!   objects one after another (no array, no commas), each with an `event` object, a numeric
//!   `time` in seconds (the verdict's `time` / 1000, milliseconds kept), `host`, `source` and
//!   `sourcetype` strings and nothing else but `index`/`fields`. Answer: 200
//!   `{"text":"Success","code":0}`; 400 with `invalid-event-number` for a bad event.
//! - Elasticsearch: path `/_bulk`, `Content-Type: application/x-ndjson`, the expected
//!   `Authorization`, a body of newline-terminated lines in pairs: an action with the one key
//!   `create` naming the expected `_index` and a `HOST-SEQUENCE` `_id`, then a document object with an
//!   `@timestamp`. Answer: the `_bulk` reply, an item per action: 201 `created`, 409
//!   `version_conflict_engine_exception` for an `_id` it already has, or (when told to) 429.
use std::{
    collections::HashSet,
    io::{BufRead as _, BufReader, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use serde_json::{Value, json};

/// Which vendor to be.
#[derive(Debug, Clone)]
pub enum Vendor {
    Hec { token: String, sourcetype: String },
    Es { index: String, authorization: Option<String> },
}

/// How the receiver treats requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Up,
    /// Nothing listens: connections are refused, open ones closed.
    Refuse,
    /// `503` with `Retry-After: 1`.
    Unavailable,
    /// `429` with `Retry-After: 1`.
    TooMany,
    /// Reads requests and never answers.
    Hang,
}

/// What the receiver got.
#[derive(Debug, Default)]
pub struct Got {
    /// Accepted verdicts, in the order they arrived (HEC: each event's `event`; ES: each
    /// document created, with its `_id` as `_id`). HEC keeps repeats; ES creates an id once.
    pub events: Vec<Value>,
    pub violations: Vec<String>,
    /// Requests answered while up.
    pub requests: u64,
    /// Requests answered 503 or 429 while switched to that.
    pub turned_away: u64,
    /// Requests left unanswered (`Mode::Hang`).
    pub hung: u64,
    /// ES: creates refused because the id existed (409).
    pub conflicts: u64,
    /// ES: the next this many items get 429.
    pub reject_items: usize,
    /// ES: items answered 429.
    pub rejected_items: u64,
    ids: HashSet<String>,
}

struct Inner {
    vendor: Vendor,
    gzip: bool,
    tls: Option<Arc<rustls::ServerConfig>>,
    mode: Mutex<Mode>,
    got: Mutex<Got>,
    stop: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
}

pub struct Receiver {
    inner: Arc<Inner>,
    port: u16,
    /// The CA that signed the TLS certificate (PEM), when TLS is on.
    pub ca_pem: Option<String>,
    acceptor: Option<thread::JoinHandle<()>>,
}

trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

impl Receiver {
    /// Starts listening on 127.0.0.1 (a free port). `gzip`: whether bodies must be gzip'd.
    pub fn start(vendor: Vendor, gzip: bool, tls: bool) -> Self {
        let (tls, ca_pem) = if tls {
            let (config, ca) = tls_config();
            (Some(Arc::new(config)), Some(ca))
        } else {
            (None, None)
        };
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(Inner {
            vendor,
            gzip,
            tls,
            mode: Mutex::new(Mode::Up),
            got: Mutex::new(Got::default()),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let i = Arc::clone(&inner);
        let acceptor = thread::spawn(move || accept_loop(&i, listener, port));
        Self { inner, port, ca_pem, acceptor: Some(acceptor) }
    }

    /// `https://127.0.0.1:PORT` (or `http://`).
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", if self.inner.tls.is_some() { "https" } else { "http" }, self.port)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.inner.mode.lock().unwrap() = mode;
        if mode == Mode::Refuse {
            // Open keep-alive connections are cut too.
            for c in self.inner.conns.lock().unwrap().drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }

    /// Reads what was received so far.
    pub fn with<T>(&self, f: impl FnOnce(&mut Got) -> T) -> T {
        f(&mut self.inner.got.lock().unwrap())
    }

    /// `metadata.sequence` of each verdict received, in arrival order (ES: the `_id`).
    pub fn sequences(&self) -> Vec<u64> {
        self.with(|g| {
            g.events
                .iter()
                .map(|e| {
                    e.pointer("/metadata/sequence")
                        .and_then(Value::as_u64)
                        .or_else(|| e["_id"].as_str().and_then(|s| s.rsplit('-').next()?.parse().ok()))
                        .unwrap_or(0)
                })
                .collect()
        })
    }

    pub fn violations(&self) -> Vec<String> {
        self.with(|g| g.violations.clone())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        for c in self.inner.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// A CA made here, and a certificate it signed for 127.0.0.1 and localhost.
fn tls_config() -> (rustls::ServerConfig, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "guard test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "guard test receiver");
    let cert = params.signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca_cert.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .unwrap();
    (config, ca_cert.pem())
}

fn accept_loop(inner: &Arc<Inner>, first: TcpListener, port: u16) {
    first.set_nonblocking(true).unwrap();
    let mut listener = Some(first);
    while !inner.stop.load(Ordering::SeqCst) {
        let mode = *inner.mode.lock().unwrap();
        if mode == Mode::Refuse {
            listener = None;
            thread::sleep(Duration::from_millis(5));
            continue;
        }
        if listener.is_none() {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => {
                    l.set_nonblocking(true).unwrap();
                    listener = Some(l);
                }
                Err(_) => {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        match listener.as_ref().unwrap().accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                inner.conns.lock().unwrap().push(stream.try_clone().unwrap());
                let i = Arc::clone(inner);
                thread::spawn(move || {
                    let conn: Box<dyn Conn> = match &i.tls {
                        Some(c) => Box::new(rustls::StreamOwned::new(rustls::ServerConnection::new(Arc::clone(c)).unwrap(), stream)),
                        None => Box::new(stream),
                    };
                    serve(&i, conn);
                });
            }
            Err(_) => thread::sleep(Duration::from_millis(2)),
        }
    }
}

struct Request {
    method: String,
    path: String,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request; `None` at a clean end of the connection.
/// Why a request could not be read: the connection failed (`Io`), or the bytes are not HTTP.
enum ReadError {
    Io,
    Protocol(String),
}

impl From<std::io::Error> for ReadError {
    fn from(_: std::io::Error) -> Self {
        Self::Io
    }
}

fn read_request(r: &mut BufReader<Box<dyn Conn>>) -> Result<Option<Request>, ReadError> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.trim_end().split(' ');
    let (method, path, version) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if version != "HTTP/1.1" {
        return Err(ReadError::Protocol(format!("bad request line {line:?}")));
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':').ok_or_else(|| ReadError::Protocol(format!("bad header {h:?}")))?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        if headers.len() > 100 {
            return Err(ReadError::Protocol("too many headers".into()));
        }
    }
    let mut req = Request { method: method.to_owned(), path: path.to_owned(), headers, body: Vec::new() };
    if req.header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16).map_err(|_| ReadError::Protocol(format!("bad chunk size {size:?}")))?;
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            req.body.extend_from_slice(&chunk[..n]);
        }
    } else {
        let len: usize = req.header("content-length").unwrap_or("0").parse().map_err(|_| ReadError::Protocol("bad content-length".to_owned()))?;
        if len > 256 << 20 {
            return Err(ReadError::Protocol(format!("body of {len} bytes")));
        }
        req.body = vec![0u8; len];
        r.read_exact(&mut req.body)?;
    }
    Ok(Some(req))
}

fn serve(inner: &Inner, conn: Box<dyn Conn>) {
    let mut r = BufReader::new(conn);
    loop {
        let req = match read_request(&mut r) {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(ReadError::Io) => return,
            Err(ReadError::Protocol(e)) => {
                inner.got.lock().unwrap().violations.push(format!("not an HTTP/1.1 request: {e}"));
                return;
            }
        };
        let mode = *inner.mode.lock().unwrap();
        match mode {
            Mode::Refuse => return,
            Mode::Hang => {
                inner.got.lock().unwrap().hung += 1;
                while !inner.stop.load(Ordering::SeqCst) && *inner.mode.lock().unwrap() == Mode::Hang {
                    thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            Mode::Unavailable | Mode::TooMany => inner.got.lock().unwrap().turned_away += 1,
            Mode::Up => {}
        }
        let (status, extra, body) = match mode {
            Mode::Refuse | Mode::Hang => return,
            Mode::Unavailable => (503, "Retry-After: 1\r\n", json!({"text": "Server is busy", "code": 9}).to_string()),
            Mode::TooMany => (429, "Retry-After: 1\r\n", json!({"error": {"type": "es_rejected_execution_exception"}, "status": 429}).to_string()),
            Mode::Up => {
                let (status, body) = handle(inner, &req);
                (status, "", body)
            }
        };
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            429 => "Too Many Requests",
            _ => "Service Unavailable",
        };
        let head = format!("HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n", body.len());
        let w = r.get_mut();
        if w.write_all(head.as_bytes()).and_then(|()| w.write_all(body.as_bytes())).and_then(|()| w.flush()).is_err() {
            return;
        }
    }
}

/// Checks one request and answers it: (status, body).
fn handle(inner: &Inner, req: &Request) -> (u16, String) {
    let mut got = inner.got.lock().unwrap();
    got.requests += 1;
    let mut bad = Vec::new();
    if req.method != "POST" {
        bad.push(format!("method {} (not POST)", req.method));
    }
    let gzipped = req.header("content-encoding") == Some("gzip");
    if gzipped != inner.gzip {
        bad.push(format!("Content-Encoding {:?} (gzip expected: {})", req.header("content-encoding"), inner.gzip));
    }
    let body = if gzipped {
        let mut out = Vec::new();
        match flate2::read::MultiGzDecoder::new(&req.body[..]).read_to_end(&mut out) {
            Ok(_) => out,
            Err(e) => {
                bad.push(format!("the body does not gunzip: {e}"));
                Vec::new()
            }
        }
    } else {
        req.body.clone()
    };
    let (status, reply) = match &inner.vendor {
        Vendor::Hec { token, sourcetype } => hec(&mut got, &mut bad, req, &body, token, sourcetype),
        Vendor::Es { index, authorization } => es(&mut got, &mut bad, req, &body, index, authorization.as_deref()),
    };
    got.violations.extend(bad);
    (status, reply)
}

fn hec(got: &mut Got, bad: &mut Vec<String>, req: &Request, body: &[u8], token: &str, sourcetype: &str) -> (u16, String) {
    if req.path != "/services/collector/event" {
        bad.push(format!("HEC path {}", req.path));
        return (404, json!({"text": "The requested URL was not found on this server.", "code": 404}).to_string());
    }
    if req.header("authorization") != Some(&format!("Splunk {token}")) {
        bad.push("HEC Authorization is not `Splunk <token>`".into());
        return (401, json!({"text": "Invalid token", "code": 4}).to_string());
    }
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        bad.push("an empty HEC body".into());
        return (400, json!({"text": "No data", "code": 5}).to_string());
    }
    if !trimmed.starts_with('{') {
        bad.push(format!("a HEC body must be event objects one after another, not {:?}", &trimmed[..trimmed.len().min(20)]));
    }
    let mut accepted = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
    let mut n = 0;
    loop {
        // Between two objects: nothing but whitespace (no commas).
        let item = match stream.next() {
            None => break,
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                bad.push(format!("HEC event {n} is not JSON: {e}"));
                return (400, json!({"text": "Invalid data format", "code": 6, "invalid-event-number": n}).to_string());
            }
        };
        let problem = hec_event_problem(&item, sourcetype);
        if let Some(p) = problem {
            bad.push(format!("HEC event {n}: {p}"));
            // The events before it were indexed, as Splunk does.
            got.events.extend(accepted);
            return (400, json!({"text": "Invalid data format", "code": 6, "invalid-event-number": n}).to_string());
        }
        accepted.push(item["event"].clone());
        n += 1;
    }
    got.events.extend(accepted);
    (200, json!({"text": "Success", "code": 0}).to_string())
}

fn hec_event_problem(item: &Value, sourcetype: &str) -> Option<String> {
    let Some(obj) = item.as_object() else { return Some("not an object".into()) };
    if let Some(k) = obj.keys().find(|k| !["time", "host", "source", "sourcetype", "index", "event", "fields"].contains(&k.as_str())) {
        return Some(format!("unknown key `{k}`"));
    }
    let event = obj.get("event").filter(|e| e.as_object().is_some_and(|o| !o.is_empty()));
    let Some(event) = event else { return Some("no `event` object".into()) };
    let time = obj.get("time").and_then(Value::as_f64);
    let want = event["time"].as_u64().map(|ms| ms as f64 / 1000.0);
    match (time, want) {
        (Some(t), Some(w)) if (t - w).abs() < 0.0005 => {}
        _ => return Some(format!("`time` {:?} is not the verdict's time in seconds {want:?}", obj.get("time"))),
    }
    for key in ["host", "source"] {
        if obj.get(key).and_then(Value::as_str).is_none_or(str::is_empty) {
            return Some(format!("no `{key}`"));
        }
    }
    if obj.get("sourcetype").and_then(Value::as_str) != Some(sourcetype) {
        return Some(format!("sourcetype {:?}, expected {sourcetype}", obj.get("sourcetype")));
    }
    None
}

fn es(got: &mut Got, bad: &mut Vec<String>, req: &Request, body: &[u8], index: &str, authorization: Option<&str>) -> (u16, String) {
    if req.path != "/_bulk" {
        bad.push(format!("_bulk path {}", req.path));
        return (404, json!({"error": "no handler", "status": 404}).to_string());
    }
    if req.header("authorization") != authorization {
        bad.push("_bulk Authorization is not the expected one".into());
        return (401, json!({"error": {"type": "security_exception"}, "status": 401}).to_string());
    }
    if req.header("content-type") != Some("application/x-ndjson") {
        bad.push(format!("_bulk Content-Type {:?}", req.header("content-type")));
    }
    let text = String::from_utf8_lossy(body);
    let parse_error = |bad: &mut Vec<String>, why: String| {
        bad.push(why.clone());
        (400, json!({"error": {"type": "illegal_argument_exception", "reason": why}, "status": 400}).to_string())
    };
    if !text.ends_with('\n') {
        return parse_error(bad, "the _bulk body does not end with a newline".into());
    }
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    if lines.is_empty() || !lines.len().is_multiple_of(2) {
        return parse_error(bad, format!("the _bulk body has {} lines (action/document pairs expected)", lines.len()));
    }
    let mut items = Vec::new();
    let mut errors = false;
    for pair in lines.chunks(2) {
        let action: Value = match serde_json::from_str(pair[0]) {
            Ok(v) => v,
            Err(e) => return parse_error(bad, format!("a _bulk action is not JSON: {e}")),
        };
        let create = action.as_object().filter(|o| o.len() == 1).and_then(|o| o.get("create"));
        let Some(create) = create else { return parse_error(bad, format!("a _bulk action is not `create`: {}", pair[0])) };
        // guard's ids are HOST-SEQUENCE, so hosts sharing an index never collide.
        let id = create["_id"].as_str().filter(|s| s.rsplit_once('-').is_some_and(|(h, n)| !h.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))).map(str::to_owned);
        let Some(id) = id else { return parse_error(bad, format!("a _bulk create without a HOST-SEQUENCE `_id`: {}", pair[0])) };
        if create["_index"].as_str() != Some(index) {
            bad.push(format!("_index {} (expected {index})", create["_index"]));
        }
        let mut doc: Value = match serde_json::from_str(pair[1]) {
            Ok(v @ Value::Object(_)) => v,
            _ => return parse_error(bad, format!("a _bulk document is not a JSON object: {}", &pair[1][..pair[1].len().min(80)])),
        };
        if !doc["@timestamp"].is_string() {
            bad.push(format!("document {id} has no @timestamp"));
        }
        let status = if got.reject_items > 0 {
            got.reject_items -= 1;
            got.rejected_items += 1;
            429
        } else if got.ids.contains(&id) {
            got.conflicts += 1;
            409
        } else {
            got.ids.insert(id.clone());
            doc["_id"] = Value::String(id.clone());
            got.events.push(doc);
            201
        };
        errors |= status != 201;
        items.push(match status {
            201 => json!({"create": {"_index": index, "_id": id, "_version": 1, "result": "created", "status": 201}}),
            409 => json!({"create": {"_index": index, "_id": id, "status": 409, "error": {"type": "version_conflict_engine_exception", "reason": format!("[{id}]: version conflict, document already exists")}}}),
            _ => json!({"create": {"_index": index, "_id": id, "status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution"}}}),
        });
    }
    (200, json!({"took": 1, "errors": errors, "items": items}).to_string())
}
