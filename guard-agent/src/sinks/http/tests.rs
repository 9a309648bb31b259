//! Unit tests of `http`.
use super::*;
use crate::config::Secret;

#[test]
fn base64_matches_the_rfc_4648_vectors() {
    let cases = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")];
    for (plain, enc) in cases {
        assert_eq!(base64(plain.as_bytes()), enc);
    }
}

#[test]
fn hec_events_carry_the_verdict_and_its_time() {
    let e = Encoder::new(&Vendor::SplunkHec { token: Secret::Inline("t".into()), index: Some("sec".into()), source: "guard".into(), sourcetype: "guard:ocsf".into() }).unwrap();
    let line = r#"{"time":1795260522213,"metadata":{"sequence":7},"x":"a\"b"}"#;
    let out = String::from_utf8(e.encode(line, None).unwrap()).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["time"].to_string(), "1795260522.213");
    assert_eq!(v["event"], serde_json::from_str::<Value>(line).unwrap());
    assert_eq!((v["source"].as_str(), v["sourcetype"].as_str(), v["index"].as_str()), (Some("guard"), Some("guard:ocsf"), Some("sec")));
    assert!(v["host"].as_str().is_some_and(|h| !h.is_empty()));
    let early = String::from_utf8(e.encode(r#"{"time":5}"#, None).unwrap()).unwrap();
    assert!(early.starts_with("{\"time\":0.005,"), "{early}");
    assert!(e.encode("[1]", None).is_err() && e.encode("{\"a\":", None).is_err());
}

#[test]
fn es_actions_create_with_the_sequence_as_id() {
    let e = Encoder::new(&Vendor::Elasticsearch { index: "guard-verdicts".into(), auth: None }).unwrap();
    let out = String::from_utf8(e.encode(r#"{"time":0,"metadata":{"sequence":42}}"#, None).unwrap()).unwrap();
    let lines: Vec<&str> = out.split_terminator('\n').collect();
    assert!(out.ends_with('\n') && lines.len() == 2, "{out:?}");
    assert_eq!(lines[0], format!(r#"{{"create":{{"_index":"guard-verdicts","_id":"{}-42"}}}}"#, crate::verdict::hostname()));
    let doc: Value = serde_json::from_str(lines[1]).unwrap();
    assert!(doc["@timestamp"].as_str().is_some_and(|t| t.starts_with("1970-01-01T00:00:00")), "{doc}");
}

#[test]
fn replies_are_judged_as_each_vendor_documents() {
    let s = Some(Duration::from_secs(3));
    assert_eq!(hec_reply(200, r#"{"text":"Success","code":0}"#, None, 3), Reply::Ok);
    assert!(matches!(hec_reply(503, "{\"code\":9}", s, 3), Reply::Later { after: Some(d), .. } if d == Duration::from_secs(3)));
    assert!(matches!(hec_reply(401, "", None, 3), Reply::Later { .. }));
    assert!(matches!(hec_reply(400, r#"{"text":"No data","code":5}"#, None, 3), Reply::Split { .. }));
    let partial = hec_reply(400, r#"{"text":"Invalid data format","code":6,"invalid-event-number":1}"#, None, 3);
    let Reply::Items(f) = partial else { panic!("{partial:?}") };
    assert!(matches!(f.as_slice(), [Fate::Delivered, Fate::Rejected(_), Fate::Next]));
    assert!(matches!(hec_reply(413, "", None, 3), Reply::Split { .. }));

    assert_eq!(es_reply(200, r#"{"errors":false,"items":[{"create":{"status":201}}]}"#, None, 1), Reply::Ok);
    let mixed = r#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":409}},{"create":{"status":429}},{"create":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"bad"}}},{"create":{"status":503}}]}"#;
    let Reply::Items(f) = es_reply(200, mixed, None, 5) else { panic!() };
    assert!(matches!(f.as_slice(), [Fate::Delivered, Fate::Delivered, Fate::Again, Fate::Rejected(r), Fate::Again] if r.contains("mapper_parsing_exception")));
    assert!(matches!(es_reply(200, mixed, None, 4), Reply::Later { .. }), "item count mismatch");
    assert!(matches!(es_reply(429, "", s, 5), Reply::Later { after: Some(_), .. }));
    assert!(matches!(es_reply(200, "<html>", None, 5), Reply::Later { .. }));
    assert!(matches!(es_reply(400, "{}", None, 5), Reply::Split { .. }));
}
