//! The daemon's sockets: JSON requests and responses, one per line.
//!
//! - `/run/guard/guard.sock` (0600, root): `status`, `approve`, `deny`, `reload`, and `tail`,
//!   which turns the connection into a stream of verdict lines (filtered by agent and verdict).
//! - `/run/guard/launch.sock` (0660, root and the `--launch-group`): `launch` only. The daemon
//!   creates the session cgroup and moves the caller (named by `SO_PEERCRED`, never by the
//!   request) into it; the connection stays open for the session's life, and `end` (or closing
//!   it) ends the session.
//!
//! Requests are bounded ([`MAX_REQUEST`] bytes, [`READ_TIMEOUT`] to arrive); anything
//! malformed gets an error response, never a crash or a stalled daemon.
use std::{
    collections::BTreeMap,
    sync::Arc,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream as StdUnixStream},
    path::Path,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader as AsyncBufReader},
    net::{UnixListener, UnixStream},
    sync::{OwnedSemaphorePermit, broadcast, mpsc, oneshot},
};

use crate::{
    sinks::{Feed, TailItem},
    verdict::VERDICT_NAMES,
};

pub const ADMIN_SOCKET: &str = "/run/guard/guard.sock";
pub const LAUNCH_SOCKET: &str = "/run/guard/launch.sock";
pub const MAX_REQUEST: usize = 64 * 1024;
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once per socket; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// `tail` streams at once (they do not count against MAX_CONNECTIONS).
const MAX_TAILS: usize = 16;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status {},
    Approve { id: u64 },
    Deny { id: u64 },
    Reload {},
    /// Stream verdicts: `{"ok":true}`, then one verdict per line (or `{"lagged":N}` when the
    /// client fell behind and N were skipped) until either side closes.
    Tail {
        #[serde(default)]
        agent: Option<String>,
        /// Verdict names to pass (`killed`, `denied`, ...); empty passes all.
        #[serde(default)]
        verdicts: Vec<String>,
    },
    Launch {
        agent: String,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        #[serde(default)]
        command: Vec<String>,
        #[serde(default)]
        keep_running: bool,
    },
    /// Ends the session this connection launched.
    End {},
    /// Debug builds only, for the end-to-end tests: the event loop sleeps `ms` (at most
    /// 10 000) before it answers, as if stuck in a slow call, so a test can show what follows
    /// the loop (the systemd watchdog). A release build does not know the request.
    #[cfg(debug_assertions)]
    Stall { ms: u64 },
}

/// Who sent a request, from the kernel (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub uid: u32,
    pub pid: u32,
}

/// A request on its way to the daemon's event loop.
pub struct Call {
    pub request: Request,
    pub peer: Peer,
    /// The session this connection launched, for `End` and for a closed launch connection.
    pub session: Option<String>,
    pub reply: oneshot::Sender<Value>,
}

/// Messages from the sockets to the event loop.
pub enum ControlMsg {
    Call(Call),
    /// A launch connection closed: its session ends (if `end` did not end it already).
    Closed { session: String },
    /// A `/metrics` scrape wants the exposition text.
    Metrics(oneshot::Sender<String>),
}

pub fn error(message: impl std::fmt::Display) -> Value {
    json!({ "ok": false, "error": message.to_string() })
}

/// Which requests a socket takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Admin,
    Launch,
}

/// Binds `path` (replacing a stale socket), with `mode` and group `gid`.
pub fn bind(path: &Path, mode: u32, gid: Option<u32>) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    // Created with no access for anyone but root, then opened up to exactly `mode`.
    // SAFETY: umask only changes this process's file creation mask.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above, restoring it.
    unsafe { libc::umask(old) };
    let listener = listener?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, Some(0), Some(gid))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Accepts connections until the listener fails; each is served by its own task.
pub async fn serve(listener: UnixListener, kind: Kind, tx: mpsc::Sender<ControlMsg>, feed: Feed) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = std::sync::Arc::clone(&slots).acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let tx = tx.clone();
        let feed = feed.clone();
        tokio::spawn(connection(stream, kind, tx, feed, permit));
    }
}

/// Reads one line of at most MAX_REQUEST bytes. `Ok(None)` at end of stream.
pub(crate) async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<Option<String>, String> {
    let mut buf = Vec::new();
    let mut limited = r.take(MAX_REQUEST as u64 + 1);
    let n = match tokio::time::timeout(READ_TIMEOUT, limited.read_until(b'\n', &mut buf)).await {
        Err(_) => return Err(format!("no complete request within {}s", READ_TIMEOUT.as_secs())),
        Ok(Err(e)) => return Err(format!("reading the request: {e}")),
        Ok(Ok(n)) => n,
    };
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > MAX_REQUEST {
        return Err(format!("request longer than {MAX_REQUEST} bytes"));
    }
    String::from_utf8(buf).map(Some).map_err(|_| "request is not UTF-8".to_owned())
}

async fn connection(stream: UnixStream, kind: Kind, tx: mpsc::Sender<ControlMsg>, feed: Feed, permit: OwnedSemaphorePermit) {
    let peer = match stream.peer_cred() {
        Ok(c) => Peer { uid: c.uid(), pid: c.pid().unwrap_or(0) as u32 },
        Err(_) => return,
    };
    let (read, mut write) = stream.into_split();
    let mut reader = AsyncBufReader::new(read);
    let mut session: Option<String> = None;
    loop {
        let line = match read_line(&mut reader).await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            // A launch connection waits as long as its session runs: no timeout for the
            // request that ends it.
            Err(e) if session.is_some() && e.starts_with("no complete") => continue,
            Err(e) => {
                let _ = send(&mut write, &error(e)).await;
                break;
            }
        };
        let response = match parse(&line, kind, session.is_some()) {
            Err(e) => error(e),
            Ok(Request::Tail { agent, verdicts }) => {
                if feed.receiver_count() >= MAX_TAILS {
                    error(format!("{MAX_TAILS} tails are already running"))
                } else {
                    // A stream is not a request: it gives its slot back.
                    drop(permit);
                    let rx = feed.subscribe();
                    let _ = tail(reader, write, rx, agent, verdicts).await;
                    return;
                }
            }
            Ok(request) => {
                let is_launch = matches!(request, Request::Launch { .. });
                let is_end = matches!(request, Request::End {});
                let (reply, rx) = oneshot::channel();
                let call = Call { request, peer, session: session.clone(), reply };
                if tx.send(ControlMsg::Call(call)).await.is_err() {
                    break;
                }
                let response = rx.await.unwrap_or_else(|_| error("the daemon is stopping"));
                if is_launch {
                    session = response.get("session").and_then(Value::as_str).map(str::to_owned);
                }
                if is_end {
                    session = None;
                }
                response
            }
        };
        if send(&mut write, &response).await.is_err() {
            break;
        }
        if kind == Kind::Admin {
            // One request per admin connection keeps a stuck client from holding a slot.
            break;
        }
    }
    drop(permit);
    if let Some(session) = session {
        let _ = tx.send(ControlMsg::Closed { session }).await;
    }
}

/// Streams verdicts to a `tail` client until it closes (or the daemon stops).
async fn tail(
    mut reader: AsyncBufReader<tokio::net::unix::OwnedReadHalf>,
    mut write: tokio::net::unix::OwnedWriteHalf,
    mut rx: broadcast::Receiver<Arc<TailItem>>,
    agent: Option<String>,
    verdicts: Vec<String>,
) -> std::io::Result<()> {
    send(&mut write, &json!({ "ok": true, "tail": true })).await?;
    let mut scratch = [0u8; 256];
    loop {
        tokio::select! {
            item = rx.recv() => match item {
                Ok(item) => {
                    let wanted = agent.as_deref().is_none_or(|a| item.agent.as_deref() == Some(a))
                        && (verdicts.is_empty() || verdicts.iter().any(|v| v == item.verdict));
                    if wanted {
                        write.write_all(item.line.as_bytes()).await?;
                        write.write_all(b"\n").await?;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => send(&mut write, &json!({ "lagged": n })).await?,
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            // The client sends nothing more; end of stream (or an error) means it left.
            n = reader.read(&mut scratch) => if n.unwrap_or(0) == 0 { return Ok(()) },
        }
    }
}

/// Parses and checks one request line for a socket of `kind` (pure: the fuzz tests run it
/// without a daemon).
pub(crate) fn parse(line: &str, kind: Kind, has_session: bool) -> Result<Request, String> {
    let value: Value = serde_json::from_str(line.trim_end()).map_err(|e| format!("bad request: {e}"))?;
    // serde would also take `["status"]` for a tagged enum; a request is an object.
    if !value.is_object() {
        return Err("bad request: a request is a JSON object like {\"op\":\"status\"}".into());
    }
    let request: Request = serde_json::from_value(value).map_err(|e| format!("bad request: {e}"))?;
    if let Request::Tail { verdicts, .. } = &request {
        if let Some(bad) = verdicts.iter().find(|v| !VERDICT_NAMES.contains(&v.as_str())) {
            return Err(format!("unknown verdict `{bad}`; known: {}", VERDICT_NAMES.join(", ")));
        }
    }
    match (&request, kind) {
        (Request::Launch { .. }, Kind::Launch) if has_session => Err("this connection already launched a session".into()),
        (Request::Launch { .. } | Request::End {}, Kind::Launch) => Ok(request),
        (Request::End {}, _) => Err("`end` only ends a session launched on this connection".into()),
        (_, Kind::Launch) => Err("the launch socket only takes `launch` and `end`; use the admin socket".into()),
        (Request::Launch { .. }, Kind::Admin) => Err("`launch` goes to the launch socket".into()),
        _ => Ok(request),
    }
}

async fn send(w: &mut tokio::net::unix::OwnedWriteHalf, v: &Value) -> std::io::Result<()> {
    let mut line = v.to_string();
    line.push('\n');
    w.write_all(line.as_bytes()).await
}

/// A client connection (for the CLI).
pub struct Client {
    reader: BufReader<StdUnixStream>,
}

impl Client {
    pub fn connect(path: &Path) -> std::io::Result<Self> {
        let stream = StdUnixStream::connect(path)?;
        Ok(Self { reader: BufReader::new(stream) })
    }

    /// Sends `request` and waits for its response (an error response is an `Err`).
    pub fn call(&mut self, request: &Request) -> anyhow::Result<Value> {
        let mut line = serde_json::to_string(request)?;
        line.push('\n');
        self.reader.get_mut().write_all(line.as_bytes())?;
        let mut resp = String::new();
        if self.reader.read_line(&mut resp)? == 0 {
            anyhow::bail!("the daemon closed the connection without answering");
        }
        let v: Value = serde_json::from_str(&resp)?;
        if v.get("ok") != Some(&Value::Bool(true)) {
            anyhow::bail!("{}", v.get("error").and_then(Value::as_str).unwrap_or("the daemon refused the request"));
        }
        Ok(v)
    }
}

impl Client {
    /// The next line of a stream (`tail`); `None` when the daemon closed it.
    pub fn next_line(&mut self) -> std::io::Result<Option<String>> {
        let mut line = String::new();
        Ok((self.reader.read_line(&mut line)? > 0).then(|| line.trim_end_matches('\n').to_owned()))
    }
}

/// Connects to the admin socket with a helpful error.
pub fn admin(path: &Path) -> anyhow::Result<Client> {
    Client::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => anyhow::anyhow!("cannot connect to {}: permission denied (the admin socket is root-only)", path.display()),
        _ => anyhow::anyhow!("cannot connect to {}: {e} (is `guard-agent daemon` running?)", path.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_strictly() {
        assert!(matches!(parse(r#"{"op":"status"}"#, Kind::Admin, false), Ok(Request::Status {})));
        assert!(matches!(parse(r#"{"op":"approve","id":7}"#, Kind::Admin, false), Ok(Request::Approve { id: 7 })));
        assert!(parse(r#"{"op":"approve","id":"7"}"#, Kind::Admin, false).unwrap_err().starts_with("bad request"));
        assert!(parse(r#"{"op":"status","x":1}"#, Kind::Admin, false).is_err());
        assert!(parse("not json", Kind::Admin, false).is_err());
        assert!(parse(r#"["status"]"#, Kind::Admin, false).is_err());
        assert!(parse(r#"{"op":"tail","verdicts":["killed"]}"#, Kind::Admin, false).is_ok());
        assert!(parse(r#"{"op":"tail","verdicts":["exploded"]}"#, Kind::Admin, false).unwrap_err().contains("unknown verdict"));
        assert!(parse(r#"{"op":"launch","agent":"a"}"#, Kind::Admin, false).is_err());
        assert!(parse(r#"{"op":"status"}"#, Kind::Launch, false).is_err());
        assert!(parse(r#"{"op":"launch","agent":"a"}"#, Kind::Launch, true).is_err());
        assert!(matches!(parse(r#"{"op":"launch","agent":"a","labels":{"k":"v"}}"#, Kind::Launch, false), Ok(Request::Launch { .. })));
    }
}
