//! [`Shared`]: a value many verdicts carry, encoded once.
use std::sync::{Arc, OnceLock};

use serde_json::Value;

/// A free-form object many verdicts carry unchanged (a launch session's identity): built once,
/// and masked and encoded once (per masker) for the verdict writer (`verdict::encode`), which
/// otherwise walked the tree and masked each of its strings for every verdict.
#[derive(Debug)]
pub struct Shared {
    value: Value,
    /// The masker's id and the masked JSON it made of `value`.
    encoded: OnceLock<(u64, String)>,
}

impl Shared {
    pub fn new(value: Value) -> Arc<Self> {
        Arc::new(Self { value, encoded: OnceLock::new() })
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The value as JSON, masked by `masker`: made once by `write` (given the value and an
    /// empty string), then reused for as long as the same masker asks.
    pub fn encoded(&self, masker: &crate::mask::Masker, write: impl Fn(&Value, &mut String)) -> std::borrow::Cow<'_, str> {
        let make = || {
            let mut out = String::new();
            write(&self.value, &mut out);
            out
        };
        let (id, text) = self.encoded.get_or_init(|| (masker.id(), make()));
        if *id == masker.id() { std::borrow::Cow::Borrowed(text) } else { std::borrow::Cow::Owned(make()) }
    }
}
