//! A small YAML document tree that keeps the position of every node, so every policy error can
//! say `file:line:column`. Built from saphyr-parser's event stream; scalars stay strings and the
//! policy parser gives them meaning.
use saphyr_parser::{Event, Parser, ScanError, Span};

/// 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    fn of(span: &Span) -> Self {
        Self { line: span.start.line(), col: span.start.col() + 1 }
    }
}

#[derive(Debug, Clone)]
pub enum Value {
    /// A scalar; the policy parser gives it a type from where it stands.
    Scalar { text: String },
    Seq(Vec<Node>),
    /// Entries in document order; duplicates are kept so the parser can reject them.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

impl Node {
    /// A human name for the node's kind, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

#[derive(Debug)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

impl From<ScanError> for SyntaxError {
    fn from(e: ScanError) -> Self {
        let m = e.marker();
        Self { pos: Pos { line: m.line(), col: m.col() + 1 }, message: e.info().to_owned() }
    }
}

/// Deepest nesting of collections a document may have. A policy or settings file needs about
/// eight levels; without a bound, `? ? ? … x` (block mapping keys, which saphyr does not limit)
/// builds a tree so deep that dropping it overflows the stack, as fuzzing found.
pub const MAX_DEPTH: usize = 64;

/// Parses one YAML document. An empty document is `None`; more than one document, anchors and
/// aliases are errors (a policy should read the same to a person as to the parser).
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let end = End::of(text);
    let mut events = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0;
    while let Some(next) = events.next_event() {
        let (event, span) = next.map_err(|e| {
            let e = SyntaxError::from(e);
            SyntaxError { pos: end.within(e.pos), ..e }
        })?;
        let pos = end.within(Pos::of(&span));
        let node = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(SyntaxError { pos, message: "a policy file holds one YAML document; found a second".into() });
                }
                continue;
            }
            Event::Alias(_) => {
                return Err(SyntaxError { pos, message: "YAML aliases are not allowed in a policy".into() });
            }
            Event::Scalar(text, _, anchor, _) => {
                if anchor != 0 {
                    return Err(SyntaxError { pos, message: "YAML anchors are not allowed in a policy".into() });
                }
                Node { pos, value: Value::Scalar { text: text.into_owned() } }
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if anchor != 0 {
                    return Err(SyntaxError { pos, message: "YAML anchors are not allowed in a policy".into() });
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(SyntaxError { pos, message: format!("collections nested deeper than {MAX_DEPTH} levels") });
                }
                let is_map = matches!(event, Event::MappingStart(..));
                stack.push(Frame { pos, is_map, items: Vec::new() });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = stack.pop() else { continue };
                frame.finish()
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => continue,
        };
        match stack.last_mut() {
            Some(frame) => frame.items.push(node),
            None => root = Some(node),
        }
    }
    Ok(root)
}

/// The end of the text. saphyr places what it finds at the very end of a text without a final
/// newline (`a: 1\nb`, `---`) on a line after the last one; positions there point at the end of
/// the last line instead, where an editor can go.
struct End {
    line: usize,
    col: usize,
}

impl End {
    fn of(text: &str) -> Self {
        let unified = text.replace("\r\n", "\n");
        let mut lines = unified.split(['\n', '\r']);
        let count = lines.clone().count();
        let last = lines.next_back().unwrap_or_default();
        Self { line: count, col: last.chars().count() + 1 }
    }

    fn within(&self, pos: Pos) -> Pos {
        if pos.line > self.line { Pos { line: self.line, col: self.col } } else { pos }
    }
}

struct Frame {
    pos: Pos,
    is_map: bool,
    items: Vec<Node>,
}

impl Frame {
    fn finish(self) -> Node {
        let value = if self.is_map {
            let mut entries = Vec::with_capacity(self.items.len() / 2);
            let mut it = self.items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                entries.push((k, v));
            }
            Value::Map(entries)
        } else {
            Value::Seq(self.items)
        };
        Node { pos: self.pos, value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let doc = parse("a:\n  b: [1, \"2\"]\n").unwrap().unwrap();
        let Value::Map(entries) = &doc.value else { panic!("{doc:?}") };
        let (k, v) = &entries[0];
        assert_eq!(k.pos, Pos { line: 1, col: 1 });
        let Value::Map(inner) = &v.value else { panic!() };
        assert_eq!(inner[0].0.pos, Pos { line: 2, col: 3 });
        let Value::Seq(items) = &inner[0].1.value else { panic!() };
        assert!(matches!(&items[1].value, Value::Scalar { text } if text == "2"));
        assert_eq!(items[0].pos, Pos { line: 2, col: 7 });
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
        assert!(parse("a: &x 1\nb: *x\n").is_err());
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
        assert!(parse("").unwrap().is_none());
    }

    /// Found by fuzzing (`fuzz::settings`): the error was on line 3 of a 2-line text.
    #[test]
    fn an_error_at_the_end_points_into_the_last_line() {
        let e = parse("a: 1\nmap_entries").unwrap_err();
        assert_eq!(e.pos, Pos { line: 2, col: 12 }, "{e:?}");
        let e = parse("a: 1\nb").unwrap_err();
        assert_eq!(e.pos.line, 2, "{e:?}");
        // Found by fuzzing too: the empty document of `---` was on line 2 of 1.
        let doc = parse("---").unwrap().unwrap();
        assert_eq!(doc.pos, Pos { line: 1, col: 4 });
    }

    /// Found by fuzzing (`fuzz::policy`): 10,000 nested block keys overflowed the stack (an
    /// abort, not a panic) when the tree was dropped.
    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        for text in [format!("{}x", "? ".repeat(100_000)), format!("{}x", "- ".repeat(100_000))] {
            let e = std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || parse(&text).map(|_| ()).unwrap_err())
                .unwrap()
                .join()
                .unwrap();
            assert!(e.message.contains("nested deeper than 64"), "{e:?}");
            assert_eq!(e.pos.line, 1);
        }
        let ok = format!("{}x{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
    }
}
