//! Unit tests of the Kafka sink.
use super::*;

#[test]
fn records_must_be_json_objects_and_keep_their_time() {
    assert_eq!(check(r#"{"time":1700000000123,"a":1}"#, None), Ok(Some(1_700_000_000_123)));
    assert_eq!(check(r#"{"a":1}"#, None), Ok(None));
    assert!(check("[1]", None).unwrap_err().contains("not a JSON object"));
    assert!(check("{", None).unwrap_err().contains("not JSON"));
    assert!(for_good(RDKafkaErrorCode::MessageSizeTooLarge));
    assert!(!for_good(RDKafkaErrorCode::TopicAuthorizationFailed));
    assert!(!for_good(RDKafkaErrorCode::BrokerTransportFailure));
}

/// Every record on `topic` (all partitions, from the start), read by a real consumer until
/// `want` arrived and one more second brought nothing (so duplicates would show).
fn consume(bootstrap: &str, topic: &str, partitions: i32, want: usize) -> Vec<(Option<String>, String)> {
    use rdkafka::{Message as _, Offset, TopicPartitionList, consumer::{BaseConsumer, Consumer as _}};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "guard-unit-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline && (out.len() < want || quiet_since.elapsed() < Duration::from_secs(1)) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                out.push((key, String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()));
                quiet_since = Instant::now();
            }
            Some(Err(e)) => panic!("consuming: {e}"),
            None => {}
        }
    }
    out
}

fn wait(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The sender against librdkafka's mock cluster (a Kafka protocol server in this process):
/// verdicts from the spool arrive keyed by host, once and in order, across a broker outage
/// during which they wait in the spool, and the counters say so.
#[test]
fn spooled_verdicts_reach_the_mock_cluster_once_in_order_across_an_outage() {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("verdicts", 3, 1).unwrap();
    let dir = std::env::temp_dir().join(format!("guard-kafka-unit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "sinks:\n  - type: kafka\n    brokers: {}\n    topic: verdicts\n    security_protocol: plaintext\n    batch_max_events: 100\n    batch_max_wait: 50ms\n    backoff_max: 500ms\n    spool_dir: {}\n",
        mock.bootstrap_servers(),
        dir.display()
    );
    let cfg = crate::config::parse("g.yaml", &text).unwrap();
    let mut sinks = crate::sinks::Sinks::open(cfg.sinks.as_ref().unwrap(), None).unwrap();
    let line = |i: u64| format!(r#"{{"time":{},"metadata":{{"sequence":{i}}},"note":"line\nbreak"}}"#, 1_700_000_000_000u64 + i);
    let snap = |s: &mut crate::sinks::Sinks| {
        s.flush();
        let k = &s.list[0];
        (k.sent, k.failed, k.backlog, k.dropped, k.healthy)
    };
    for i in 0..1000 {
        sinks.write(&line(i));
    }
    sinks.flush();
    wait("the first 1000 delivered", 20, || snap(&mut sinks) == (1000, 0, 0, 0, true));

    mock.broker_down(1).unwrap();
    for i in 1000..2000 {
        sinks.write(&line(i));
    }
    // Not taken: they wait in the spool, and the sink says it is not delivering.
    wait("the outage noticed", 20, || {
        let (sent, _, backlog, _, healthy) = snap(&mut sinks);
        sent < 2000 && backlog == 2000 - sent && !healthy
    });
    mock.broker_up(1).unwrap();
    wait("the rest delivered", 30, || snap(&mut sinks) == (2000, 0, 0, 0, true));

    let got = consume(&mock.bootstrap_servers(), "verdicts", 3, 2000);
    let host = crate::verdict::hostname();
    assert!(got.iter().all(|(k, _)| k.as_deref() == Some(host)), "every record is keyed by the host");
    let seqs: Vec<u64> = got.iter().map(|(_, v)| serde_json::from_str::<Value>(v).unwrap()["metadata"]["sequence"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..2000).collect::<Vec<_>>(), "every verdict once, in order");
    sinks.shutdown(Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(&dir);
}

/// TLS and SASL settings reach librdkafka, which checks them when the producer is made: a CA
/// file that holds no certificate, or a client key that does not match, fails the start.
#[test]
fn tls_settings_are_checked_when_the_producer_is_made() {
    let dir = std::env::temp_dir().join(format!("guard-kafka-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let pw = dir.join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let sink = |extra: &str| {
        let text = format!("sinks:\n  - type: kafka\n    brokers: [127.0.0.1:9]\n    topic: t\n    spool_dir: {}\n{extra}", dir.join("spool").display());
        let c = crate::config::parse("g.yaml", &text).unwrap();
        let crate::config::SinkConfig::Network(n) = c.sinks.unwrap().remove(0) else { panic!() };
        n
    };
    // SASL over TLS with the system's CAs: librdkafka takes it.
    let ok = sink(&format!("    sasl_mechanism: SCRAM-SHA-512\n    sasl_username: guard\n    sasl_password_file: {}\n", pw.display()));
    let Vendor::Kafka(k) = &ok.vendor else { panic!() };
    let config = client_config(&ok, k).unwrap();
    assert_eq!((config.get("security.protocol"), config.get("sasl.mechanisms"), config.get("sasl.password")), (Some("sasl_ssl"), Some("SCRAM-SHA-512"), Some("s3cret")));
    assert_eq!((config.get("enable.idempotence"), config.get("acks"), config.get("message.timeout.ms")), (Some("true"), Some("all"), Some("0")));
    create(&config).unwrap();
    // A CA file without a certificate.
    let bad = sink(&format!("    tls_ca: {}\n", junk.display()));
    let Vendor::Kafka(k) = &bad.vendor else { panic!() };
    let e = create(&client_config(&bad, k).unwrap()).err().expect("a CA file without a certificate is refused").to_string();
    assert!(e.contains("ssl.ca.location"), "{e}");
    // A client certificate file that cannot be read.
    let gone = sink(&format!("    tls_cert: {}\n    tls_key: {}\n", dir.join("nope.pem").display(), junk.display()));
    let Vendor::Kafka(k) = &gone.vendor else { panic!() };
    let e = client_config(&gone, k).expect_err("an unreadable tls_cert is refused");
    assert!(format!("{e:#}").contains("reading tls_cert"), "{e:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A broker that refuses produce requests with a retriable error: the producer sends them
/// again, and each verdict is on the topic once, in order. (librdkafka 2.0's mock does not
/// write a batch it answers with an error, so this does not show the brokers dropping copies
/// by sequence number; that is Kafka's idempotence, not guard's.)
#[test]
fn batches_refused_with_retriable_errors_are_sent_again_once_in_order() {
    use rdkafka_sys::{RDKafkaApiKey, RDKafkaRespErr};
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("again", 1, 1).unwrap();
    let dir = std::env::temp_dir().join(format!("guard-kafka-again-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "sinks:\n  - type: kafka\n    brokers: {}\n    topic: again\n    security_protocol: plaintext\n    batch_max_events: 50\n    batch_max_wait: 10ms\n    spool_dir: {}\n",
        mock.bootstrap_servers(),
        dir.display()
    );
    let cfg = crate::config::parse("g.yaml", &text).unwrap();
    let mut sinks = crate::sinks::Sinks::open(cfg.sinks.as_ref().unwrap(), None).unwrap();
    sinks.write(r#"{"metadata":{"sequence":0}}"#);
    sinks.flush();
    wait("the first delivered", 20, || {
        sinks.flush();
        sinks.list[0].sent == 1
    });
    mock.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND; 5]);
    for i in 1..300 {
        sinks.write(&format!(r#"{{"metadata":{{"sequence":{i}}}}}"#));
    }
    sinks.flush();
    wait("all delivered", 60, || {
        sinks.flush();
        let k = &sinks.list[0];
        (k.sent, k.failed, k.backlog) == (300, 0, 0)
    });
    let got = consume(&mock.bootstrap_servers(), "again", 1, 300);
    let seqs: Vec<u64> = got.iter().map(|(_, v)| serde_json::from_str::<Value>(v).unwrap()["metadata"]["sequence"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..300).collect::<Vec<_>>(), "every verdict once, in order");
    sinks.shutdown(Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(&dir);
}
