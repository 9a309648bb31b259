//! Tunnel-shape detection: base domains, entropy, limits, rate, bounds.

use super::*;

#[test]
fn base_domains() {
    for (name, base) in [
        ("www.google.com", "google.com"),
        ("WWW.Google.COM.", "google.com"),
        ("google.com", "google.com"),
        ("localhost", "localhost"),
        ("", ""),
        ("a.b.example.co.uk", "example.co.uk"),
        ("example.co.uk", "example.co.uk"),
        ("co.uk", "co.uk"),
        ("shop.example.com.au", "example.com.au"),
        ("x.example.or.jp", "example.or.jp"),
        ("a.b.user.github.io", "github.io"),
        ("a.b.co.com", "co.com"),
        ("t.x.example.de", "example.de"),
    ] {
        assert_eq!(base_domain(name), base, "{name}");
    }
}

#[test]
fn entropy_values() {
    assert_eq!(label_entropy(""), 0.0);
    assert_eq!(label_entropy("aaaa"), 0.0);
    assert!((label_entropy("abab") - 1.0).abs() < 1e-9);
    assert!((label_entropy("0123456789abcdef") - 4.0).abs() < 1e-9);
}

fn base32_label(rng: &mut XorShift, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    (0..len)
        .map(|_| char::from(ALPHABET[rng.below(32)]))
        .collect()
}

fn hex_label(rng: &mut XorShift, len: usize) -> String {
    (0..len)
        .map(|_| char::from(b"0123456789abcdef"[rng.below(16)]))
        .collect()
}

#[test]
fn normal_names_are_not_flagged() {
    let mut rng = XorShift(7);
    let mut det = TunnelDetector::default();
    let t0 = Instant::now();
    let mut names = vec![
        "www.google.com".to_string(),
        "api.github.com".into(),
        "objects.githubusercontent.com".into(),
        "registry-1.docker.io".into(),
        "production.cloudflare.docker.com".into(),
        "s3.eu-west-1.amazonaws.com".into(),
        "ec2-203-0-113-25.eu-west-1.compute.amazonaws.com".into(),
        "_acme-challenge.internationalization.example.co.uk".into(),
        "4.3.2.1.in-addr.arpa".into(),
        "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa".into(),
    ];
    for _ in 0..10 {
        names.push(format!("{}.cdn.example.net", hex_label(&mut rng, 40)));
    }
    for i in 0..50 {
        let n = &names[i % names.len()];
        assert_eq!(det.limits().check_name(n), None, "{n}");
        let t = t0 + Duration::from_millis(200 * i as u64);
        assert_eq!(det.observe(1, n, t), None, "{n}");
    }
}

#[test]
fn iodine_style_long_names_are_flagged() {
    let mut rng = XorShift(11);
    let mut det = TunnelDetector::default();
    let labels: Vec<String> = (0..3).map(|_| base32_label(&mut rng, 57)).collect();
    let qname = format!("{}.t.example.com", labels.join("."));
    assert!(qname.len() > 180);
    let f = det.observe(9, &qname, Instant::now()).expect("flagged");
    assert!(
        matches!(f.reason, TunnelReason::LongName { max: 120, .. }),
        "{:?}",
        f.reason
    );
    assert_eq!(f.base_domain, "example.com");
    assert_eq!(f.qname, qname);
    // The same query also crosses the label limit: reported next, once.
    let f2 = det.observe(9, &qname, Instant::now()).expect("second kind");
    assert!(matches!(
        f2.reason,
        TunnelReason::LongLabel { len: 57, max: 52 }
    ));
    let f3 = det.observe(9, &qname, Instant::now()).expect("third kind");
    assert!(matches!(f3.reason, TunnelReason::HighEntropy { .. }));
    assert_eq!(det.observe(9, &qname, Instant::now()), None);
    // Another workload is tracked separately.
    assert!(det.observe(10, &qname, Instant::now()).is_some());
}

#[test]
fn random_base32_labels_are_flagged_by_entropy() {
    let mut rng = XorShift(13);
    let limits = TunnelLimits::default();
    for _ in 0..200 {
        let qname = format!("{}.tun.example.org", base32_label(&mut rng, 50));
        assert!(qname.len() <= limits.max_name_len);
        match limits.check_name(&qname) {
            Some(TunnelReason::HighEntropy {
                label,
                bits_per_char,
                max,
            }) => {
                assert_eq!(label.len(), 50);
                assert!(bits_per_char > 4.0 && bits_per_char <= 5.0);
                assert_eq!(max, 4.0);
            }
            other => panic!("{qname}: {other:?}"),
        }
    }
    let mut det = TunnelDetector::default();
    let f = det
        .observe(
            1,
            &format!("{}.tun.example.org", base32_label(&mut rng, 50)),
            Instant::now(),
        )
        .unwrap();
    assert_eq!(f.base_domain, "example.org");
    assert!(f.reason.to_string().contains("bits/char"));
}

#[test]
fn rate_limit_per_base_domain() {
    let t0 = Instant::now();
    let mut det = TunnelDetector::default();
    for i in 0..60u64 {
        let q = format!("q{i}.example.com");
        assert_eq!(
            det.observe(1, &q, t0 + Duration::from_millis(900 * i)),
            None,
            "{i}"
        );
    }
    let f = det
        .observe(1, "q60.example.com", t0 + Duration::from_millis(900 * 60))
        .expect("61st query flagged");
    assert!(matches!(
        f.reason,
        TunnelReason::Rate {
            queries: 61,
            max: 60,
            ..
        }
    ));
    assert!(f.reason.to_string().contains("61 queries"), "{}", f.reason);
    // Reported once.
    assert_eq!(
        det.observe(1, "q61.example.com", t0 + Duration::from_secs(55)),
        None
    );

    // 60 queries spread over different base domains: fine.
    let mut det = TunnelDetector::default();
    for i in 0..60u64 {
        let q = format!("www.example{i}.com");
        assert_eq!(
            det.observe(1, &q, t0 + Duration::from_millis(100 * i)),
            None
        );
    }
    // Exactly the limit within a window is fine too.
    let mut det = TunnelDetector::default();
    for i in 0..60u64 {
        assert_eq!(
            det.observe(1, "x.example.com", t0 + Duration::from_millis(10 * i)),
            None
        );
    }
}

#[test]
fn rate_window_slides() {
    let t0 = Instant::now();
    let mut det = TunnelDetector::default();
    // 50 queries in the first window, 50 late in the second: the sliding
    // estimate sees most of the first burst still in range.
    for i in 0..50u64 {
        assert_eq!(
            det.observe(1, "a.example.com", t0 + Duration::from_millis(i)),
            None
        );
    }
    let mut flagged = false;
    for i in 0..50u64 {
        let t = t0 + Duration::from_secs(61) + Duration::from_millis(i);
        flagged |= det.observe(1, "a.example.com", t).is_some();
    }
    assert!(flagged, "burst straddling the window boundary");

    // After two idle windows the count starts over.
    let mut det = TunnelDetector::default();
    for round in 0..3u64 {
        let start = t0 + Duration::from_secs(200 * round);
        for i in 0..60u64 {
            assert_eq!(
                det.observe(1, "a.example.com", start + Duration::from_millis(i)),
                None
            );
        }
    }
}

#[test]
fn detector_memory_is_bounded() {
    let t0 = Instant::now();
    let mut det = TunnelDetector::new(TunnelLimits::default(), 4);
    for i in 0..100u64 {
        det.observe(i % 3, &format!("www.d{i}.com"), t0);
        assert!(det.tracked() <= 4);
    }
    // Recently used pairs survive eviction.
    let mut det = TunnelDetector::new(TunnelLimits::default(), 2);
    for i in 0..59u64 {
        assert_eq!(
            det.observe(1, "keep.example.com", t0 + Duration::from_millis(i)),
            None
        );
        det.observe(1, &format!("www.other{i}.com"), t0);
    }
    assert!(det.observe(1, "keep.example.com", t0).is_none());
    assert!(
        det.observe(1, "keep.example.com", t0).is_some(),
        "count kept"
    );

    det.forget_workload(1);
    assert_eq!(det.tracked(), 0);
    det.observe(2, "a.example.com", t0);
    det.forget_workload(1);
    assert_eq!(det.tracked(), 1);
}

#[test]
fn zero_window_disables_rate() {
    let limits = TunnelLimits {
        window: Duration::ZERO,
        ..TunnelLimits::default()
    };
    let mut det = TunnelDetector::new(limits, 16);
    let t0 = Instant::now();
    for _ in 0..500 {
        assert_eq!(det.observe(1, "a.example.com", t0), None);
    }
}

#[test]
fn reason_display() {
    let r = TunnelReason::LongName { len: 200, max: 120 };
    assert_eq!(
        r.to_string(),
        "query name is 200 characters long (limit 120)"
    );
    let r = TunnelReason::LongLabel { len: 60, max: 52 };
    assert_eq!(
        r.to_string(),
        "query name has a 60-character label (limit 52)"
    );
    let r = TunnelReason::Rate {
        queries: 61,
        window: Duration::from_secs(60),
        max: 60,
    };
    assert_eq!(
        r.to_string(),
        "about 61 queries to one domain within 60s (limit 60)"
    );
}
