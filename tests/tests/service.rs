//! guard as a service: systemd readiness and watchdog, the control socket under fuzzing, `tail`,
//! `status` and Prometheus metrics, all against the real daemon. Run as root by
//! `cargo xtask test`.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    os::unix::{
        fs::PermissionsExt as _,
        net::{UnixDatagram, UnixStream},
        process::{CommandExt as _, ExitStatusExt as _},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use guard_tests::{Daemon, PIN_DIR, TempDir, agent_bin, field, launch, unique};
use serde_json::Value;

/// A cgroup made by the test (as systemd would make a unit's), removed on drop.
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(name: &str) -> Self {
        let dir = guard_tests::cgroup2_root().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// One datagram from the daemon, with when it arrived.
type Notes = Arc<Mutex<Vec<(Instant, String, usize)>>>;

/// Reads `$NOTIFY_SOCKET` datagrams as systemd would; for each, also records how many programs
/// had pinned (attached) links at the moment it arrived.
fn notify_listener(path: &Path) -> Notes {
    let sock = UnixDatagram::bind(path).unwrap();
    let notes: Notes = Arc::default();
    let n = Arc::clone(&notes);
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(len) = sock.recv(&mut buf) {
            let links = attached_links();
            n.lock().unwrap().push((Instant::now(), String::from_utf8_lossy(&buf[..len]).into_owned(), links));
        }
    });
    notes
}

fn attached_links() -> usize {
    std::fs::read_dir(PIN_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|g| std::fs::read_dir(g.path().join("links")).ok())
        .map(|links| links.count())
        .sum()
}

fn watchdogs_between(notes: &Notes, from: Instant, to: Instant) -> usize {
    notes.lock().unwrap().iter().filter(|(t, m, _)| *t >= from && *t <= to && m.contains("WATCHDOG=1")).count()
}

#[test]
fn ready_only_after_attach_and_the_watchdog_follows_the_event_loop() {
    let dir = TempDir::new("notify");
    let name = unique("notify");
    let cg = Cgroup::new(&name);
    let notify = dir.path("notify.sock");
    let notes = notify_listener(&notify);
    let policy = format!("agents:\n  - name: {name}\n    match:\n      cgroup: \"{name}\"\n");
    // A 1 s watchdog: the daemon pings every 0.5 s while its event loop runs.
    let socket = dir.path("guard.sock");
    let daemon = Daemon::start_env(&dir, &policy, &["--detach-on-exit", "--admin-socket", socket.to_str().unwrap()], &[
        ("NOTIFY_SOCKET", notify.to_str().unwrap()),
        ("WATCHDOG_USEC", "1000000"),
    ]);
    // READY=1 is sent before the ready line the harness waited for; its datagram may still be
    // on its way to the listener.
    let deadline = Instant::now() + Duration::from_secs(10);
    while notes.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no notification within 10 s");
        thread::sleep(Duration::from_millis(10));
    }
    {
        let n = notes.lock().unwrap();
        let (_, first, links) = n.first().expect("no notification at all");
        assert!(first.contains("READY=1") && first.contains(&format!("MAINPID={}", daemon.pid())), "first message: {first}");
        // Every program (13) was attached by the time READY arrived.
        assert!(*links >= 13, "READY arrived with only {links} links attached");
    }

    // Events flowing: execs in the workload, pings keep coming.
    let start = Instant::now();
    let busy = |n: u32| {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &format!("i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done")]);
        guard_tests::run_in_cgroup(&cg.0, cmd)
    };
    while start.elapsed() < Duration::from_secs(2) {
        busy(20);
    }
    let flowing = watchdogs_between(&notes, start, Instant::now());
    assert!(flowing >= 3, "only {flowing} WATCHDOG=1 in 2 s of events");
    assert!(!daemon.verdicts(|v| field(v, "/unmapped/agent") == name).is_empty(), "no verdicts from the workload");

    // A consumer that stops reading standard output does not stall the loop: the pipe fills
    // and blocks only the sink's own thread; the loop goes on deciding and pinging.
    let paused = daemon.pause_stdout();
    busy(3000);
    let unread_at = Instant::now();
    thread::sleep(Duration::from_secs(2));
    let unread = watchdogs_between(&notes, unread_at, Instant::now());
    assert!(unread >= 3, "only {unread} WATCHDOG=1 in 2 s while standard output went unread");
    drop(paused);

    // Stall the loop itself (a debug build's `stall` request: the loop sleeps 3 s as if stuck
    // in a slow call): no ping while it is stuck. Real time must pass here: three watchdog
    // periods with no ping prove the stall is seen.
    let stall = {
        let socket = socket.clone();
        thread::spawn(move || raw_request(&socket, b"{\"op\":\"stall\",\"ms\":3000}\n", false))
    };
    // The request reaches the loop within a few milliseconds; the window starts after that.
    thread::sleep(Duration::from_millis(300));
    let stalled_at = Instant::now();
    thread::sleep(Duration::from_millis(2500));
    let during = watchdogs_between(&notes, stalled_at, Instant::now());
    assert_eq!(during, 0, "WATCHDOG=1 kept coming while the event loop was stalled");
    assert!(stall.join().unwrap().contains("\"ok\":true"), "the stall request was not answered");

    // Unstalled: it pings again.
    let resumed = Instant::now();
    let deadline = resumed + Duration::from_secs(3);
    while watchdogs_between(&notes, resumed, Instant::now()) < 2 {
        assert!(Instant::now() < deadline, "only {} WATCHDOG=1 in 3 s after the stall ended", watchdogs_between(&notes, resumed, Instant::now()));
        thread::sleep(Duration::from_millis(20));
    }
    daemon.stop();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !notes.lock().unwrap().iter().any(|(_, m, _)| m.contains("STOPPING=1")) {
        assert!(Instant::now() < deadline, "no STOPPING=1");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `bytes` on a fresh admin connection and returns what came back (up to 10 s).
fn raw_request(socket: &Path, bytes: &[u8], close_write: bool) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    if close_write {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut out = String::new();
    let _ = BufReader::new(s).read_line(&mut out);
    out
}

/// A small deterministic generator (the run is reproducible from its seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The i-th malformed request (each must get an error response).
fn malformed(rng: &mut Rng, i: usize) -> Vec<u8> {
    let mut req: Vec<u8> = match i % 12 {
        0 => {
            let n = (rng.next() % 200) as usize;
            rng.bytes(n).into_iter().filter(|b| *b != b'\n').collect()
        }
        1 => b"{\"op\":\"status\"".to_vec(),
        2 => b"{\"op\":\"approve\",\"id\":\"seven\"}".to_vec(),
        3 => b"{\"op\":\"approve\",\"id\":-1}".to_vec(),
        4 => b"{\"op\":\"no-such-op\"}".to_vec(),
        5 => b"[\"status\"]".to_vec(),
        6 => format!("{}1{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
        7 => b"{\"op\":\"tail\",\"verdicts\":[\"exploded\"]}".to_vec(),
        8 => b"{\"op\":\"launch\",\"agent\":\"x\"}".to_vec(),
        9 => vec![0xff, 0xfe, b'{', 0x80],
        10 => b"{\"op\":\"deny\",\"id\":18446744073709551616}".to_vec(),
        _ => b"".to_vec(),
    };
    req.push(b'\n');
    req
}

#[test]
fn control_socket_fuzz_keeps_the_daemon_enforcing_and_non_root_cannot_connect() {
    let dir = TempDir::new("fuzz");
    let agent = unique("fuzz");
    let policy = format!("agents:\n  - name: {agent}\n    exec:\n      deny:\n        - basename: shred\n");
    let socket = dir.path("guard.sock");
    let daemon = Daemon::start_with(&dir, &policy, &["--detach-on-exit", "--admin-socket", socket.to_str().unwrap()]);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin socket mode");

    // Half-open connections (a partial request, never finished) held through the whole run.
    let half_open: Vec<UnixStream> = (0..20)
        .map(|_| {
            let mut s = UnixStream::connect(&socket).unwrap();
            s.write_all(b"{\"op\":").unwrap();
            s
        })
        .collect();

    let total = 10_000;
    let workers = 4;
    let answered = Arc::new(Mutex::new((0usize, 0usize)));
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let socket = socket.clone();
            let answered = Arc::clone(&answered);
            thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1));
                for i in (w..total).step_by(workers) {
                    let (errors, oks) = match i % 50 {
                        // Huge: more than the 64 KiB limit, no newline.
                        13 => {
                            let r = raw_request(&socket, &vec![b'a'; 70 * 1024], false);
                            assert!(r.contains("longer than"), "huge request answered {r:?}");
                            (1, 0)
                        }
                        // Connect and hang up at once.
                        27 => {
                            drop(UnixStream::connect(&socket).unwrap());
                            (0, 0)
                        }
                        // Now and then a valid request, which must still work.
                        41 => {
                            let r = raw_request(&socket, b"{\"op\":\"status\"}\n", false);
                            let v: Value = serde_json::from_str(&r).unwrap_or_else(|e| panic!("status answer {r:?}: {e}"));
                            assert_eq!(v["ok"], Value::Bool(true), "{r}");
                            (0, 1)
                        }
                        _ => {
                            let req = malformed(&mut rng, i);
                            let r = raw_request(&socket, &req, i % 2 == 0);
                            let v: Value = serde_json::from_str(&r).unwrap_or_else(|e| panic!("request {i} ({:?}) answered {r:?}: {e}", String::from_utf8_lossy(&req[..req.len().min(80)])));
                            assert_eq!(v["ok"], Value::Bool(false), "request {i} answered {r}");
                            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
                            (1, 0)
                        }
                    };
                    let mut a = answered.lock().unwrap();
                    a.0 += errors;
                    a.1 += oks;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("fuzz worker");
    }
    let (errors, oks) = *answered.lock().unwrap();
    assert_eq!(errors + oks, total - total / 50, "every request but the hang-ups got an answer");

    // The half-open ones got their timeout error, and nothing else was blocked by them.
    for mut s in half_open {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.contains("no complete request"), "half-open connection answered {out:?}");
    }

    // Still answering, still enforcing.
    let out = guard_tests::agent_cmd(&["status", "--json", "--socket", socket.to_str().unwrap()]);
    assert!(out.status.success(), "status after fuzz: {}", String::from_utf8_lossy(&out.stderr));
    let (_, out) = launch(&agent, &["shred", "--version"], &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "shred after the fuzz: {out:?}");
    daemon.only_verdict(&agent, "shred killed", |v| field(v, "/unmapped/agent") == agent && field(v, "/unmapped/verdict") == "killed");

    // Non-root cannot connect at all.
    let out = Command::new(agent_bin())
        .args(["status", "--socket", socket.to_str().unwrap()])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied"), "{err}");
    daemon.stop();
}

/// A free loopback TCP port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

/// The value of the sample `series` (name and labels, exactly as exposed), 0 if absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.parse().unwrap())
}

/// A `guard-agent tail` running in the background, its stdout lines collected.
struct Tail {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Tail {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(agent_bin()).arg("tail").args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let l = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kernel.bpf_stats_enabled on for a test, put back as it was on drop.
struct BpfStats(String);

impl BpfStats {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";

    fn enable() -> Self {
        let old = std::fs::read_to_string(Self::PATH).unwrap();
        std::fs::write(Self::PATH, "1").unwrap();
        Self(old)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, self.0.trim());
    }
}

#[test]
fn tail_status_and_metrics_agree_with_the_verdicts_produced() {
    let dir = TempDir::new("metrics");
    let agent = unique("metrics");
    let port = free_port();
    let file_sink = dir.path("verdicts.jsonl");
    let config = dir.path("guard.yaml");
    std::fs::write(
        &config,
        format!("sinks:\n  - type: stdout\n  - type: file\n    path: {}\nmetrics:\n  listen: 127.0.0.1:{port}\n", file_sink.display()),
    )
    .unwrap();
    let policy = format!("agents:\n  - name: {agent}\n    exec:\n      deny:\n        - basename: shred\n");
    let _stats = BpfStats::enable();
    let daemon = Daemon::start_with(&dir, &policy, &["--detach-on-exit", "--config", config.to_str().unwrap()]);
    let raw = Tail::start(&["--json", "--agent", &agent]);
    let killed_only = Tail::start(&["--verdict", "killed", "--agent", &agent]);
    // Both streams are subscribed before anything happens.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st: Value = serde_json::from_slice(&guard_tests::agent_cmd(&["status", "--json"]).stdout).unwrap();
        if st["daemon"]["tails"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the tails never subscribed: {st:#}");
        thread::sleep(Duration::from_millis(20));
    }

    for _ in 0..2 {
        let (_, out) = launch(&agent, &["shred", "--version"], &[]);
        assert_eq!(out.status.signal(), Some(libc::SIGKILL));
    }
    for _ in 0..3 {
        let (_, out) = launch(&agent, &["/bin/true"], &[]);
        assert!(out.status.success());
    }
    let mine = |v: &Value| field(v, "/unmapped/agent") == agent && !guard_tests::is_barrier(v);
    let deadline = Instant::now() + Duration::from_secs(10);
    // tail --json streams every object: the 5 verdicts and a Detection Finding per kill.
    while daemon.verdicts(mine).len() < 5 || raw.lines().len() < 7 || killed_only.lines().len() < 2 {
        assert!(Instant::now() < deadline, "verdicts {:?}, tail {:?}, tail killed {:?}", daemon.verdicts(mine).len(), raw.lines(), killed_only.lines());
        thread::sleep(Duration::from_millis(20));
    }
    // Nothing more is on its way once a later exec's verdict is out, to stdout and to the
    // tail (which streams in emission order).
    daemon.barrier(&agent);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !raw.lines().iter().any(|l| l.contains(guard_tests::BARRIER_LABEL)) {
        assert!(Instant::now() < deadline, "the barrier never reached tail --json: {:?}", raw.lines());
        thread::sleep(Duration::from_millis(20));
    }
    let verdicts = daemon.verdicts(mine);
    let count = |name: &str| verdicts.iter().filter(|v| field(v, "/unmapped/verdict") == name).count();
    assert_eq!((count("killed"), count("allowed")), (2, 3), "{verdicts:#?}");

    // tail --json: exactly the agent's objects (verdicts and findings), as emitted.
    let tailed: Vec<Value> = raw.lines().iter().map(|l| serde_json::from_str(l).unwrap()).filter(|v| !guard_tests::is_barrier(v)).collect();
    assert_eq!(tailed, daemon.emitted().into_iter().filter(|v| mine(v)).collect::<Vec<_>>());
    assert_eq!(daemon.findings(mine).len(), 2);
    // tail --verdict killed: one readable line per kill.
    let lines = killed_only.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|l| l.contains(" killed ") && l.contains(&agent) && l.contains("exec ") && l.contains("shred")), "{lines:?}");

    // Both sinks got every verdict; the file holds the same lines as stdout.
    // Everything written (verdicts and findings) and the verdicts alone.
    let all = daemon.emitted();
    let activities = daemon.verdicts(|_| true);
    // Numbered 1, 2, 3... in emission order (no state directory: numbering starts at 1).
    let seqs: Vec<u64> = all.iter().map(|v| v["metadata"]["sequence"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>());
    // Each sink has a writer thread of its own: the file may be a moment behind stdout.
    let read_file = || -> Vec<Value> { std::fs::read_to_string(&file_sink).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_file().len() < all.len() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(read_file(), all);

    // /metrics counts what was produced (a sink counts a line once its thread has written it).
    let sent = all.len() as f64;
    let file_sent = format!("guard_sink_sent_total{{sink=\"file:{}\"}}", file_sink.display());
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, m) = loop {
        let (status, m) = http_get(port, "/metrics");
        let caught_up = sample(&m, "guard_sink_sent_total{sink=\"stdout\"}") >= sent && sample(&m, &file_sent) >= sent;
        if caught_up || Instant::now() > deadline {
            break (status, m);
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status, "HTTP/1.1 200 OK");
    let n = |series: &str| sample(&m, series);
    let total_killed = activities.iter().filter(|v| field(v, "/unmapped/verdict") == "killed").count() as f64;
    let total_allowed = activities.iter().filter(|v| field(v, "/unmapped/verdict") == "allowed").count() as f64;
    assert_eq!(n("guard_verdicts_total{verdict=\"killed\"}"), total_killed, "{m}");
    assert_eq!(n("guard_verdicts_total{verdict=\"allowed\"}"), total_allowed, "{m}");
    assert!(n("guard_events_total{kind=\"exec\"}") >= 5.0, "{m}");
    assert_eq!(n("guard_sink_sent_total{sink=\"stdout\"}"), sent, "{m}");
    assert_eq!(n(&file_sent), sent, "{m}");
    assert_eq!(n("guard_sink_failed_total{sink=\"stdout\"}"), 0.0, "{m}");
    assert_eq!(n("guard_holds_pending"), 0.0);
    assert!(n("guard_process_table_entries") > 0.0, "{m}");
    assert!(m.contains("# TYPE guard_hold_decision_seconds histogram"), "{m}");
    assert_eq!(http_get(port, "/nope").0, "HTTP/1.1 404 Not Found");
    // Per-program statistics (kernel.bpf_stats_enabled is on for this test): the exec program
    // ran at least once per exec the test made, and took time doing it.
    assert_eq!(n("guard_bpf_stats_enabled"), 1.0, "{m}");
    assert!(n("guard_bpf_program_runs_total{program=\"guard_exec\"}") >= 5.0, "{m}");
    assert!(n("guard_bpf_program_run_seconds_total{program=\"guard_exec\"}") > 0.0, "{m}");

    // status: the same counters, JSON and text.
    let out = guard_tests::agent_cmd(&["status", "--json"]);
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["counters"]["verdicts"]["killed"].as_f64(), Some(total_killed), "{st:#}");
    assert_eq!(st["sinks"][1]["sent"].as_f64(), Some(sent), "{st:#}");
    assert_eq!(st["daemon"]["metrics"], format!("http://127.0.0.1:{port}/metrics"));
    let text = String::from_utf8(guard_tests::agent_cmd(&["status"]).stdout).unwrap();
    assert!(text.contains("sink:        stdout ok") && text.contains("verdicts:    ") && text.contains("enforcement: tracepoint tier"), "{text}");
    daemon.stop();
}

#[test]
fn the_default_policy_covers_units_in_guard_agents_slice() {
    let dir = TempDir::new("slice");
    // systemd names the slice's cgroup by its dashes: guard.slice/guard-agents.slice.
    // Dropped last (declared first), and only removed if this test made it.
    let _outer = (!guard_tests::cgroup2_root().join("guard.slice").exists()).then(|| Cgroup::new("guard.slice"));
    let _slice = (!guard_tests::cgroup2_root().join("guard.slice/guard-agents.slice").exists()).then(|| Cgroup::new("guard.slice/guard-agents.slice"));
    let unit = Cgroup::new(&format!("guard.slice/guard-agents.slice/{}.service", unique("agent")));
    let daemon = Daemon::start(&dir, include_str!("../../guard-agent/src/policy/default.yaml"));
    let run = |cg: &Cgroup, cmd: &[&str]| {
        let mut c = Command::new(cmd[0]);
        c.args(&cmd[1..]).stdout(Stdio::null());
        guard_tests::run_in_cgroup(&cg.0, c)
    };
    assert_eq!(run(&unit, &["shred", "--version"]).status.signal(), Some(libc::SIGKILL), "a service in the slice ran shred");
    assert!(run(&unit, &["ls", "/"]).status.success());
    // A scope started later (systemd-run --scope --slice=guard-agents.slice) is covered too:
    // the slice itself is registered, and the kernel checks a workload's ancestors.
    let scope = Cgroup::new(&format!("guard.slice/guard-agents.slice/run-{}.scope", std::process::id()));
    assert_eq!(run(&scope, &["shred", "--version"]).status.signal(), Some(libc::SIGKILL), "a scope in the slice ran shred");
    let killed = |v: &Value| field(v, "/unmapped/verdict") == "killed" && !guard_tests::is_barrier(v);
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.verdicts(killed).len() < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    // The default policy covers every `launch --agent` workload (guard/*): any name will do.
    daemon.barrier(&unique("barrier"));
    let kills = daemon.verdicts(killed);
    assert_eq!(kills.len(), 2, "{kills:#?}");
    assert!(kills.iter().all(|v| field(v, "/unmapped/agent") == "coding-agent" && field(v, "/unmapped/rule/matcher").contains("shred")), "{kills:#?}");
    drop((scope, unit));
    daemon.stop();
}
