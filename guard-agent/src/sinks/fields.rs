//! The few values a sink needs from a verdict line (its `time`, `unmapped.verdict`, …), read in
//! one pass without building the rest of the tree: the line is the one encoding every sink
//! shares, and parsing it whole into a `Value` per sink cost more than making it.
//!
//! What [`fields`] finds is what `serde_json::from_str::<Value>` and `Value::pointer` would
//! find: the same value, `None` where the path is missing or crosses a non-object, and a key
//! that repeats counts as its last occurrence (the whole subtree is replaced).
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// The values at `paths` (object keys from the root) in the JSON text `line`, and whether its
/// root is an object; an error for text that is not JSON.
pub fn fields<const N: usize>(line: &str, paths: [&[&str]; N]) -> Result<(bool, [Option<Value>; N]), serde_json::Error> {
    assert!(N <= 32, "at most 32 paths");
    let mut out: [Option<Value>; N] = std::array::from_fn(|_| None);
    let mut de = serde_json::Deserializer::from_str(line);
    let all = if N == 32 { u32::MAX } else { (1u32 << N) - 1 };
    let object = Walk { paths: &paths, active: all, depth: 0, out: &mut out }.deserialize(&mut de)?;
    de.end()?;
    Ok((object, out))
}

/// One value at `depth`, on the way to the `active` paths (a bit per path).
struct Walk<'a, 'p> {
    paths: &'a [&'p [&'p str]],
    active: u32,
    depth: usize,
    out: &'a mut [Option<Value>],
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_> {
    /// Whether the value is an object.
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        // A path that ends here takes the whole value.
        if let Some(i) = (0..self.paths.len()).find(|&i| self.active & (1 << i) != 0 && self.paths[i].len() == self.depth) {
            let v = <Value as serde::Deserialize>::deserialize(d)?;
            let object = v.is_object();
            self.out[i] = Some(v);
            return Ok(object);
        }
        if self.active == 0 {
            d.deserialize_ignored_any(IgnoredAny)?;
            return Ok(false);
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while let Some(hits) = map.next_key_seed(Key { paths: self.paths, active: self.active, depth: self.depth })? {
            // A repeated key replaces what an earlier one held.
            for i in 0..self.paths.len() {
                if hits & (1 << i) != 0 {
                    self.out[i] = None;
                }
            }
            map.next_value_seed(Walk { paths: self.paths, active: hits, depth: self.depth + 1, out: self.out })?;
        }
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// An object key: the bits of the active paths it continues.
struct Key<'a, 'p> {
    paths: &'a [&'p [&'p str]],
    active: u32,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Key<'_, '_> {
    type Value = u32;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_, '_> {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, k: &str) -> Result<u32, E> {
        let mut hits = 0;
        for (i, p) in self.paths.iter().enumerate() {
            if self.active & (1 << i) != 0 && p.get(self.depth) == Some(&k) {
                hits |= 1 << i;
            }
        }
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `from_str::<Value>` and `pointer` find, for lines of every shape.
    #[test]
    fn fields_find_what_a_full_parse_finds() {
        let paths: [&[&str]; 5] = [&["time"], &["unmapped", "verdict"], &["unmapped", "rule", "id"], &["metadata", "sequence"], &["process", "pid"]];
        let lines = [
            r#"{"time":1700000000123,"unmapped":{"verdict":"killed","rule":{"id":3}},"metadata":{"sequence":9},"process":{"pid":42}}"#,
            r#"{"unmapped":{"verdict":"allowed","rule":null},"process":[1,2],"time":"x"}"#,
            r#"{"time":1,"time":2,"unmapped":{"verdict":"a"},"unmapped":{"x":{"verdict":"no"}}}"#,
            r#"{"unmapped":{"rule":{"id":{"deep":[1,{"id":2}]}}},"metadata":{"sequence":-1.5}}"#,
            r#"{"a\"b":{"time":3},"t\u0069me":7,"unmapped":{"verdict":"w\u00e9"}}"#,
            r#"[{"time":1}]"#,
            r#""time""#,
            "3",
            "null",
            "{}",
        ];
        for line in lines {
            let (object, got) = fields(line, paths).unwrap();
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(object, v.is_object(), "{line}");
            for (p, g) in paths.iter().zip(&got) {
                let pointer: String = p.iter().map(|k| format!("/{k}")).collect();
                assert_eq!(g.as_ref(), v.pointer(&pointer), "{line} {pointer}");
            }
        }
        for bad in ["", "{", r#"{"time":1"#, r#"{"time":1}x"#, "nul", r#"{"a":}"#] {
            assert!(fields(bad, paths).is_err(), "{bad:?}");
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad:?}");
        }
    }
}
