//! Network sinks against a local Splunk HEC / Elasticsearch stand-in that checks the vendors'
//! wire format (`guard_tests::http_receiver`): delivery over TLS with gzip, an outage with a
//! daemon restart in the middle of a 30,000-verdict run, a full spool, and a server that never
//! answers. Run as root by `cargo xtask test`.
use std::{
    os::unix::{fs::PermissionsExt as _, process::ExitStatusExt as _},
    thread,
    time::{Duration, Instant},
};

use guard_tests::{
    Daemon, TempDir, agent_cmd, field,
    http_receiver::{Mode, Receiver, Vendor},
    launch, metric, unique,
};
use serde_json::Value;

const HEC_TOKEN: &str = "0c8a1d0e-7f4b-4a52-9d2e-5b1f3c6a9e11";
const ES_USER: &str = "guard-writer";
const ES_PASSWORD: &str = "s3cret pass:word";
const ES_INDEX: &str = "guard-verdicts";

fn hec(gzip: bool, tls: bool) -> Receiver {
    Receiver::start(Vendor::Hec { token: HEC_TOKEN.into(), sourcetype: "guard:ocsf".into() }, gzip, tls)
}

fn es(gzip: bool, tls: bool) -> Receiver {
    // `Basic base64("guard-writer:s3cret pass:word")`, computed by hand for the test.
    let basic = "Basic Z3VhcmQtd3JpdGVyOnMzY3JldCBwYXNzOndvcmQ=";
    Receiver::start(Vendor::Es { index: ES_INDEX.into(), authorization: Some(basic.into()) }, gzip, tls)
}

fn secret_file(dir: &TempDir, name: &str, content: &str) -> String {
    let p = dir.path(name);
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

/// A settings file with stdout and both network sinks; `extra` is added to each network sink.
fn settings(dir: &TempDir, hec: &Receiver, es: &Receiver, extra: &str, top: &str) -> String {
    let token = secret_file(dir, "hec-token", &format!("{HEC_TOKEN}\n"));
    let password = secret_file(dir, "es-password", ES_PASSWORD);
    let mut ca = String::new();
    for (r, name) in [(hec, "hec-ca.pem"), (es, "es-ca.pem")] {
        if let Some(pem) = &r.ca_pem {
            std::fs::write(dir.path(name), pem).unwrap();
        }
    }
    if hec.ca_pem.is_some() {
        ca = format!("    tls_ca: {}\n", dir.path("hec-ca.pem").display());
    }
    let es_ca = if es.ca_pem.is_some() { format!("    tls_ca: {}\n", dir.path("es-ca.pem").display()) } else { String::new() };
    let text = format!(
        "state_dir: {state}\n{top}sinks:\n  - type: stdout\n  - type: splunk_hec\n    name: hec\n    url: {hec_url}\n    token_file: {token}\n    index: security\n{ca}{extra}  - type: elasticsearch\n    name: es\n    url: {es_url}\n    index: {ES_INDEX}\n    username: {ES_USER}\n    password_file: {password}\n{es_ca}{extra}",
        state = dir.path("state").display(),
        hec_url = hec.url(),
        es_url = es.url(),
    );
    let path = dir.path("guard.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn sequence(v: &Value) -> u64 {
    v["metadata"]["sequence"].as_u64().expect("every verdict has metadata.sequence")
}

/// Waits until `r` has received at least `want` verdicts (or `secs` pass).
fn wait_received(r: &Receiver, want: usize, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while r.sequences().len() < want && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
}

fn status() -> Value {
    serde_json::from_slice(&agent_cmd(&["status", "--json"]).stdout).expect("status --json")
}

fn sink_status(st: &Value, name: &str) -> Value {
    st["sinks"].as_array().unwrap().iter().find(|s| s["name"] == name).cloned().unwrap_or_else(|| panic!("no sink {name} in {st:#}"))
}

/// An agent workload exec'ing /bin/true `n` times: `n` + 1 `allowed` verdicts (the shell too).
fn trues(agent: &str, n: usize) {
    let script = format!("i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done");
    let (_, out) = launch(agent, &["/bin/sh", "-c", &script], &[]);
    assert!(out.status.success(), "{out:?}");
}

/// Waits until the daemon has emitted the verdicts of everything before it (a barrier exec in
/// `agent`, whose verdict goes to the sinks like any other) and returns how many it printed.
fn settle(daemon: &Daemon, agent: &str) -> usize {
    daemon.barrier(agent);
    daemon.emitted().len()
}

/// `status --json` once `done` holds for it (the sinks take verdicts in asynchronously).
fn status_when(what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = status();
        if done(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "{what}: {st:#}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn hec_and_elasticsearch_get_every_verdict_over_tls_with_gzip() {
    let dir = TempDir::new("sinks-tls");
    let agent = unique("sinks-tls");
    let (hec, es) = (hec(true, true), es(true, true));
    // Three documents are refused with 429 once: sent again, alone.
    es.with(|g| g.reject_items = 3);
    let config = settings(&dir, &hec, &es, "    batch_max_events: 7\n    batch_max_wait: 100ms\n", "");
    let policy = format!("agents:\n  - name: {agent}\n    exec:\n      deny:\n        - basename: shred\n");
    let daemon = Daemon::start_with(&dir, &policy, &["--detach-on-exit", "--config", &config]);
    for _ in 0..3 {
        let (_, out) = launch(&agent, &["/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do /bin/true; done"], &[]);
        assert!(out.status.success());
        let (_, out) = launch(&agent, &["shred", "--version"], &[]);
        assert_eq!(out.status.signal(), Some(libc::SIGKILL));
    }
    let emitted = settle(&daemon, &agent);
    let verdicts = daemon.emitted();
    // Per round: the shell, ten /bin/true, shred (and whatever finding the kill adds).
    assert!(emitted >= 3 * 12, "{emitted} verdicts");
    assert!(verdicts.iter().any(|v| field(v, "/unmapped/verdict") == "killed"));
    let want: Vec<u64> = verdicts.iter().map(sequence).collect();
    wait_received(&hec, want.len(), 20);
    wait_received(&es, want.len(), 20);

    // HEC: every verdict, in order, once, exactly as the daemon printed it.
    assert_eq!(hec.violations(), Vec::<String>::new());
    assert_eq!(hec.sequences(), want);
    let events = hec.with(|g| g.events.clone());
    assert_eq!(events, verdicts, "HEC events are the verdicts themselves");
    // Elasticsearch: every verdict once, under its sequence as `_id`; the three refused with
    // 429 were sent again.
    assert_eq!(es.violations(), Vec::<String>::new());
    let mut ids = es.sequences();
    ids.sort_unstable();
    assert_eq!(ids, want);
    assert_eq!(es.with(|g| (g.rejected_items, g.conflicts)), (3, 0));
    assert!(es.with(|g| g.requests) >= (want.len() / 7) as u64, "batches of at most 7");

    // status: all delivered, nothing waiting.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = status();
        let (h, e) = (sink_status(&st, "hec"), sink_status(&st, "es"));
        let done = |s: &Value| s["sent"].as_u64() == Some(want.len() as u64) && s["backlog"] == 0 && s["dropped"] == 0 && s["failed"] == 0 && s["healthy"] == true;
        if done(&h) && done(&e) {
            break;
        }
        assert!(Instant::now() < deadline, "{st:#}");
        thread::sleep(Duration::from_millis(100));
    }
    let stderr = daemon.stop_and_stderr();
    assert!(!stderr.contains(HEC_TOKEN) && !stderr.contains(ES_PASSWORD), "a credential was logged:\n{stderr}");
    // The spools live under state_dir, private.
    let spool = dir.path("state/spool/hec");
    assert_eq!(std::fs::metadata(&spool).unwrap().permissions().mode() & 0o777, 0o700);
}

/// The acceptance run: 30,000 verdicts; both servers are down for the middle third, and the
/// daemon is restarted in the middle of the outage. Afterwards each server has every verdict
/// either daemon printed, exactly once and in order.
#[test]
fn an_outage_and_a_restart_lose_and_repeat_nothing_of_30000_verdicts() {
    const THIRD: usize = 10_000;
    let started = Instant::now();
    let dir = TempDir::new("sinks-outage");
    let agent = unique("sinks-outage");
    let (hec, es) = (hec(true, false), es(true, false));
    let config = settings(&dir, &hec, &es, "    batch_max_wait: 200ms\n    backoff_max: 1s\n", "");
    let policy = format!("agents:\n  - name: {agent}\n");
    // Two workloads at once, each a shell exec'ing /bin/true: 2 × (n + 1) verdicts.
    let run = |total: usize| {
        let half = total / 2 - 1;
        let a = agent.clone();
        let t = thread::spawn(move || trues(&a, half));
        trues(&agent, half);
        t.join().unwrap();
    };

    let first = Daemon::start_with(&dir, &policy, &["--config", &config]);
    run(THIRD);
    let n1 = settle(&first, &agent);
    wait_received(&hec, n1, 30);
    wait_received(&es, n1, 30);
    let t1 = started.elapsed();

    // Exec records the ring buffer had no room for (two exec loops at full speed on a loaded
    // machine) are counted drops, reported as such: each accounts for its verdict.
    let exec_drops = || -> u64 {
        status()["counters"]["ring_buffer_drops"].as_array().into_iter().flatten().filter(|d| d["kind"] == "exec").filter_map(|d| d["dropped"].as_u64()).sum()
    };
    let drops_before_outage = exec_drops();
    // Down: connections refused. The middle third is spooled; the daemon restarts halfway.
    hec.set_mode(Mode::Refuse);
    es.set_mode(Mode::Refuse);
    run(THIRD / 2);
    settle(&first, &agent);
    let before = first.emitted();
    let drops_first = exec_drops();
    first.stop_keeping_pins();
    let second = Daemon::start_with(&dir, &policy, &["--detach-on-exit", "--config", &config]);
    run(THIRD / 2);
    settle(&second, &agent);
    // Everything since the outage began waits in the spool, across the restart.
    let so_far = before.len() + second.emitted().len();
    let st = status_when("the spool holds everything not received", |st| {
        [("hec", &hec), ("es", &es)].iter().all(|(name, r)| sink_status(st, name)["backlog"].as_u64() == Some((so_far - r.sequences().len()) as u64))
    });
    for (name, r) in [("hec", &hec), ("es", &es)] {
        let s = sink_status(&st, name);
        assert_eq!(s["backlog"].as_u64(), Some((so_far - r.sequences().len()) as u64), "{st:#}");
        // (If the second daemon's counters started from the adopted generation's, this counts
        // the first daemon's drops twice: a looser bound, never a false failure.)
        let drops_middle = drops_first - drops_before_outage + exec_drops();
        assert!(s["backlog"].as_u64().unwrap() + drops_middle >= THIRD as u64 - 10, "{drops_middle} exec records dropped: {st:#}");
        assert_eq!(s["healthy"], false);
    }
    let t2 = started.elapsed();

    // Up again: the backlog goes out, in order, then the last third.
    hec.set_mode(Mode::Up);
    es.set_mode(Mode::Up);
    run(THIRD);
    let after = settle(&second, &agent);
    let mut all: Vec<u64> = before.iter().map(sequence).collect();
    all.extend(second.emitted().iter().map(sequence));
    // An exec record the ring buffer had no room for (two exec loops at full speed) is a
    // counted drop, reported as such: it accounts for its verdict.
    let dropped = drops_first + exec_drops();
    assert!(all.len() as u64 + dropped >= 3 * THIRD as u64 - 10, "{} verdicts, {dropped} exec records dropped", all.len());
    assert!(all.windows(2).all(|w| w[0] < w[1]), "sequence numbers increase across the restart");
    wait_received(&hec, all.len(), 60);
    wait_received(&es, all.len(), 60);
    let t3 = started.elapsed();

    for (name, r) in [("HEC", &hec), ("Elasticsearch", &es)] {
        assert_eq!(r.violations(), Vec::<String>::new(), "{name}");
        let got = r.sequences();
        let have: std::collections::HashSet<u64> = got.iter().copied().collect();
        let missing: Vec<_> = all.iter().filter(|s| !have.contains(s)).take(10).collect();
        assert!(missing.is_empty(), "{name} is missing {missing:?}... ({} of {})", got.len(), all.len());
        assert_eq!(got.len(), all.len(), "{name}: every verdict exactly once");
        assert_eq!(got, all, "{name}: in order");
    }
    // A server counts a batch before the daemon has its answer: wait for the daemon's books.
    status_when("nothing waiting, dropped or failed", |st| {
        ["hec", "es"].iter().all(|name| {
            let s = sink_status(st, name);
            (s["backlog"].as_u64(), s["dropped"].as_u64(), s["failed"].as_u64()) == (Some(0), Some(0), Some(0))
        })
    });
    second.stop();
    println!(
        "30k outage run: {} verdicts ({} before the restart, {after} after); first third delivered at {:.1}s, outage to {:.1}s, all delivered at {:.1}s",
        all.len(),
        before.len(),
        t1.as_secs_f64(),
        t2.as_secs_f64(),
        t3.as_secs_f64()
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A spool bounded to 1 MiB during an outage: the oldest verdicts are dropped and counted, and
/// what is delivered afterwards is the newest ones, in order.
#[test]
fn a_full_spool_drops_the_oldest_and_says_how_many() {
    let dir = TempDir::new("sinks-full");
    let agent = unique("sinks-full");
    let (hec, es) = (hec(false, false), es(false, false));
    hec.set_mode(Mode::Unavailable);
    es.set_mode(Mode::TooMany);
    let port = free_port();
    let config = settings(&dir, &hec, &es, "    spool_max_bytes: 1MiB\n    gzip: false\n    backoff_max: 1s\n", &format!("metrics:\n  listen: 127.0.0.1:{port}\n"));
    let daemon = Daemon::start_with(&dir, &format!("agents:\n  - name: {agent}\n"), &["--detach-on-exit", "--config", &config]);
    // About 2 KiB a verdict: well over 1 MiB.
    trues(&agent, 2000);
    let emitted: Vec<u64> = {
        settle(&daemon, &agent);
        daemon.emitted().iter().map(sequence).collect()
    };
    // Each sink has taken in every verdict once it is either waiting or counted as dropped.
    let st = status_when("every verdict waiting or counted as dropped", |st| {
        ["hec", "es"].iter().all(|name| {
            let s = sink_status(st, name);
            s["backlog"].as_u64().unwrap_or(0) + s["dropped"].as_u64().unwrap_or(0) == emitted.len() as u64
        })
    });
    for name in ["hec", "es"] {
        let s = sink_status(&st, name);
        let (backlog, dropped) = (s["backlog"].as_u64().unwrap(), s["dropped"].as_u64().unwrap());
        assert!(dropped > 0 && backlog > 0, "{st:#}");
        assert_eq!(backlog + dropped, emitted.len() as u64, "every verdict is waiting or counted as dropped: {st:#}");
        assert_eq!(metric(port, &format!("guard_sink_dropped_total{{sink=\"{name}\"}}")), dropped as f64);
        assert_eq!(metric(port, &format!("guard_sink_backlog{{sink=\"{name}\"}}")), backlog as f64);
    }
    // The servers said to come back later (Retry-After: 1), and were asked again.
    assert!(hec.with(|g| g.turned_away) >= 2 && es.with(|g| g.turned_away) >= 2);
    let dropped = sink_status(&st, "hec")["dropped"].as_u64().unwrap() as usize;
    hec.set_mode(Mode::Up);
    es.set_mode(Mode::Up);
    let suffix = &emitted[dropped..];
    wait_received(&hec, suffix.len(), 30);
    assert_eq!(hec.violations(), Vec::<String>::new());
    assert_eq!(hec.sequences(), suffix, "the newest verdicts, in order");
    let es_dropped = sink_status(&st, "es")["dropped"].as_u64().unwrap() as usize;
    wait_received(&es, emitted.len() - es_dropped, 30);
    assert_eq!(es.sequences(), &emitted[es_dropped..]);
    assert!(daemon.stop_and_stderr().contains("the spool is full"));
}

/// A server that accepts connections and never answers slows nothing: enforcement and the
/// stdout sink go on, and the daemon still stops promptly.
#[test]
fn a_server_that_never_answers_does_not_slow_the_daemon() {
    let dir = TempDir::new("sinks-hang");
    let agent = unique("sinks-hang");
    let (hec, es) = (hec(true, true), es(true, true));
    hec.set_mode(Mode::Hang);
    es.set_mode(Mode::Hang);
    let config = settings(&dir, &hec, &es, "    timeout: 60s\n    batch_max_events: 10\n    batch_max_wait: 0\n", "");
    let policy = format!("agents:\n  - name: {agent}\n    exec:\n      deny:\n        - basename: shred\n");
    let daemon = Daemon::start_with(&dir, &policy, &["--detach-on-exit", "--config", &config]);
    trues(&agent, 300);
    // Both senders are stuck in a request that will not be answered for a minute.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hec.with(|g| g.hung) == 0 || es.with(|g| g.hung) == 0 {
        assert!(Instant::now() < deadline, "no request reached the hanging servers");
        thread::sleep(Duration::from_millis(20));
    }
    // Enforcement and stdout go on: 300 more execs, then a denied one, killed and reported
    // at once. (Allowed execs reach the daemon on its next read: let the first 300 arrive.)
    settle(&daemon, &agent);
    let before = daemon.verdicts(|v| field(v, "/process/file/path") == "/bin/true").len();
    trues(&agent, 300);
    settle(&daemon, &agent);
    let t0 = Instant::now();
    let (_, out) = launch(&agent, &["shred", "--version"], &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL));
    let killed = daemon.await_verdict("the kill", 5, |v| field(v, "/unmapped/verdict") == "killed" && field(v, "/unmapped/agent") == agent);
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(1), "the kill verdict took {took:?}");
    assert_eq!(field(&killed, "/process/file/name"), "shred");
    let trues_seen = daemon.verdicts(|v| field(v, "/process/file/path") == "/bin/true").len();
    assert!(before >= 290 && trues_seen >= before + 290, "stdout got {before}, then {trues_seen} /bin/true verdicts");
    // The sinks take verdicts in asynchronously: wait until they hold what stdout printed.
    let st = status_when("the sinks hold the 600 verdicts", |st| ["hec", "es"].iter().all(|name| sink_status(st, name)["backlog"].as_u64() >= Some(550)));
    for name in ["hec", "es"] {
        assert_eq!(sink_status(&st, name)["sent"], 0, "{st:#}");
    }
    assert_eq!(hec.sequences().len() + es.sequences().len(), 0);
    let t = Instant::now();
    daemon.stop();
    assert!(t.elapsed() < Duration::from_secs(8), "stopping took {:?}", t.elapsed());
    // What was not delivered stays spooled for the next start.
    let spooled: u64 = std::fs::read_dir(dir.path("state/spool/hec")).unwrap().flatten().filter(|e| e.path().extension().is_some_and(|x| x == "seg")).map(|e| e.metadata().unwrap().len()).sum();
    assert!(spooled > 500 * 1000, "{spooled} bytes spooled");
}
