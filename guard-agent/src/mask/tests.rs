//! The masking corpus and the masker's properties (idempotent, never panics, no secret left).
use serde_json::json;

use super::*;

const CORPUS: &str = include_str!("corpus.txt");

/// The corpus: string cases, argv cases, negatives.
struct Corpus {
    strings: Vec<(String, String)>,
    argv: Vec<(Vec<String>, Vec<String>)>,
    negative: Vec<String>,
}

/// `\n`, `\t`, `\\` in the strings section.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

fn corpus() -> Corpus {
    let mut c = Corpus { strings: vec![], argv: vec![], negative: vec![] };
    let mut section = "";
    for line in CORPUS.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        match section {
            "[strings]" => {
                let (input, expected) = line.split_once('\t').expect("a tab between input and expected");
                c.strings.push((unescape(input), unescape(expected)));
            }
            "[argv]" => {
                let v: Value = serde_json::from_str(line).expect("an argv case is JSON");
                let list = |k: &str| -> Vec<String> {
                    v[k].as_array().expect("a list").iter().map(|x| x.as_str().expect("a string").to_string()).collect()
                };
                c.argv.push((list("argv"), list("masked")));
            }
            "[negative]" => c.negative.push(line.to_string()),
            other => panic!("unknown corpus section {other:?}"),
        }
    }
    c
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

#[test]
fn corpus_is_big_enough() {
    let c = corpus();
    assert!(c.strings.len() + c.argv.len() >= 40, "{} positive cases", c.strings.len() + c.argv.len());
    assert!(c.negative.len() >= 10);
}

#[test]
fn corpus_strings_are_masked() {
    let m = Masker::default();
    let mut failures = vec![];
    for (input, expected) in corpus().strings {
        let got = m.mask_str(&input);
        if got != expected {
            failures.push(format!("input:    {input}\nexpected: {expected}\ngot:      {got}\n"));
        }
        // Masking twice is masking once, and the second pass allocates nothing.
        if !matches!(m.mask_str(&got), Cow::Borrowed(_)) {
            failures.push(format!("not idempotent: {got} -> {}", m.mask_str(&got)));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn corpus_argv_is_masked() {
    let m = Masker::default();
    let mut failures = vec![];
    for (argv, expected) in corpus().argv {
        let mut got = argv.clone();
        m.mask_argv(&mut got);
        if got != expected {
            failures.push(format!("argv:     {argv:?}\nexpected: {expected:?}\ngot:      {got:?}\n"));
        }
        let mut again = got.clone();
        m.mask_argv(&mut again);
        if again != got {
            failures.push(format!("not idempotent: {got:?} -> {again:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn negatives_stay_as_they_are() {
    let m = Masker::default();
    for s in corpus().negative {
        assert!(matches!(m.mask_str(&s), Cow::Borrowed(_)), "mask_str changed {s:?} to {:?}", m.mask_str(&s));
        let mut argv = words(&s);
        m.mask_argv(&mut argv);
        assert_eq!(argv, words(&s), "mask_argv changed {s:?}");
        assert_eq!(m.mask_words(&s, 0), s, "mask_words changed {s:?}");
    }
}

/// The secrets planted in [`verdict`].
const PLANTED: &[&str] = &[
    "S3cretPass",
    "t0k3nValue99",
    "hunter2",
    "ghp_YK0fFWqcajQLE9WVxuXbrFZmU3A6IIRgmKJS",
    "0a1b2c3d4e5f6a7b8c9d0e1f",
    "glpat-0kyI5-wccpGUyG5QG01-",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "labelSecret1",
    "MIIEpAIBAAKCAQEA7bq3",
    "zz9-lbl-key",
    "IOSFODNN7EXAMPLE",
];

/// A verdict shaped like `Verdict::to_json` makes them, with secrets everywhere.
fn verdict() -> Value {
    let argv = ["mysql", "-u", "root", "-pS3cretPass", "--token", "t0k3nValue99", "https://bob:hunter2@db.example.com/x"];
    json!({
        "class_uid": 1007,
        "message": "Authorization: Bearer 0a1b2c3d4e5f6a7b8c9d0e1f was used",
        "process": {
            "pid": 10,
            "cmd_line": argv.join(" "),
            "working_directory": "/home/agent/ghp_YK0fFWqcajQLE9WVxuXbrFZmU3A6IIRgmKJS",
            "file": { "path": "/usr/bin/mysql", "name": "mysql" },
        },
        "unmapped": {
            "argv": argv,
            "argv_truncated": false,
            "reason": "env excerpt: AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "session": {
                "id": "s1",
                "labels": { "ticket": "OPS-1", "deploy": { "token": "glpat-0kyI5-wccpGUyG5QG01-", "list": ["db_password=labelSecret1", 3, null] } },
                "token=zz9-lbl-key": "a secret in a key",
            },
            "ancestry": [{ "pid": 9, "exe": "/bin/sh" }],
            "env": ["PATH=/usr/bin", "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "KEY=-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7bq3"],
        },
    })
}

#[test]
fn mask_value_leaves_no_secret_in_the_output() {
    let m = Masker::default();
    let mut v = verdict();
    m.mask_value(&mut v);
    let out = serde_json::to_string(&v).unwrap();
    for secret in PLANTED {
        assert!(!out.contains(secret), "{secret} leaked: {out}");
    }
    assert_eq!(v["unmapped"]["argv"][3], "-p***");
    assert_eq!(v["unmapped"]["argv"][5], "***");
    assert_eq!(v["unmapped"]["argv"][0], "mysql");
    // cmd_line says exactly what the masked argv says.
    let argv: Vec<&str> = v["unmapped"]["argv"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert_eq!(v["process"]["cmd_line"], argv.join(" "));
    assert_eq!(v["process"]["file"]["path"], "/usr/bin/mysql");
    assert_eq!(v["unmapped"]["session"]["labels"]["ticket"], "OPS-1");
    assert_eq!(v["unmapped"]["session"]["labels"]["deploy"]["list"][1], 3);
    assert_eq!(v["unmapped"]["session"]["token=***"], "a secret in a key");
    assert_eq!(v["unmapped"]["env"][0], "PATH=/usr/bin");
    // Idempotent on a whole verdict.
    let mut again = v.clone();
    m.mask_value(&mut again);
    assert_eq!(again, v);
}

#[test]
fn cmd_line_without_its_argv_is_masked_word_by_word() {
    let m = Masker::default();
    let mut v = json!({ "process": { "cmd_line": "sshpass -p hunter2 ssh deploy@host && mysql -pS3cret" } });
    m.mask_value(&mut v);
    assert_eq!(v["process"]["cmd_line"], "sshpass -p *** ssh deploy@host && mysql -p***");
}

#[test]
fn clean_strings_borrow() {
    let m = Masker::default();
    for s in ["", "/usr/bin/python3", "Process Activity", "exec.deny: basename: shred", "/home/agent/project/src"] {
        assert!(matches!(m.mask_str(s), Cow::Borrowed(_)), "{s}");
    }
}

#[test]
fn configured_patterns_mask() {
    let m = Masker::new(&[r"internal-(?P<secret>[a-z0-9]{12})".to_string(), r"CORP[0-9]{8}".to_string()]).unwrap();
    assert_eq!(m.mask_str("id internal-abcdef012345 ok"), "id internal-*** ok");
    assert_eq!(m.mask_str("badge CORP12345678."), "badge ***.");
    assert_eq!(m.mask_str("badge ***."), "badge ***.");
    // The built-ins stay.
    assert_eq!(m.mask_str("--password=x1"), "--password=***");
    let mut argv = words("tool --flag internal-abcdef012345");
    m.mask_argv(&mut argv);
    assert_eq!(argv, words("tool --flag internal-***"));
}

#[test]
fn a_bad_pattern_is_an_error_naming_it() {
    let e = Masker::new(&["ok[0-9]+".to_string(), "(unclosed".to_string()]).unwrap_err();
    assert!(e.contains("(unclosed"), "{e}");
    // An empty match is no secret.
    let m = Masker::new(&["x*".to_string()]).unwrap();
    assert_eq!(m.mask_str("abc"), "abc");
}

#[test]
fn key_names() {
    for k in ["DB_PASSWORD", "--client-secret", "npmAuthToken", "x-api-key", "PGPASSWORD", "MYSQL_PWD", "Pwd", "DB_PASS", "apiKey", "AWS_SECRET_ACCESS_KEY", "_authToken"] {
        assert!(is_secret_key(k), "{k}");
    }
    for k in ["PWD", "OLDPWD", "max_tokens", "token_type", "--password-file", "--password-stdin", "--no-password", "bypass", "key", "AWS_ACCESS_KEY_ID", "tokenizer", "--token-limit"] {
        assert!(!is_secret_key(k), "{k}");
    }
}

#[test]
fn odd_input_never_panics() {
    let m = Masker::default();
    // Every tool flag alone at the end, with an empty value, and attached.
    for t in TOOLS {
        for name in t.names {
            for f in t.flags {
                for flag in f.names {
                    for argv in [vec![*name, *flag], vec![*name, "login", "secret", *flag, ""], vec![*name, &format!("{flag}=")]] {
                        let mut argv: Vec<String> = argv.into_iter().map(String::from).collect();
                        m.mask_argv(&mut argv);
                    }
                }
            }
            for tail in [&[][..], &["-b"], &["login"], &["-c"], &["-p"], &["/"], &["userid="], &["a/"], &["-p", "1", "h"]] {
                let mut argv: Vec<String> = std::iter::once(*name).chain(tail.iter().copied()).map(String::from).collect();
                m.mask_argv(&mut argv);
            }
        }
    }
    let odd = [
        "", "-", "--", "=", "--=", "-p", ":", "a:", "://", "x://:@", "\\", "'", "\"", "\"password=", "password='", "-----BEGIN",
        "-----BEGIN RSA PRIVATE KEY-----", "Authorization:", "Authorization: Bearer", "pässwörd=geheimnis", "пароль: секрет",
        "password=пароль", "token=🔑🔑🔑", "é=é", "sudo -u", "timeout", "env A=1", "bash -c", "ssh -p", "ssh h", "sqlplus /",
    ];
    for s in odd {
        let _ = m.mask_str(s);
        let _ = m.mask_words(s, 0);
        let mut argv = words(s);
        m.mask_argv(&mut argv);
        let mut whole = vec![s.to_string(), s.to_string()];
        m.mask_argv(&mut whole);
    }
    assert_eq!(m.mask_str("password=пароль"), "password=***");
    assert_eq!(m.mask_str("пароль: секрет token=🔑"), "пароль: секрет token=***");
    let mut argv = vec![];
    m.mask_argv(&mut argv);
    assert!(argv.is_empty());
}

#[test]
fn huge_strings_are_masked_to_the_end() {
    let m = Masker::default();
    let mut s = "a b/c=d ".repeat(128 * 1024);
    assert_eq!(s.len(), 1 << 20);
    assert!(matches!(m.mask_str(&s), Cow::Borrowed(_)));
    s.push_str(" --password=hunter2 -----BEGIN EC PRIVATE KEY-----");
    s.push_str(&"QUJDREVGR0g=".repeat(50_000));
    let masked = m.mask_str(&s);
    assert!(masked.ends_with("--password=*** -----BEGIN EC PRIVATE KEY-----***"));
    let mut argv = vec!["mysql".to_string(), format!("-p{s}"), s.clone()];
    m.mask_argv(&mut argv);
    assert_eq!(argv[1], "-p***");
    assert!(!argv[2].contains("hunter2"));
}

#[test]
fn nesting_is_bounded() {
    let m = Masker::default();
    let mut script = "mysql -pS3cret".to_string();
    for _ in 0..50 {
        script = format!("bash -c {script}");
    }
    let _ = m.mask_words(&script, 0);
    let mut deep = json!("token=abc123");
    for _ in 0..500 {
        deep = json!({ "x": [deep] });
    }
    m.mask_value(&mut deep);
    assert!(!serde_json::to_string(&deep).unwrap().contains("abc123"));
}

/// Pseudo-random strings built from the pieces the rules care about: no panic, and a second
/// pass changes nothing.
#[test]
fn mixed_pieces_never_panic_and_stay_idempotent() {
    const PIECES: &[&str] = &[
        " ", "-p", "=", ":", "@", "://", "/", "'", "\"", "\\", ";", "&&", "|", "password", "token", "key", "x", "é", "€", "🔑", "-----BEGIN",
        "RSA PRIVATE KEY-----", "-----END", "Bearer ", "Authorization: ", "ghp_YK0fFWqcajQLE9WVxuXbrFZmU3A6IIRgmKJS", "mysql", "sshpass",
        "bash", "-c", "--", "ssh", "***", "AKIAIOSFODNN7EXAMPLE", "\n", "sk-", "abc123def456ghi789jkl", "curl", "-u", "bob:pa55",
        "--password", "https://", "sqlplus", "scott/tiger@db", "htpasswd", "-b", "vault", "login", "docker", "set", "config", "%", ",",
        "$X", "Cookie: ", "-H", "userid=",
    ];
    let m = Masker::default();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3_000 {
        let n = (next() % 24) as usize;
        let s: String = (0..n).map(|_| PIECES[(next() % PIECES.len() as u64) as usize]).collect();
        let once = m.mask_str(&s).into_owned();
        assert_eq!(m.mask_str(&once), once, "mask_str not idempotent on {s:?}");
        let mut argv = words(&s);
        m.mask_argv(&mut argv);
        let mut again = argv.clone();
        m.mask_argv(&mut again);
        assert_eq!(again, argv, "mask_argv not idempotent on {s:?}");
        let mut v = json!({ "process": { "cmd_line": s }, "unmapped": { "argv": words(&s), "note": s } });
        m.mask_value(&mut v);
        let mut again = v.clone();
        m.mask_value(&mut again);
        assert_eq!(again, v, "mask_value not idempotent on {s:?}");
    }
}

/// Found by fuzzing (`fuzz::mask`): each round of word masking ate a closing quote and so
/// uncovered more to mask, past the round limit, and a second pass changed the result.
#[test]
fn quoting_that_never_settles_is_masked_whole_and_stays_masked() {
    let m = Masker::default();
    let argv = ["-\"password=", "A\"|\";\"\n\" "];
    let mut v = json!({ "process": { "cmd_line": argv.join(" ") }, "unmapped": { "argv": argv } });
    m.mask_value(&mut v);
    let once = v.clone();
    m.mask_value(&mut v);
    assert_eq!(v, once);
    assert!(!v["process"]["cmd_line"].as_str().unwrap().contains('A'), "{v}");
}

/// The prefilter never calls a string clean that a built-in pattern matches: over every corpus
/// input (each string, each argument, each joined argv, each negative) and the same with the
/// case of ASCII letters flipped.
#[test]
fn prefilter_covers_every_builtin_match() {
    let m = Masker::default();
    let c = corpus();
    let mut inputs: Vec<String> = c.negative.clone();
    for (input, expected) in &c.strings {
        inputs.push(input.clone());
        inputs.push(expected.clone());
    }
    for (argv, masked) in &c.argv {
        inputs.extend(argv.iter().cloned());
        inputs.push(argv.join(" "));
        inputs.push(masked.join(" "));
    }
    let flipped: Vec<String> = inputs.iter().map(|s| s.chars().map(|ch| if ch.is_ascii_lowercase() { ch.to_ascii_uppercase() } else { ch.to_ascii_lowercase() }).collect()).collect();
    inputs.extend(flipped);
    let mut hits = 0;
    for s in &inputs {
        if m.set.is_match(s) {
            hits += 1;
            assert!(m.prefilter.is_match(s.as_str()), "the prefilter misses {s:?}, which {:?} match", m.set.matches(s).iter().collect::<Vec<_>>());
        }
    }
    assert!(hits > 100, "only {hits} corpus inputs match a pattern");
}

/// The prefilter's Unicode entries: case-insensitive patterns match an ASCII letter's case
/// variants, and only `ſ` and `K` (KELVIN SIGN) are non-ASCII variants of ASCII letters.
#[test]
fn only_two_non_ascii_characters_fold_to_ascii() {
    let letter = Regex::new("(?i)^[a-z]$").unwrap();
    let folding: Vec<char> = (0x80..=0x10ffff_u32).filter_map(char::from_u32).filter(|c| letter.is_match(c.encode_utf8(&mut [0; 4]))).collect();
    assert_eq!(folding, ['\u{17f}', '\u{212a}']);
    let m = Masker::default();
    for (s, expected) in [("Coo\u{212a}ie: session=abcdef", "Coo\u{212a}ie: ***"), ("https://h/o?\u{17f}ig=abcdef0123", "https://h/o?\u{17f}ig=***")] {
        assert!(m.may_hold_secret(s), "the prefilter misses {s:?}");
        assert_eq!(m.mask_str(s), expected);
    }
}

/// A string with no secret shape costs one literal scan and comes back as it was (borrowed).
#[test]
fn a_string_with_no_secret_shape_is_untouched() {
    let m = Masker::default();
    for s in [
        "", "/usr/bin/python3", "python3 -m pip install requests==2.31", "Process Activity: Launch", "/guard.slice/claude/s1",
        "140.82.112.3", "9f2c4e1a7b3d5f60", "Regular File", "exec of /usr/bin/shred", "ls -la /home/dev/project", "make -j8 all",
    ] {
        assert!(!m.may_hold_secret(s), "{s:?} passes the prefilter");
        assert!(matches!(m.mask_str(s), Cow::Borrowed(_)), "{s:?} changed");
    }
    // With an extra pattern, its own set decides for it.
    let extra = Masker::new(&["corp-[0-9]{6}".into()]).unwrap();
    assert!(!extra.may_hold_secret("/usr/bin/python3"));
    assert_eq!(extra.mask_str("id corp-123456 here"), "id *** here");
}

/// One case per family of built-in shapes: past the prefilter, the regexes still mask.
#[test]
fn each_pattern_family_still_masks_after_the_prefilter() {
    let m = Masker::default();
    let cases = [
        ("-----BEGIN RSA PRIVATE KEY-----MIIEpAIBAAKCAQEA-----END RSA PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----***-----END RSA PRIVATE KEY-----"),
        ("https://user:hunter22@example.com/x", "https://user:***@example.com/x"),
        ("Authorization: Bearer abcdef123456", "Authorization: Bearer ***"),
        ("Authorization: Digest username=a, response=b", "Authorization: Digest ***"),
        ("bearer abc123def456", "bearer ***"),
        ("DB_PASSWORD=S3cretPass", "DB_PASSWORD=***"),
        ("client_secret: labelSecret1", "client_secret: ***"),
        (r#"{"api_token": "t0k3nValue99"}"#, r#"{"api_token": "***"}"#),
        ("mysql --password S3cretPass", "mysql --password ***"),
        ("Cookie: session=abcdef", "Cookie: ***"),
        ("https://b.s3.amazonaws.com/o?X-Amz-Signature=abcdef0123", "https://b.s3.amazonaws.com/o?X-Amz-Signature=***"),
        ("aws_secret_access_key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key ***"),
        ("AKIAIOSFODNN7EXAMPLE", "AKIA***"),
        ("ghp_YK0fFWqcajQLE9WVxuXbrFZmU3A6IIRgmKJS", "ghp_***"),
        ("glpat-0kyI5-wccpGUyG5QG01-", "glpat-***"),
        ("xoxb-1234567890-abcdef", "xoxb-***"),
        ("sk_live_abcdefghij0123", "sk_live_***"),
        ("AIzaSyA1234567890abcdefghijklmnopqrstu", "AIza***"),
        ("sk-ant-abcdefghij0123456789xyz", "sk-ant-***"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "eyJ***"),
        ("hf_abcdefghijklmnopqrstuvwxyz0123456789", "hf_***"),
        ("https://hooks.slack.com/services/T000/B000/XXXX", "https://hooks.slack.com/services/***"),
    ];
    let mut failures = vec![];
    for (input, expected) in cases {
        assert!(m.may_hold_secret(input), "the prefilter misses {input:?}");
        let got = m.mask_str(input);
        if got != expected {
            failures.push(format!("input:    {input}\nexpected: {expected}\ngot:      {got}\n"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
