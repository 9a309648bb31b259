//! Spooled verdict lines and their marks as the network senders read them back: the daemon's
//! own exec, killed and connect lines, often damaged (bytes flipped, cut, spliced), with their
//! marks, marks moved or of another line, or none. Nothing panics; the values found are what
//! the marks slice out when they are believed (they fit the line and every span is a JSON
//! value: a damaged line with marks that still fit is trusted, by design), and otherwise what
//! serde_json finds in the line; the spool form of the marks reads back as written; the syslog
//! message and the HEC event are made for every input.
use std::sync::LazyLock;

use serde_json::Value;

use super::{Rng, Target, mutate};
use crate::{
    sinks::fields,
    verdict::{Mark, Marks},
};

#[derive(Debug)]
pub struct Input {
    line: String,
    marks: Option<Marks>,
    /// Random bytes read as the spool form of marks.
    form: Vec<u8>,
}

/// The daemon's lines of each sample verdict, with their marks (made once: a masker is slow to
/// build).
static LINES: LazyLock<Vec<(String, Option<Marks>)>> = LazyLock::new(|| {
    let mut lines = vec![];
    for kind in ["exec", "killed", "connect"] {
        for i in [0, 7, 99_999, 4_000_000_000] {
            crate::daemon::samples::lines(kind, i, &mut |l, m| lines.push((l.to_owned(), m.copied())));
        }
    }
    lines
});

fn generate(rng: &mut Rng) -> Input {
    let (mut line, mut marks) = rng.pick(&LINES).clone();
    if rng.chance(1, 2) {
        let mut b = line.into_bytes();
        mutate::mutate_bytes(rng, &mut b, 6);
        line = String::from_utf8_lossy(&b).into_owned();
    }
    match rng.below(4) {
        0 => marks = None,
        1 => {
            let mut m = marks.unwrap_or_default();
            for _ in 0..1 + rng.below(3) {
                let a = rng.below(line.len() + 8);
                m.set(*rng.pick(&Mark::ALL), (a, a + rng.below(24)));
            }
            if rng.chance(1, 2) {
                m.set_len(line.len());
            }
            marks = Some(m);
        }
        _ => {}
    }
    let mut form = vec![];
    if let Some(m) = &marks {
        m.encode(&mut form);
    }
    mutate::mutate_bytes(rng, &mut form, 4);
    Input { line, marks, form }
}

fn check(input: &Input) {
    let Input { line, marks, form } = input;
    if let Some(m) = marks {
        let mut b = vec![];
        m.encode(&mut b);
        assert_eq!(Marks::decode(&b).as_ref(), Some(m), "the spool form does not read back");
    }
    let _ = Marks::decode(form);
    let got = fields::marked(line, marks.as_ref(), Mark::ALL);
    // Marks are believed when they fit the line and every span slices out a JSON value; then
    // the values are those slices. Otherwise the line is scanned: what serde_json finds.
    let slice = |m: &Marks, w: Mark| m.span(w).map(|(s, e)| line.get(s..e).and_then(|t| serde_json::from_str::<Value>(t).ok()));
    let believed = marks.as_ref().filter(|m| m.fit(line) && line.starts_with('{') && line.ends_with('}') && Mark::ALL.iter().all(|w| slice(m, *w) != Some(None)));
    if let Some(m) = believed {
        let (object, got) = got.unwrap_or_else(|e| panic!("believed marks, and yet an error: {e}"));
        assert!(object);
        for (w, g) in Mark::ALL.iter().zip(&got) {
            assert_eq!(g.as_ref(), slice(m, *w).flatten().as_ref(), "{w:?}");
        }
    } else {
        fields::agrees_with_serde(line, Mark::ALL.map(Mark::path), got);
    }
    let _ = crate::sinks::syslog::message(line, marks.as_ref(), 10, "host");
    let _ = crate::sinks::bench_http_encode(line, marks.as_ref(), false);
}

#[test]
fn records() {
    Target { name: "spool::records", generate, check }.run();
}
