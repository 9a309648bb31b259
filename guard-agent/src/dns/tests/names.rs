//! Host pattern parsing and matching.

use super::*;

#[test]
fn host_pattern_parse_and_display() {
    let p = HostPattern::parse("API.Example.com.").unwrap();
    assert_eq!(p.to_string(), "api.example.com");
    assert!(!p.is_wildcard());
    let w: HostPattern = "*.Example.COM".parse().unwrap();
    assert_eq!(w.to_string(), "*.example.com");
    assert_eq!(w.base(), "example.com");
    assert!(HostPattern::parse("_acme-challenge.example.com").is_ok());
    assert!(HostPattern::parse(&format!("{}.com", "a".repeat(63))).is_ok());
    let long = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    assert_eq!(long.len(), 253);
    assert!(HostPattern::parse(&long).is_ok());
    assert!(HostPattern::parse(&format!("{long}.")).is_ok());
}

#[test]
fn host_pattern_rejects() {
    let long = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(62)
    );
    for bad in [
        "",
        ".",
        "*",
        "*.",
        "**.example.com",
        "a.*.example.com",
        "foo*.example.com",
        "*example.com",
        "a..example.com",
        ".example.com",
        "example.com..",
        "exa mple.com",
        "exämple.com",
        "example.com/x",
        &format!("{}.com", "a".repeat(64)),
        &long,
    ] {
        assert!(HostPattern::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn host_pattern_matching() {
    let exact = HostPattern::parse("api.example.com").unwrap();
    assert!(exact.matches("api.example.com"));
    assert!(exact.matches("API.EXAMPLE.COM."));
    assert!(!exact.matches("x.api.example.com"));
    assert!(!exact.matches("example.com"));

    let w = HostPattern::parse("*.example.com").unwrap();
    assert!(w.matches("a.example.com"));
    assert!(w.matches("a.b.example.com."));
    assert!(w.matches("A.Example.Com"));
    assert!(!w.matches("example.com"));
    assert!(!w.matches("example.com."));
    assert!(!w.matches(".example.com"));
    assert!(!w.matches("badexample.com"));
    assert!(!w.matches("a.example.com.evil.net"));
    assert!(!w.matches("a..example.com"));
    assert!(!w.matches(""));
}
