//! Unit tests of `config`.
use super::*;

#[test]
fn installed_default_parses() {
    let c = parse("guard.yaml", DEFAULT_CONFIG).unwrap();
    assert_eq!(c.policy.as_deref(), Some(Path::new("/etc/guard/policy.d")));
    assert_eq!(c.sinks, Some(vec![SinkConfig::File { path: "/var/log/guard/verdicts.jsonl".into(), rotation: crate::config::Rotation::default() }]));
    let r = parse("g.yaml", "sinks:\n  - type: file\n    path: /v\n    rotate_bytes: 1MiB\n    rotate_age: 1h\n    keep: 3\n").unwrap();
    assert_eq!(r.sinks, Some(vec![SinkConfig::File { path: "/v".into(), rotation: crate::config::Rotation { max_bytes: 1 << 20, max_age: Some(Duration::from_secs(3600)), keep: 3 } }]));
    assert_eq!(c.metrics, None);
    assert_eq!(c.ring_buffer_kib, Some(1024));
    assert_eq!(c.state_dir.as_deref(), Some(Path::new("/var/lib/guard")));
}

#[test]
fn errors_have_positions_and_say_what_is_wrong() {
    let err = |t: &str| parse("g.yaml", t).unwrap_err().to_string();
    assert_eq!(err("polcy: /x\n").split(": ").next(), Some("g.yaml:1:1"));
    assert!(err("polcy: /x\n").contains("did you mean `policy`"), "{}", err("polcy: /x\n"));
    assert!(err("policy: rel/x\n").contains("absolute path"));
    assert!(err("ring_buffer_kib: 1000\n").starts_with("g.yaml:1:18: `ring_buffer_kib`"), "{}", err("ring_buffer_kib: 1000\n"));
    assert!(err("map_entries: -1\n").contains("map_entries"));
    assert!(err("observe_all_execs: yes\n").contains("`true` or `false`"));
    assert!(err("sinks:\n  - type: kafkaa\n").contains("unknown sink type `kafkaa`"));
    assert!(err("sinks:\n  - type: file\n").contains("missing required key `path`"));
    assert!(err("sinks:\n  - type: stdout\n  - type: stdout\n").contains("twice"));
    assert!(err("metrics:\n  listen: localhost\n").contains("127.0.0.1:9464"));
    assert!(err("[1, 2]\n").contains("must be a mapping"));
    assert_eq!(parse("g.yaml", "").unwrap(), Config::default());
}

#[test]
fn network_sinks_parse_with_defaults_and_derived_endpoints() {
    let c = parse(
        "g.yaml",
        "sinks:\n  - type: splunk_hec\n    url: https://splunk.example:8088\n    token_file: /etc/guard/hec-token\n    index: security\n    tls_ca: /etc/guard/ca.pem\n  - type: elasticsearch\n    name: siem\n    url: https://es.example:9200/\n    index: guard-verdicts\n    api_key_file: /etc/guard/es-key\n    gzip: false\n    batch_max_events: 100\n    batch_max_bytes: 512KiB\n    batch_max_wait: 250ms\n    timeout: 5s\n    backoff_max: 2m\n    spool_dir: /var/spool/guard-es\n    spool_max_bytes: 1GiB\n",
    )
    .unwrap();
    let sinks = c.sinks.unwrap();
    let SinkConfig::Network(hec) = &sinks[0] else { panic!("{sinks:?}") };
    assert_eq!(hec.name, "splunk_hec:splunk.example:8088");
    assert_eq!(hec.url, "https://splunk.example:8088/services/collector/event");
    assert!(matches!(&hec.vendor, Vendor::SplunkHec { token: Secret::File(p), index: Some(i), source, sourcetype }
        if p == Path::new("/etc/guard/hec-token") && i == "security" && source == "guard" && sourcetype == "guard:ocsf"));
    assert_eq!((hec.gzip, hec.batch_max_events, hec.batch_max_bytes, hec.spool_max_bytes), (true, 500, 1 << 20, 256 << 20));
    assert_eq!((hec.batch_max_wait, hec.timeout, hec.backoff_max), (Duration::from_secs(1), Duration::from_secs(10), Duration::from_secs(30)));
    assert_eq!(hec.tls_ca.as_deref(), Some(Path::new("/etc/guard/ca.pem")));
    let SinkConfig::Network(es) = &sinks[1] else { panic!() };
    assert_eq!((es.name.as_str(), es.url.as_str()), ("siem", "https://es.example:9200/_bulk"));
    assert!(matches!(&es.vendor, Vendor::Elasticsearch { index, auth: Some(EsAuth::ApiKey(Secret::File(_))) } if index == "guard-verdicts"));
    assert_eq!((es.gzip, es.batch_max_events, es.batch_max_bytes, es.spool_max_bytes), (false, 100, 512 << 10, 1 << 30));
    assert_eq!((es.batch_max_wait, es.timeout, es.backoff_max), (Duration::from_millis(250), Duration::from_secs(5), Duration::from_secs(120)));
    assert_eq!(es.spool_dir.as_deref(), Some(Path::new("/var/spool/guard-es")));
    // An explicit path is kept; an inline token is never printed.
    let c = parse("g.yaml", "sinks:\n  - type: splunk_hec\n    url: http://[::1]:8088/services/collector\n    token: abc-SECRET\n").unwrap();
    let SinkConfig::Network(n) = &c.sinks.as_ref().unwrap()[0] else { panic!() };
    assert_eq!(n.url, "http://[::1]:8088/services/collector");
    assert!(!format!("{c:?}").contains("abc-SECRET"));
}

#[test]
fn network_sink_errors_have_positions() {
    let err = |t: &str| parse("g.yaml", t).unwrap_err().to_string();
    let hec = "sinks:\n  - type: splunk_hec\n    url: https://h:8088\n    token_file: /t\n";
    assert!(parse("g.yaml", hec).is_ok());
    let e = err(&format!("{hec}    tokn: x\n"));
    assert!(e.starts_with("g.yaml:5:5: unknown key `tokn`") && e.contains("did you mean `token`"), "{e}");
    assert!(err(&format!("{hec}    username: x\n")).contains("unknown key `username` in a `splunk_hec` sink"));
    assert!(err("sinks:\n  - type: splunk_hec\n    url: https://h\n").contains("needs `token_file`"));
    assert!(err(&format!("{hec}    token: x\n")).contains("not both"));
    assert!(err("sinks:\n  - type: splunk_hec\n    url: ftp://h\n    token: x\n").starts_with("g.yaml:3:10: `url`"));
    assert!(err("sinks:\n  - type: splunk_hec\n    url: https://h:99999\n    token: x\n").contains("not a port"));
    assert!(err("sinks:\n  - type: splunk_hec\n    url: https://u:p@h\n    token: x\n").contains("user info"));
    assert!(err(&format!("{hec}    batch_max_bytes: 1TB\n")).contains("is not a size"));
    assert!(err(&format!("{hec}    batch_max_events: 0\n")).contains("between 1 and"));
    assert!(err(&format!("{hec}    spool_max_bytes: 10KiB\n")).contains("between 1MiB and 1024GiB"));
    assert!(err(&format!("{hec}    timeout: soon\n")).contains("not a duration"));
    assert!(err(&format!("{hec}    gzip: maybe\n")).contains("`true` or `false`"));
    assert!(err(&format!("{hec}    spool_dir: rel\n")).contains("absolute path"));
    assert!(err(&format!("{hec}    name: a/b\n")).contains("may only use"));
    assert!(err(&format!("{hec}{}", &hec[7..])).contains("listed twice"));
    let es = "sinks:\n  - type: elasticsearch\n    url: https://h:9200\n";
    assert!(err(es).contains("missing required key `index`"));
    assert!(err(&format!("{es}    index: Guard\n")).contains("not a valid Elasticsearch index"));
    assert!(err(&format!("{es}    index: g\n    username: u\n")).contains("needs `password_file`"));
    assert!(err(&format!("{es}    index: g\n    api_key_file: /k\n    username: u\n    password_file: /p\n")).contains("not both"));
    assert!(err("sinks:\n  - type: stdout\n    path: /x\n").contains("unknown key `path` in a `stdout` sink"));
}
