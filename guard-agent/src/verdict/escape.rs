//! JSON string escaping for the verdict writer (`encode`), as serde_json escapes.

/// A JSON string's content with serde_json's escapes (which are also the audit log's
/// canonical ones): `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, and `\u00XX` for the other
/// control characters.
pub(super) fn push_escaped(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time while none needs an escape (nearly every string).
        if let Some(chunk) = bytes.get(i..i + 8) {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            if !needs_escape(word) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..0x20 => "",
            _ => {
                i += 1;
                continue;
            }
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        } else {
            out.push_str(esc);
        }
        i += 1;
        start = i;
    }
    out.push_str(&s[start..]);
}

/// Whether any of the eight bytes of `word` is a control character, `"` or `\\`. Exact for
/// the question asked (a borrow only ever runs above a byte that is flagged anyway).
#[inline]
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    (below_space | zero(word ^ (ONES * u64::from(b'"'))) | zero(word ^ (ONES * u64::from(b'\\')))) & HIGH != 0
}

#[cfg(test)]
mod tests {
    /// The word-at-a-time scan escapes exactly as serde_json does, wherever in a string (and
    /// in which of its eight-byte words) the byte that needs it falls.
    #[test]
    fn escapes_match_serde_json_at_every_position() {
        let specials = ["\"", "\\", "\n", "\r", "\t", "\u{8}", "\u{c}", "\u{0}", "\u{1f}", "\u{7f}", "é", "☃", "𝄞", " ", "~"];
        for len in 0..20 {
            for at in 0..=len {
                for sp in specials {
                    let s: String = (0..len).map(|i| if i == at { sp.to_owned() } else { ((b'a' + (i % 26) as u8) as char).to_string() }).collect();
                    let mut out = String::new();
                    super::push_escaped(&mut out, &s);
                    let want = serde_json::to_string(&s).unwrap();
                    assert_eq!(format!("\"{out}\""), want, "{s:?}");
                }
            }
        }
        // Every byte value below 0x80 alone and in runs.
        let all: String = (0u8..0x80).map(char::from).collect();
        let mut out = String::new();
        super::push_escaped(&mut out, &all.repeat(3));
        assert_eq!(format!("\"{out}\""), serde_json::to_string(&all.repeat(3)).unwrap());
    }
}
