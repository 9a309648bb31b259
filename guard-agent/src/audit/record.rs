//! One line of the audit log: its exact layout, the canonical JSON its body is written in, and
//! the hash that links it to the line before. See the module docs of `audit` for the format.
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// Prefixed to every hashed encoding, so a record hash can never be confused with a hash of
/// anything else (and a later format can change the prefix).
const HASH_DOMAIN: &[u8] = b"guard-audit-v1\n";
/// Prefixed to a checkpoint's hash before it is signed, so a checkpoint signature can never be
/// replayed as a signature of something else made with the same key.
const SIG_DOMAIN: &[u8] = b"guard-audit-checkpoint-v1\n";
/// The previous hash of the very first record.
pub const GENESIS: [u8; 32] = [0; 32];
/// The largest seq a record may have (seqs start at 1): with one to spare, `seq + 1` never
/// overflows, whatever a crafted line says.
pub const MAX_SEQ: u64 = u64::MAX - 1;
/// `,"hash":"` + 64 hex digits + `"}`: the fixed tail of every line.
const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

/// What a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A verdict as the daemon reported it.
    Verdict,
    /// A signed seal over everything before it.
    Checkpoint,
    /// Something the writer itself had to say (e.g. it repaired a torn line after a crash).
    Note,
}

impl Kind {
    /// The JSON key the body is stored under.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Verdict => "verdict",
            Kind::Checkpoint => "checkpoint",
            Kind::Note => "note",
        }
    }

    /// The byte hashed for the kind, so moving a body to another key changes the hash.
    fn tag(self) -> u8 {
        match self {
            Kind::Verdict => b'V',
            Kind::Checkpoint => b'C',
            Kind::Note => b'N',
        }
    }

    fn from_key(key: &[u8]) -> Option<Kind> {
        [Kind::Verdict, Kind::Checkpoint, Kind::Note].into_iter().find(|k| k.key().as_bytes() == key)
    }
}

/// A record as read from a line: the body is the exact bytes written, never re-serialised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord<'a> {
    pub seq: u64,
    pub ts: u64,
    pub prev: [u8; 32],
    pub kind: Kind,
    pub body: &'a [u8],
    pub hash: [u8; 32],
}

impl RawRecord<'_> {
    /// The hash the record should carry, from what it holds; an error if a checkpoint's body is
    /// not one the writer could have made.
    pub fn computed_hash(&self) -> Result<[u8; 32], String> {
        match self.kind {
            Kind::Checkpoint => Ok(hash(self.seq, self.ts, &self.prev, self.kind, &Checkpoint::parse(self.body)?.hashed())),
            Kind::Verdict | Kind::Note => Ok(hash(self.seq, self.ts, &self.prev, self.kind, self.body)),
        }
    }
}

/// A checkpoint's body. `key_id` and `sig` are empty when the writer had no key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Records since the previous checkpoint (or since the start of the log), not counting
    /// either checkpoint.
    pub count: u64,
    pub key_id: String,
    /// Why it was written: `records`, `interval`, `rotate`, `shutdown`, `gap` (right after a
    /// gap record).
    pub reason: String,
    pub sig: String,
}

impl Checkpoint {
    /// The body as written: canonical JSON, `sig` included.
    pub fn render(&self) -> Vec<u8> {
        canonical(&json!({ "count": self.count, "key_id": self.key_id, "reason": self.reason, "sig": self.sig }))
    }

    /// What the record hash covers: the body without `sig`. The signature is made over that
    /// hash, so it cannot be inside it; a changed `sig` is caught by the signature check.
    pub fn hashed(&self) -> Vec<u8> {
        canonical(&json!({ "count": self.count, "key_id": self.key_id, "reason": self.reason }))
    }

    /// Parses a checkpoint body and insists it is exactly in the form the writer makes, so no
    /// byte of it can change unnoticed (the hash does not cover `sig`).
    pub fn parse(body: &[u8]) -> Result<Checkpoint, String> {
        let c: Checkpoint = serde_json::from_slice(body).map_err(|e| format!("checkpoint body is not valid: {e}"))?;
        let signed = !c.key_id.is_empty() || !c.sig.is_empty();
        if signed && (!is_hex(&c.key_id, 16) || !is_hex(&c.sig, 128)) {
            return Err("checkpoint key_id/sig are not 16/128 lowercase hex digits".into());
        }
        if !["records", "interval", "rotate", "shutdown", "gap"].contains(&c.reason.as_str()) {
            return Err(format!("checkpoint reason {:?} is not one the writer uses", c.reason));
        }
        if c.render() != body {
            return Err("checkpoint body is not in canonical form (bytes were changed)".into());
        }
        Ok(c)
    }
}

/// The message a checkpoint's Ed25519 signature is made over.
pub fn signed_message(hash: &[u8; 32]) -> Vec<u8> {
    [SIG_DOMAIN, hash.as_slice()].concat()
}

/// SHA-256 over `domain ‖ seq (8 bytes BE) ‖ ts (8 bytes BE) ‖ prev (32 bytes) ‖ kind tag (1
/// byte) ‖ body length (8 bytes BE) ‖ body`. Fixed-width fields and a length prefix make the
/// encoding unambiguous: no two different records share an input.
pub fn hash(seq: u64, ts: u64, prev: &[u8; 32], kind: Kind, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(HASH_DOMAIN);
    h.update(seq.to_be_bytes());
    h.update(ts.to_be_bytes());
    h.update(prev);
    h.update([kind.tag()]);
    h.update((body.len() as u64).to_be_bytes());
    h.update(body);
    h.finalize().into()
}

/// One line (with its newline): `{"seq":N,"ts":N,"prev":"HEX","KIND":BODY,"hash":"HEX"}`.
/// `body` must be canonical JSON; `h` is the record's [`hash`] (over the body itself, except
/// for checkpoints, whose signature it cannot cover).
pub fn render_line(seq: u64, ts: u64, prev: &[u8; 32], kind: Kind, body: &[u8], h: &[u8; 32]) -> Vec<u8> {
    let mut line = format!("{{\"seq\":{seq},\"ts\":{ts},\"prev\":\"{}\",\"{}\":", hex(prev), kind.key()).into_bytes();
    line.extend_from_slice(body);
    line.extend_from_slice(format!(",\"hash\":\"{}\"}}\n", hex(h)).as_bytes());
    line
}

/// Reads a line (without its newline) in the exact layout [`render_line`] writes. Any other
/// layout is an error, not a guess: the verifier never has to decide what a changed line meant.
pub fn parse_line(line: &[u8]) -> Result<RawRecord<'_>, String> {
    let mut p = Cursor { rest: line };
    p.expect(b"{\"seq\":", "does not start with {\"seq\":")?;
    let seq = p.number("seq")?;
    if !(1..=MAX_SEQ).contains(&seq) {
        return Err(format!("\"seq\" {seq} is out of range (1..{MAX_SEQ})"));
    }
    p.expect(b",\"ts\":", "no \"ts\" after \"seq\"")?;
    let ts = p.number("ts")?;
    p.expect(b",\"prev\":\"", "no \"prev\" after \"ts\"")?;
    let prev = p.hash("prev")?;
    p.expect(b"\",\"", "no record kind after \"prev\"")?;
    let end = p.rest.iter().position(|&b| b == b'"').ok_or("the record kind is not closed")?;
    let kind = Kind::from_key(&p.rest[..end]).ok_or_else(|| {
        format!("unknown record kind {:?} (expected verdict, checkpoint or note)", String::from_utf8_lossy(&p.rest[..end]))
    })?;
    p.rest = &p.rest[end..];
    p.expect(b"\":", "the record kind is not followed by a value")?;
    let rest = p.rest;
    if rest.len() < HASH_SUFFIX_LEN {
        return Err("the line is too short to end with \"hash\"".into());
    }
    let (body, suffix) = rest.split_at(rest.len() - HASH_SUFFIX_LEN);
    let mut s = Cursor { rest: suffix };
    s.expect(b",\"hash\":\"", "does not end with \"hash\"")?;
    let hash = s.hash("hash")?;
    s.expect(b"\"}", "does not end with \"}")?;
    if body.is_empty() {
        return Err(format!("the {} is empty", kind.key()));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(|e| format!("the {} is not valid JSON: {e}", kind.key()))?;
    Ok(RawRecord { seq, ts, prev, kind, body, hash })
}

/// A forward-only reader over the bytes of a line.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl Cursor<'_> {
    fn expect(&mut self, lit: &[u8], what: &str) -> Result<(), String> {
        match self.rest.strip_prefix(lit) {
            Some(r) => {
                self.rest = r;
                Ok(())
            }
            None => Err(what.to_owned()),
        }
    }

    /// A decimal u64 without sign or leading zeros (the only form the writer makes).
    fn number(&mut self, field: &str) -> Result<u64, String> {
        let n = self.rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let digits = &self.rest[..n];
        if n == 0 || (n > 1 && digits[0] == b'0') {
            return Err(format!("\"{field}\" is not a plain decimal number"));
        }
        let v = std::str::from_utf8(digits).ok().and_then(|s| s.parse().ok()).ok_or_else(|| format!("\"{field}\" is out of range"))?;
        self.rest = &self.rest[n..];
        Ok(v)
    }

    /// 64 lowercase hex digits.
    fn hash(&mut self, field: &str) -> Result<[u8; 32], String> {
        let digits = self.rest.get(..64).ok_or_else(|| format!("\"{field}\" is not 64 hex digits"))?;
        let v = unhex32(digits).ok_or_else(|| format!("\"{field}\" is not 64 lowercase hex digits"))?;
        self.rest = &self.rest[64..];
        Ok(v)
    }
}

/// Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace, strings escaped
/// minimally (`"`, `\` and control characters only), numbers as serde_json prints them. The
/// keys are sorted here rather than by relying on serde_json's map type, whose order depends on
/// the `preserve_order` feature anything in the build may turn on.
pub fn canonical(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
    }
}

/// A JSON string with the shortest escapes, so one string has one encoding.
fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            c if (c as u32) < 0x20 => out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes()),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    // A table, not `write!`: this runs twice per record (its hash and the previous one).
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Lowercase hex digits to bytes; `None` for anything else (uppercase is refused, so a value
/// has one spelling).
pub fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    s.chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

/// Exactly 64 lowercase hex digits to 32 bytes.
pub fn unhex32(s: &[u8]) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    unhex(s)?.try_into().ok()
}

/// `s` is `len` lowercase hex digits.
fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && unhex(s.as_bytes()).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_two_digits_a_byte_and_unhex_reverses_it() {
        let all: Vec<u8> = (0..=255).collect();
        let h = hex(&all);
        assert_eq!(h.len(), 512);
        assert!(h.starts_with("000102") && h.ends_with("fdfeff") && h.contains("0a0b") && !h.contains(char::is_uppercase));
        assert_eq!(unhex(h.as_bytes()), Some(all));
    }

    #[test]
    fn canonical_sorts_keys_and_escapes_minimally() {
        let v: Value = serde_json::from_str(r#"{"b":1,"a":{"z":[true,null,"x\"\\\n\u0001é"],"y":-2.5}}"#).unwrap();
        assert_eq!(String::from_utf8(canonical(&v)).unwrap(), r#"{"a":{"y":-2.5,"z":[true,null,"x\"\\\n\u0001é"]},"b":1}"#);
    }

    #[test]
    fn a_rendered_line_parses_back_to_the_same_record() {
        let prev = [7u8; 32];
        let body = canonical(&json!({"verdict": "killed", "pid": 4}));
        let h = hash(3, 1_700_000_000_000, &prev, Kind::Verdict, &body);
        let line = render_line(3, 1_700_000_000_000, &prev, Kind::Verdict, &body, &h);
        let r = parse_line(line.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!((r.seq, r.ts, r.prev, r.kind, r.body, r.hash), (3, 1_700_000_000_000, prev, Kind::Verdict, body.as_slice(), h));
        assert_eq!(hash(r.seq, r.ts, &r.prev, r.kind, r.body), r.hash);
    }

    #[test]
    fn every_single_byte_change_is_refused_or_changes_the_hash_and_never_panics() {
        let body = canonical(&json!({"a": "b", "n": [1, 2.5e10]}));
        let line = render_line(12, 99, &GENESIS, Kind::Verdict, &body, &hash(12, 99, &GENESIS, Kind::Verdict, &body));
        let line = line.strip_suffix(b"\n").unwrap();
        for i in 0..line.len() {
            for b in [b'0', b'a', b'"', b'}', b' ', 0xff, line[i] ^ 1] {
                if b == line[i] {
                    continue;
                }
                let mut m = line.to_vec();
                m[i] = b;
                if let Ok(r) = parse_line(&m) {
                    assert_ne!(hash(r.seq, r.ts, &r.prev, r.kind, r.body), r.hash, "byte {i} -> {b:#x} went unnoticed");
                }
            }
        }
        for n in 0..line.len() {
            let _ = parse_line(&line[..n]);
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let zero = render_line(0, 1, &GENESIS, Kind::Note, b"{}", &hash(0, 1, &GENESIS, Kind::Note, b"{}"));
        let max = render_line(u64::MAX, 1, &GENESIS, Kind::Note, b"{}", &hash(u64::MAX, 1, &GENESIS, Kind::Note, b"{}"));
        for g in [&b""[..], b"hello", b"{}", b"{\"seq\":01,", b"{\"seq\":1,\"ts\":2,\"prev\":\"zz\"", b"\xff\xfe", zero.trim_ascii_end(), max.trim_ascii_end()] {
            assert!(parse_line(g).is_err(), "{g:?}");
        }
    }

    #[test]
    fn checkpoint_bodies_must_be_canonical() {
        let c = Checkpoint { count: 3, key_id: "0123456789abcdef".into(), reason: "records".into(), sig: "ab".repeat(64) };
        assert_eq!(Checkpoint::parse(&c.render()).unwrap(), c);
        let spaced = String::from_utf8(c.render()).unwrap().replace(':', ": ");
        assert!(Checkpoint::parse(spaced.as_bytes()).is_err());
        let upper = String::from_utf8(c.render()).unwrap().replace("abab", "ABAB");
        assert!(Checkpoint::parse(upper.as_bytes()).is_err());
    }
}
