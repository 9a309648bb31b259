//! Where, in a verdict line, the few values the network sinks read sit (`time`, `class_uid`,
//! `unmapped.verdict`, …): the fast encoder notes each as it writes it, the spool keeps the
//! notes beside the line, and the syslog, HEC and Kafka senders slice the values out instead of
//! scanning the whole line again (`sinks::fields::marked`; a line without marks, or whose marks
//! do not slice out JSON values, is scanned as before).

/// A value a network sink reads from a verdict line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Time,
    ClassUid,
    Verdict,
    Agent,
    Sequence,
    RuleId,
    Pid,
    ActorPid,
}

const COUNT: usize = 8;

impl Mark {
    #[cfg(test)]
    pub const ALL: [Self; COUNT] = [Self::Time, Self::ClassUid, Self::Verdict, Self::Agent, Self::Sequence, Self::RuleId, Self::Pid, Self::ActorPid];

    /// Its object keys from the root of the line.
    pub const fn path(self) -> &'static [&'static str] {
        match self {
            Self::Time => &["time"],
            Self::ClassUid => &["class_uid"],
            Self::Verdict => &["unmapped", "verdict"],
            Self::Agent => &["unmapped", "agent"],
            Self::Sequence => &["metadata", "sequence"],
            Self::RuleId => &["unmapped", "rule", "id"],
            Self::Pid => &["process", "pid"],
            Self::ActorPid => &["actor", "process", "pid"],
        }
    }
}

/// The byte ranges of the marked values in one line (a value the line does not have is
/// unmarked), and the line's length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    spans: [Option<(u32, u32)>; COUNT],
    len: u32,
}

/// The spool's form starts with this version tag; another one is read as no marks.
const FORM: &[u8] = b"m1";

impl Marks {
    pub fn set(&mut self, m: Mark, (start, end): (usize, usize)) {
        // A line past 4 GiB is not one the daemon writes; it is left unmarked.
        self.spans[m as usize] = u32::try_from(start).ok().zip(u32::try_from(end).ok());
    }

    pub fn span(&self, m: Mark) -> Option<(usize, usize)> {
        self.spans[m as usize].map(|(s, e)| (s as usize, e as usize))
    }

    /// The length of the line marked (its end once written).
    pub fn set_len(&mut self, len: usize) {
        self.len = u32::try_from(len).unwrap_or(u32::MAX);
    }

    /// Whether these are the marks of a line this long: a line cut short or grown since is not
    /// believed.
    pub fn fit(&self, line: &str) -> bool {
        self.len as usize == line.len()
    }

    /// The spool's form: `m1,LEN` then, per mark in [`Mark::ALL`] order, `,START-END` (or `,`
    /// where unmarked); ASCII digits and punctuation, never a newline.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut buf = itoa::Buffer::new();
        out.extend_from_slice(FORM);
        out.push(b',');
        out.extend_from_slice(buf.format(self.len).as_bytes());
        for span in &self.spans {
            out.push(b',');
            if let Some((s, e)) = span {
                out.extend_from_slice(buf.format(*s).as_bytes());
                out.push(b'-');
                out.extend_from_slice(buf.format(*e).as_bytes());
            }
        }
    }

    /// What [`Marks::encode`] wrote; `None` for anything else (another form, damage).
    pub fn decode(b: &[u8]) -> Option<Self> {
        let rest = b.strip_prefix(FORM)?;
        let mut marks = Self::default();
        let mut parts = rest.split(|&c| c == b',');
        // The form begins with a comma: nothing before it.
        if !parts.next()?.is_empty() {
            return None;
        }
        marks.len = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
        for slot in &mut marks.spans {
            let part = parts.next()?;
            if part.is_empty() {
                continue;
            }
            let text = std::str::from_utf8(part).ok()?;
            let (s, e) = text.split_once('-')?;
            let (s, e) = (s.parse::<u32>().ok()?, e.parse::<u32>().ok()?);
            if s > e {
                return None;
            }
            *slot = Some((s, e));
        }
        parts.next().is_none().then_some(marks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_form_round_trips_and_refuses_damage() {
        let mut m = Marks::default();
        m.set(Mark::Time, (10, 23));
        m.set(Mark::ActorPid, (0, 4_000_000_000));
        m.set_len(1717);
        let mut b = vec![];
        m.encode(&mut b);
        assert_eq!(b, b"m1,1717,10-23,,,,,,,0-4000000000");
        assert_eq!(Marks::decode(&b), Some(m));
        assert!(m.fit(&"x".repeat(1717)) && !m.fit(&"x".repeat(1716)));
        assert_eq!(Marks::decode(b"m1,0,,,,,,,,"), Some(Marks::default()));
        for bad in [&b""[..], b"m1", b"m1,,,,,,,,", b"m2,0,,,,,,,,", b"m1,0,,,,,,,", b"m1,0,,,,,,,,,", b"m1,0,5-4,,,,,,,", b"m1,0,x-4,,,,,,,", b"m1,0,4,,,,,,,", b"m1,0,1-99999999999,,,,,,,", b"xm1,0,,,,,,,,", b"m1,-1,,,,,,,,"] {
            assert_eq!(Marks::decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
