//! The Kafka sink against librdkafka's mock cluster: a real Kafka protocol server that this
//! test process owns, on loopback, whose address the real daemon is given. 30,000 verdicts;
//! the broker is down for the middle third and the daemon is restarted in the middle of the
//! outage; afterwards a real consumer reads the topic and finds every verdict either daemon
//! printed exactly once, keyed by the host, in order. Run as root by `cargo xtask test`.
use std::{
    collections::HashSet,
    thread,
    time::{Duration, Instant},
};

use guard_tests::{Daemon, TempDir, agent_cmd, launch, unique};
use rdkafka::{
    ClientConfig, Message as _, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer as _},
    mocking::MockCluster,
};
use serde_json::Value;

const TOPIC: &str = "guard-verdicts";
const PARTITIONS: i32 = 3;

fn sequence(v: &Value) -> u64 {
    v["metadata"]["sequence"].as_u64().expect("every verdict has metadata.sequence")
}

fn status() -> Value {
    serde_json::from_slice(&agent_cmd(&["status", "--json"]).stdout).expect("status --json")
}

fn kafka_status(st: &Value) -> Value {
    st["sinks"].as_array().unwrap().iter().find(|s| s["name"] == "kafka").cloned().unwrap_or_else(|| panic!("no kafka sink in {st:#}"))
}

/// `status --json` once `done` holds for the kafka sink (it takes verdicts in asynchronously).
fn status_when(what: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = status();
        if done(&kafka_status(&st)) {
            return st;
        }
        assert!(Instant::now() < deadline, "{what}: {st:#}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// An agent workload exec'ing /bin/true `n` times: `n` + 1 `allowed` verdicts (the shell too).
fn trues(agent: &str, n: usize) {
    let script = format!("i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done");
    let (_, out) = launch(agent, &["/bin/sh", "-c", &script], &[]);
    assert!(out.status.success(), "{out:?}");
}

/// Every record on the topic, from the start of each partition: (partition, key, verdict).
/// Reads until `want` have arrived and then two more seconds bring nothing (so a duplicate
/// would show), or 90 s pass.
fn consume(bootstrap: &str, want: usize) -> Vec<(i32, Option<String>, Value)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("kafka-test"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = Instant::now();
    while Instant::now() < deadline && (out.len() < want || last.elapsed() < Duration::from_secs(2)) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                let v: Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_else(|e| panic!("a record is not JSON ({e})"));
                out.push((m.partition(), key, v));
                last = Instant::now();
            }
            Some(Err(e)) => panic!("consuming {TOPIC}: {e}"),
            None => {}
        }
    }
    out
}

/// Exec records the running daemon's ring buffer had no room for (two exec loops at full speed
/// on a loaded machine): counted drops, reported as such; each accounts for its verdict.
fn exec_drops() -> u64 {
    status()["counters"]["ring_buffer_drops"].as_array().into_iter().flatten().filter(|d| d["kind"] == "exec").filter_map(|d| d["dropped"].as_u64()).sum()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_owned()
}

#[test]
fn an_outage_and_a_restart_lose_and_repeat_nothing_of_30000_verdicts_on_kafka() {
    const THIRD: usize = 10_000;
    let started = Instant::now();
    let mock = MockCluster::new(1).expect("librdkafka's mock cluster");
    mock.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    assert!(bootstrap.starts_with("127.0.0.1:"), "the mock cluster listens on loopback: {bootstrap}");
    let dir = TempDir::new("kafka-outage");
    let agent = unique("kafka-outage");
    let config = dir.path("guard.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {state}\nring_buffer_kib: 65536\nsinks:\n  - type: stdout\n  - type: kafka\n    name: kafka\n    brokers: [{bootstrap}]\n    topic: {TOPIC}\n    security_protocol: plaintext\n    batch_max_wait: 200ms\n    backoff_max: 1s\n",
            state = dir.path("state").display()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let policy = format!("agents:\n  - name: {agent}\n");
    // Two workloads at once, each a shell exec'ing /bin/true: 2 × (n + 1) verdicts.
    let run = |total: usize| {
        let half = total / 2 - 1;
        let a = agent.clone();
        let t = thread::spawn(move || trues(&a, half));
        trues(&agent, half);
        t.join().unwrap();
    };
    let settle = |d: &Daemon| {
        d.barrier(&agent);
        d.emitted().len()
    };

    let first = Daemon::start_with(&dir, &policy, &["--config", &config]);
    run(THIRD);
    let n1 = settle(&first);
    // Everything so far is acknowledged by the broker (nothing in flight when it goes down).
    status_when("the first third delivered", 60, |k| k["sent"].as_u64() == Some(n1 as u64) && k["backlog"] == 0 && k["healthy"] == true);
    let t1 = started.elapsed();
    let drops_before_outage = exec_drops();

    // Down: the broker drops its connections and takes no new ones. The middle third is
    // spooled; the daemon restarts halfway.
    mock.broker_down(1).unwrap();
    run(THIRD / 2);
    settle(&first);
    let drops_first = exec_drops();
    let before = first.emitted();
    first.stop_keeping_pins();
    let second = Daemon::start_with(&dir, &policy, &["--detach-on-exit", "--config", &config]);
    run(THIRD / 2);
    settle(&second);
    // Everything since the outage began waits in the spool, across the restart, and the sink
    // says it is not delivering.
    let so_far = before.len() + second.emitted().len();
    let st = status_when("the spool holds everything since the outage", 30, |k| k["backlog"].as_u64() == Some((so_far - n1) as u64) && k["healthy"] == false);
    let k = kafka_status(&st);
    let drops_middle = drops_first - drops_before_outage + exec_drops();
    assert!(k["backlog"].as_u64().unwrap() + drops_middle >= THIRD as u64 - 10, "{drops_middle} exec records dropped: {st:#}");
    assert_eq!(k["sent"], 0, "{st:#}");
    let t2 = started.elapsed();

    // Up again: the backlog goes out, in order, then the last third.
    mock.broker_up(1).unwrap();
    run(THIRD);
    settle(&second);
    let mut all: Vec<u64> = before.iter().map(sequence).collect();
    all.extend(second.emitted().iter().map(sequence));
    let dropped = drops_first + exec_drops();
    assert!(all.len() as u64 + dropped >= 3 * THIRD as u64 - 10, "{} verdicts, {dropped} exec records dropped", all.len());
    assert!(all.windows(2).all(|w| w[0] < w[1]), "sequence numbers increase across the restart");
    let st = status_when("nothing waiting, dropped or failed", 90, |k| (k["backlog"].as_u64(), k["dropped"].as_u64(), k["failed"].as_u64(), k["healthy"].as_bool()) == (Some(0), Some(0), Some(0), Some(true)));
    assert_eq!(kafka_status(&st)["sent"].as_u64(), Some((all.len() - n1) as u64), "the second daemon sent the middle and last thirds: {st:#}");
    let t3 = started.elapsed();

    // A real consumer reads the topic: every sequence exactly once, keyed by the host, in one
    // partition, in order.
    let records = consume(&bootstrap, all.len());
    let host = hostname();
    assert!(records.iter().all(|(_, k, _)| k.as_deref() == Some(host.as_str())), "every record is keyed by the host name {host}");
    let partitions: HashSet<i32> = records.iter().map(|(p, _, _)| *p).collect();
    assert_eq!(partitions.len(), 1, "one host's verdicts share a partition: {partitions:?}");
    let got: Vec<u64> = records.iter().map(|(_, _, v)| sequence(v)).collect();
    let have: HashSet<u64> = got.iter().copied().collect();
    let missing: Vec<_> = all.iter().filter(|s| !have.contains(s)).take(10).collect();
    assert!(missing.is_empty(), "the topic is missing {missing:?}... ({} of {})", got.len(), all.len());
    assert_eq!(have.len(), got.len(), "a sequence is on the topic twice");
    assert_eq!(got.len(), all.len(), "every verdict exactly once");
    assert_eq!(got, all, "in order");
    // The records are the verdicts the daemons printed.
    let printed: Vec<Value> = before.into_iter().chain(second.emitted()).collect();
    assert!(records.iter().zip(&printed).all(|((_, _, r), p)| r == p), "a record differs from the verdict printed");
    let stderr = second.stop_and_stderr();
    assert!(stderr.contains("delivering again"), "the sink said it recovered:\n{stderr}");
    println!(
        "30k Kafka outage run: {} verdicts; first third delivered at {:.1}s, outage to {:.1}s, all delivered at {:.1}s, consumed at {:.1}s",
        all.len(),
        t1.as_secs_f64(),
        t2.as_secs_f64(),
        t3.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// Kafka settings that cannot work stop the start with exit 2 before anything loads: a bad
/// value with its `file:line:col`, and a SASL password file that cannot be read.
#[test]
fn bad_kafka_settings_stop_the_start_with_their_position() {
    let dir = TempDir::new("kafka-bad");
    let policy = dir.path("policy.yaml");
    std::fs::write(&policy, format!("agents:\n  - name: {}\n", unique("kafka-bad"))).unwrap();
    let config = dir.path("guard.yaml");
    let daemon = |text: &str| {
        std::fs::write(&config, text).unwrap();
        let out = std::process::Command::new(guard_tests::agent_bin()).arg("daemon").arg("--policy").arg(&policy).arg("--config").arg(&config).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let sink = format!("state_dir: {}\nsinks:\n  - type: kafka\n    brokers: [127.0.0.1:9]\n    topic: {TOPIC}\n", dir.path("state").display());
    let (code, stderr) = daemon(&format!("{sink}    security_protocol: plaintext\n    tls_ca: /etc/ssl/certs/ca-certificates.crt\n"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{}:7:13: `tls_ca` needs `security_protocol: ssl` or `sasl_ssl`, not `plaintext`", config.display())), "{stderr}");
    let missing = dir.path("no-such-password");
    let (code, stderr) = daemon(&format!("{sink}    sasl_mechanism: SCRAM-SHA-256\n    sasl_username: guard\n    sasl_password_file: {}\n", missing.display()));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("reading the Kafka SASL password") && stderr.contains("No such file"), "{stderr}");
    guard_tests::assert_nothing_left();
}
