//! The learned-address cache and the seen-answer record.

use super::*;

#[test]
fn learned_extend_and_expire() {
    let t0 = Instant::now();
    let ip = v4([192, 0, 2, 1]);
    let mut l = Learned::default();
    let s = Duration::from_secs;
    assert!(l.learn(1, ip, "www.example.com", s(60), s(5), t0));
    assert!(
        !l.learn(1, ip, "WWW.example.com.", s(10), s(5), t0),
        "extension, not new"
    );
    assert_eq!(
        l.expires(1, ip),
        Some(t0 + s(65)),
        "shorter TTL does not shorten"
    );
    assert!(!l.learn(1, ip, "alt.example.com", s(120), s(5), t0 + s(30)));
    assert_eq!(l.expires(1, ip), Some(t0 + s(155)));
    assert_eq!(
        l.names(1, ip).unwrap(),
        ["www.example.com".to_string(), "alt.example.com".into()]
    );
    // A different key is a different entry.
    assert!(l.learn(2, ip, "www.example.com", s(1), s(0), t0));
    assert_eq!(l.len(), 2);

    assert_eq!(l.expired(t0 + s(1)), vec![(2, ip)]);
    assert!(l.expired(t0 + s(154)).is_empty());
    assert_eq!(l.expired(t0 + s(155)), vec![(1, ip)]);
    assert!(l.is_empty());
    assert!(l.names(1, ip).is_none());
}

#[test]
fn learned_names_are_capped() {
    let t0 = Instant::now();
    let ip = v4([192, 0, 2, 1]);
    let mut l = Learned::default();
    for i in 0..20 {
        l.learn(
            1,
            ip,
            &format!("n{i}.example.com"),
            Duration::from_secs(60),
            Duration::ZERO,
            t0,
        );
    }
    assert_eq!(l.names(1, ip).unwrap().len(), 8);
}

#[test]
fn learned_is_bounded_and_counts_refusals() {
    let t0 = Instant::now();
    let mut l = Learned::new(2, 2, DEFAULT_SEEN_TTL);
    let s = Duration::from_secs;
    assert!(l.learn(1, v4([192, 0, 2, 1]), "a", s(60), s(0), t0));
    assert!(l.learn(1, v4([192, 0, 2, 2]), "b", s(60), s(0), t0));
    assert!(!l.learn(1, v4([192, 0, 2, 3]), "c", s(60), s(0), t0));
    assert_eq!((l.len(), l.refused()), (2, 1));
    // Existing entries can still be extended when full.
    assert!(!l.learn(1, v4([192, 0, 2, 1]), "a", s(600), s(0), t0));
    assert_eq!(l.refused(), 1);
    assert_eq!(l.expires(1, v4([192, 0, 2, 1])), Some(t0 + s(600)));
    // Room again after expiry.
    assert_eq!(l.expired(t0 + s(60)), vec![(1, v4([192, 0, 2, 2]))]);
    assert!(l.learn(1, v4([192, 0, 2, 3]), "c", s(60), s(0), t0 + s(60)));
}

#[test]
fn learned_hostile_ttl_does_not_overflow() {
    let t0 = Instant::now();
    let mut l = Learned::default();
    let ip = v4([192, 0, 2, 1]);
    assert!(l.learn(1, ip, "a", Duration::MAX, Duration::MAX, t0));
    let exp = l.expires(1, ip).unwrap();
    assert!(exp > t0 && exp <= t0 + Duration::from_secs(8 * 24 * 3600));
}

#[test]
fn seen_lineage() {
    let t0 = Instant::now();
    let ip = v4([203, 0, 113, 9]);
    let mut l = Learned::new(16, 2, Duration::from_secs(600));
    l.saw(1, ip, "Blocked.Example.", t0);
    l.saw(1, ip, "other.example", t0 + Duration::from_secs(1));
    assert_eq!(
        l.seen_names(1, ip).unwrap(),
        vec!["blocked.example".to_string(), "other.example".into()]
    );
    assert!(l.seen_names(2, ip).is_none());
    assert!(l.names(1, ip).is_none(), "seen is not learned");
    // Bounded: a third address evicts the entry closest to expiry.
    l.saw(
        1,
        v4([203, 0, 113, 10]),
        "x.example",
        t0 + Duration::from_secs(2),
    );
    l.saw(
        1,
        v4([203, 0, 113, 11]),
        "y.example",
        t0 + Duration::from_secs(3),
    );
    assert_eq!(l.seen_len(), 2);
    assert!(l.seen_names(1, ip).is_none());
    // Expire after the seen TTL.
    l.expired(t0 + Duration::from_secs(602));
    assert!(l.seen_names(1, v4([203, 0, 113, 10])).is_none());
    assert!(l.seen_names(1, v4([203, 0, 113, 11])).is_some());
    l.expired(t0 + Duration::from_secs(603));
    assert_eq!(l.seen_len(), 0);
}

#[test]
fn forget_key_returns_addresses() {
    let t0 = Instant::now();
    let mut l = Learned::default();
    let s = Duration::from_secs;
    l.learn(1, v4([192, 0, 2, 1]), "a", s(60), s(0), t0);
    l.learn(2, v4([192, 0, 2, 2]), "b", s(60), s(0), t0);
    l.saw(1, v4([192, 0, 2, 3]), "c", t0);
    assert_eq!(l.forget_key(1), vec![v4([192, 0, 2, 1])]);
    assert_eq!(l.len(), 1);
    assert_eq!(l.seen_len(), 0);
    assert!(l.expired(t0 + s(60)).contains(&(2, v4([192, 0, 2, 2]))));
}
