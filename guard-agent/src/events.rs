//! Decoding ring-buffer records into owned events. Records come from our own programs, but are
//! still checked: a short or unknown record is an error, never a panic.
use std::mem::size_of;

use guard_common::{ConnectEvent, EventHeader, EventKind, ExecEvent, ProcEvent, SocketEvent};

#[derive(Debug, Clone, Copy)]
pub enum Event {
    Exec(ExecEvent),
    Connect(ConnectEvent),
    Socket(SocketEvent),
    Fork(ProcEvent),
    Exit(ProcEvent),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is too short for a {what}")]
    Short { len: usize, what: &'static str },
    #[error("record of unknown kind {kind}")]
    UnknownKind { kind: u32 },
}

pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
    let kind_bytes = buf.get(..4).ok_or(DecodeError::Short { len: buf.len(), what: "record header" })?;
    let kind = u32::from_ne_bytes(kind_bytes.try_into().unwrap_or_default());
    match EventKind::from_u32(kind) {
        Some(EventKind::Exec) => read::<ExecEvent>(buf, "exec event").map(Event::Exec),
        Some(EventKind::Connect) => read::<ConnectEvent>(buf, "connect event").map(Event::Connect),
        Some(EventKind::Socket) => read::<SocketEvent>(buf, "socket event").map(Event::Socket),
        Some(EventKind::Fork) => read::<ProcEvent>(buf, "fork event").map(Event::Fork),
        Some(EventKind::Exit) => read::<ProcEvent>(buf, "exit event").map(Event::Exit),
        None => Err(DecodeError::UnknownKind { kind }),
    }
}

impl Event {
    pub fn header(&self) -> &EventHeader {
        match self {
            Event::Exec(e) => &e.header,
            Event::Connect(e) => &e.header,
            Event::Socket(e) => &e.header,
            Event::Fork(e) | Event::Exit(e) => &e.header,
        }
    }
}

fn read<T: aya::Pod>(buf: &[u8], what: &'static str) -> Result<T, DecodeError> {
    if buf.len() < size_of::<T>() {
        return Err(DecodeError::Short { len: buf.len(), what });
    }
    // SAFETY: the buffer holds at least size_of::<T>() bytes, `T: Pod` makes any bit pattern a
    // valid value, and read_unaligned does not need the buffer to be aligned.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert!(matches!(decode(&[]), Err(DecodeError::Short { .. })));
        assert_eq!(decode(&[9, 0, 0, 0, 0]).unwrap_err(), DecodeError::UnknownKind { kind: 9 });
        assert!(matches!(decode(&[1, 0, 0, 0, 0, 0]), Err(DecodeError::Short { what: "exec event", .. })));
    }

    #[test]
    fn exec_record_round_trips() {
        let mut buf = vec![0u8; size_of::<ExecEvent>()];
        buf[..4].copy_from_slice(&1u32.to_ne_bytes());
        let Event::Exec(e) = decode(&buf).unwrap() else { panic!("not an exec") };
        assert_eq!(e.header.kind, 1);
    }
}
