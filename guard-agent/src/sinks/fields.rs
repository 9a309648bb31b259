//! The few values a sink needs from a verdict line (its `time`, `unmapped.verdict`, …), read in
//! one pass without building the rest of the tree: the line is the one encoding every sink
//! shares, and parsing it whole into a `Value` per sink cost more than making it.
//!
//! What [`fields`] finds is what `serde_json::from_str::<Value>` and `Value::pointer` would
//! find: the same value, `None` where the path is missing or crosses a non-object, and a key
//! that repeats counts as its last occurrence (the whole subtree is replaced). Text that is not
//! JSON is an error, as for `from_str`.
//!
//! It is a hand-written scanner rather than a serde visitor, which the syslog and HEC sinks ran
//! on every verdict (a visitor call per token, the paths compared at every value). What holds
//! none of the paths is checked by one loop, strings eight bytes at a time; only the values
//! found are handed to serde_json. Under callgrind, for a 1.7 KB exec verdict (the output bench,
//! `GUARD_BENCH_SINKS=hec`), the syslog message went from 58,500 to 52,700 instructions and the
//! HEC event from 31,600 to 26,900: each is still mostly this scan, about 25 instructions a
//! byte, a token at a time. So the lines the encoder writes straight from a verdict (exec and
//! connect activities, nearly all) carry marks instead, and [`marked`] slices their values out
//! (13,000 and 2,200 instructions); the scan is for the other lines and for marks that do not fit.
use std::fmt;

use serde_json::Value;

use crate::verdict::{Mark, Marks};

/// serde_json's nesting limit (127 arrays or objects deep), so that both accept the same lines and
/// the recursion is bounded.
const MAX_DEPTH: usize = 127;

/// Why a line is not JSON, and at which byte.
#[derive(Debug, PartialEq, Eq)]
pub struct NotJson {
    pub what: &'static str,
    pub at: usize,
}

impl fmt::Display for NotJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

impl std::error::Error for NotJson {}

/// The values at `paths` (object keys from the root) in the JSON text `line`, and whether its
/// root is an object; an error for text that is not JSON.
pub fn fields<const N: usize>(line: &str, paths: [&[&str]; N]) -> Result<(bool, [Option<Value>; N]), NotJson> {
    assert!(N <= 32, "at most 32 paths");
    let mut out: [Option<Value>; N] = std::array::from_fn(|_| None);
    let all = if N == 32 { u32::MAX } else { (1u32 << N) - 1 };
    let mut s = Scan { b: line.as_bytes(), line, pos: 0, paths: &paths, out: &mut out };
    s.ws();
    let object = s.value(all, 0)?;
    s.ws();
    if s.pos != s.b.len() {
        return Err(s.err("trailing characters"));
    }
    Ok((object, out))
}

/// The values of `wanted` in a verdict line, and whether its root is an object: sliced out
/// where the encoder marked them (`verdict::Marks`, kept in the spool beside the line), else
/// found by [`fields`]. A marked line is the daemon's own JSON and is not checked again (its
/// root is an object if it is braced); marks of a line of another length, or a mark that does
/// not slice out a JSON value (a damaged spool), send the whole line to the scan, which
/// checks it.
pub fn marked<const N: usize>(line: &str, marks: Option<&Marks>, wanted: [Mark; N]) -> Result<(bool, [Option<Value>; N]), NotJson> {
    if let Some(m) = marks
        && m.fit(line)
        && line.starts_with('{')
        && line.ends_with('}')
    {
        let mut out: [Option<Value>; N] = std::array::from_fn(|_| None);
        let sliced = wanted.iter().zip(&mut out).all(|(w, o)| match m.span(*w) {
            None => true,
            Some((s, e)) => {
                *o = line.get(s..e).and_then(|v| serde_json::from_str(v).ok());
                o.is_some()
            }
        });
        if sliced {
            return Ok((true, out));
        }
    }
    fields(line, wanted.map(Mark::path))
}

struct Scan<'a, 'p> {
    b: &'a [u8],
    line: &'a str,
    pos: usize,
    paths: &'a [&'p [&'p str]],
    out: &'a mut [Option<Value>],
}

/// The index of the first `"`, `\\` or control character in `b` from `at`, or `b.len()`: eight
/// bytes at a time (the bits of a byte that matches are set; a false one can only follow a true
/// one, so the lowest is right).
fn special(b: &[u8], mut at: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(at..at + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
        let hits = zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\'))) | (w.wrapping_sub(ONES * 0x20) & !w & HIGH);
        if hits != 0 {
            return at + (hits.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while let Some(&c) = b.get(at) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        at += 1;
    }
    at
}

impl Scan<'_, '_> {
    fn err(&self, what: &'static str) -> NotJson {
        NotJson { what, at: self.pos }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: u8, what: &'static str) -> Result<(), NotJson> {
        self.ws();
        if self.peek() != Some(c) {
            return Err(self.err(what));
        }
        self.pos += 1;
        Ok(())
    }

    /// One value at `depth`, on the way to the `active` paths (a bit per path); whether it is an
    /// object.
    fn value(&mut self, active: u32, depth: usize) -> Result<bool, NotJson> {
        if active == 0 {
            return self.skip(depth);
        }
        // The paths that end here take the whole value (parsed by serde_json once it is
        // scanned); the others go on into it.
        let mut ending = 0u32;
        for (i, p) in self.paths.iter().enumerate() {
            if active & (1 << i) != 0 && p.len() == depth {
                ending |= 1 << i;
            }
        }
        let start = self.pos;
        let object = if self.peek() == Some(b'{') && active & !ending != 0 {
            if depth >= MAX_DEPTH {
                return Err(self.err("nested too deeply"));
            }
            self.object(active & !ending, depth)?;
            true
        } else {
            self.skip(depth)?
        };
        if ending != 0 {
            let v: Value = serde_json::from_str(&self.line[start..self.pos]).map_err(|_| NotJson { what: "a value serde_json refuses", at: start })?;
            for i in 0..self.out.len() {
                if ending & (1 << i) != 0 {
                    self.out[i] = Some(v.clone());
                }
            }
        }
        Ok(object)
    }

    /// Checks one value at `depth` and moves past it, looking for nothing in it (nearly every
    /// value of a line): a loop with the open arrays and objects as bits, not a call per value.
    /// Whether it is an object.
    fn skip(&mut self, depth: usize) -> Result<bool, NotJson> {
        let object = self.peek() == Some(b'{');
        // Bit `i`: whether the `i`-th open container (from the outermost) is an object.
        let mut open: u128 = 0;
        let mut level = 0usize;
        loop {
            // A value.
            match self.peek() {
                Some(c @ (b'{' | b'[')) => {
                    if depth + level >= MAX_DEPTH {
                        return Err(self.err("nested too deeply"));
                    }
                    self.pos += 1;
                    self.ws();
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.pos += 1;
                    } else {
                        if c == b'{' {
                            open |= 1 << level;
                            self.key()?;
                        } else {
                            open &= !(1 << level);
                        }
                        level += 1;
                        continue;
                    }
                }
                Some(b'"') => {
                    self.string()?;
                }
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.word("true")?,
                Some(b'f') => self.word("false")?,
                Some(b'n') => self.word("null")?,
                Some(_) => return Err(self.err("expected a value")),
                None => return Err(self.err("end of text where a value was expected")),
            }
            // After a value: close containers until one goes on with a `,`.
            loop {
                if level == 0 {
                    return Ok(object);
                }
                self.ws();
                let in_object = open & (1 << (level - 1)) != 0;
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        self.ws();
                        if in_object {
                            self.key()?;
                        }
                        break;
                    }
                    Some(b'}') if in_object => {
                        self.pos += 1;
                        level -= 1;
                    }
                    Some(b']') if !in_object => {
                        self.pos += 1;
                        level -= 1;
                    }
                    _ => return Err(self.err(if in_object { "expected ',' or '}' in an object" } else { "expected ',' or ']' in an array" })),
                }
            }
        }
    }

    /// An object key and its `:`, up to the value (whitespace skipped), from `"`.
    fn key(&mut self) -> Result<(), NotJson> {
        if self.peek() != Some(b'"') {
            return Err(self.err("expected an object key"));
        }
        self.string()?;
        self.expect(b':', "expected ':' after an object key")?;
        self.ws();
        Ok(())
    }

    fn word(&mut self, w: &'static str) -> Result<(), NotJson> {
        if !self.b[self.pos..].starts_with(w.as_bytes()) {
            return Err(self.err("expected a value"));
        }
        self.pos += w.len();
        Ok(())
    }

    fn object(&mut self, active: u32, depth: usize) -> Result<(), NotJson> {
        self.pos += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected an object key"));
            }
            let key_start = self.pos;
            let escaped = self.string()?;
            let mut hits = 0u32;
            if active != 0 {
                let raw = &self.line[key_start + 1..self.pos - 1];
                let decoded;
                let key = if escaped {
                    decoded = serde_json::from_str::<String>(&self.line[key_start..self.pos]).map_err(|_| NotJson { what: "a key serde_json refuses", at: key_start })?;
                    decoded.as_str()
                } else {
                    raw
                };
                for (i, p) in self.paths.iter().enumerate() {
                    if active & (1 << i) != 0 && p.get(depth) == Some(&key) {
                        hits |= 1 << i;
                        // A repeated key replaces what an earlier one held.
                        self.out[i] = None;
                    }
                }
            }
            self.expect(b':', "expected ':' after an object key")?;
            self.ws();
            self.value(hits, depth + 1)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.err("expected ',' or '}' in an object")),
            }
        }
    }

    /// A string from its opening quote to past its closing one; whether it had escapes.
    fn string(&mut self) -> Result<bool, NotJson> {
        self.pos += 1;
        let mut escaped = false;
        loop {
            self.pos = special(self.b, self.pos);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    escaped = true;
                    self.escape()?;
                }
                Some(_) => return Err(self.err("control character in a string")),
                None => return Err(self.err("unterminated string")),
            }
        }
    }

    /// The rest of an escape, after its backslash.
    fn escape(&mut self) -> Result<(), NotJson> {
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 1;
                Ok(())
            }
            Some(b'u') => {
                self.pos += 1;
                let c = self.hex4()?;
                match c {
                    0xD800..=0xDBFF => {
                        // A leading surrogate must be followed by an escaped trailing one.
                        if !self.b[self.pos..].starts_with(b"\\u") {
                            return Err(self.err("lone leading surrogate"));
                        }
                        self.pos += 2;
                        if !(0xDC00..=0xDFFF).contains(&self.hex4()?) {
                            return Err(self.err("lone leading surrogate"));
                        }
                        Ok(())
                    }
                    0xDC00..=0xDFFF => Err(self.err("lone trailing surrogate")),
                    _ => Ok(()),
                }
            }
            _ => Err(self.err("invalid escape")),
        }
    }

    fn hex4(&mut self) -> Result<u32, NotJson> {
        let Some(h) = self.b.get(self.pos..self.pos + 4) else { return Err(self.err("short \\u escape")) };
        let mut c = 0;
        for &d in h {
            let v = (d as char).to_digit(16).ok_or_else(|| self.err("invalid \\u escape"))?;
            c = c * 16 + v;
        }
        self.pos += 4;
        Ok(c)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<(), NotJson> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number"));
            }
            self.digits();
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }
}

/// Panics unless `got`, what was found at `paths` in `line`, is what `from_str` and `pointer`
/// find (both accept or both refuse, and find the same values); whether serde_json took the line.
#[cfg(test)]
pub(crate) fn agrees_with_serde<const N: usize>(line: &str, paths: [&[&str]; N], got: Result<(bool, [Option<Value>; N]), NotJson>) -> bool {
    match serde_json::from_str::<Value>(line) {
        Ok(v) => {
            let (object, got) = got.unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert_eq!(object, v.is_object(), "{line}");
            for (p, g) in paths.iter().zip(&got) {
                let pointer: String = p.iter().map(|k| format!("/{k}")).collect();
                assert_eq!(g.as_ref(), v.pointer(&pointer), "{line} {pointer}");
            }
            true
        }
        // serde_json refuses numbers past f64's range, which the scan does not look at.
        Err(e) if e.to_string().contains("number out of range") => false,
        Err(e) => {
            assert!(got.is_err(), "{line:?} is not JSON ({e}), but it was taken");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATHS: [&[&str]; 6] = [&["time"], &["unmapped", "verdict"], &["unmapped", "rule", "id"], &["metadata", "sequence"], &["process", "pid"], &["unmapped"]];

    /// `fields` against `from_str` and `pointer`; whether serde_json took the line.
    fn agrees(line: &str) -> bool {
        agrees_with_serde(line, PATHS, fields(line, PATHS))
    }

    /// What `from_str::<Value>` and `pointer` find, for lines of every shape.
    #[test]
    fn fields_find_what_a_full_parse_finds() {
        let lines = [
            r#"{"time":1700000000123,"unmapped":{"verdict":"killed","rule":{"id":3}},"metadata":{"sequence":9},"process":{"pid":42}}"#,
            r#"{"unmapped":{"verdict":"allowed","rule":null},"process":[1,2],"time":"x"}"#,
            r#"{"time":1,"time":2,"unmapped":{"verdict":"a"},"unmapped":{"x":{"verdict":"no"}}}"#,
            r#"{"unmapped":{"rule":{"id":{"deep":[1,{"id":2}]}}},"metadata":{"sequence":-1.5e-3}}"#,
            r#"{"a\"b":{"time":3},"t\u0069me":7,"unmapped":{"verdict":"w\u00e9 \ud83d\ude00 \n\t\/"}}"#,
            " \t\r\n{ \"time\" : [ true , false , null , 0 , -0.0 , 1E+2 , {} , [] ] } \n",
            r#"[{"time":1}]"#,
            r#""time""#,
            "3",
            "null",
            "{}",
            "[]",
        ];
        for line in lines {
            assert!(agrees(line), "{line}");
        }
        for bad in [
            "", " ", "{", r#"{"time":1"#, r#"{"time":1}x"#, "nul", "tru", r#"{"a":}"#, r#"{"a" 1}"#, r#"{"a":1,}"#, "[1,]", "[1 2]", "{1:2}",
            "01", "1.", "-", "1e", "1e+", ".5", "+1", r#""\x""#, r#""\u12""#, r#""\ud800""#, r#""\ud800\u0041""#, r#""\udc00""#, "\"a\u{1}b\"",
            "\"abc", r#""abc\"#, "{}{}", "\u{feff}{}",
        ] {
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad:?}");
            assert!(fields(bad, PATHS).is_err(), "{bad:?} is not JSON, but fields took it");
        }
        // serde_json's nesting limit is kept.
        for depth in [127, 128, 129, 1000] {
            agrees(&format!("{}{}", "[".repeat(depth), "]".repeat(depth)));
            agrees(&format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)));
        }
    }

    /// Real verdict lines, and every one of them cut short and with bytes swapped for JSON's
    /// structural characters: the scan agrees with serde_json on each.
    #[test]
    fn fields_agree_with_serde_json_on_damaged_lines() {
        let mut lines = vec![];
        for kind in ["exec", "killed", "connect"] {
            crate::daemon::samples::lines(kind, 7, &mut |l, _| lines.push(l.to_owned()));
        }
        assert!(lines.len() >= 3);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        const SWAPS: &[u8] = b"{}[]:,\"\\ 0-.eEu\x01a";
        for line in &lines {
            assert!(agrees(line), "{line}");
            for cut in 0..line.len() {
                if line.is_char_boundary(cut) {
                    agrees(&line[..cut]);
                }
            }
            let mut took = 0;
            for _ in 0..3000 {
                let mut b = line.clone().into_bytes();
                for _ in 0..1 + next(3) {
                    let at = next(b.len());
                    if b[at].is_ascii() {
                        b[at] = SWAPS[next(SWAPS.len())];
                    }
                }
                took += usize::from(agrees(std::str::from_utf8(&b).expect("ASCII swapped for ASCII")));
            }
            // Both kinds were tried: damage that keeps a line JSON (inside strings) and that breaks it.
            assert!((300..2700).contains(&took), "{took} of 3000 damaged lines were JSON");
        }
    }
}
