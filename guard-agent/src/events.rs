//! Decoding ring-buffer records into owned events. Records come from our own programs, but are
//! still checked: a short or unknown record is an error, never a panic.
use std::mem::size_of;

use guard_common::{
    ARGV_LEN, BudgetEvent, CgroupEvent, ConnectEvent, DeletionsEvent, DnsEvent, EventHeader, EventKind, ExecEvent,
    FileEvent, MoveEvent, OpenEvent, ProcEvent, SocketEvent,
};

#[derive(Debug, Clone)]
pub enum Event {
    /// Boxed, as every large record: an enum as large as an exec record (argv, cwd) would make
    /// each fork, exit and connect event that size, copied at every move.
    Exec(Box<ExecEvent>),
    Connect(ConnectEvent),
    Socket(SocketEvent),
    Fork(ProcEvent),
    Exit(ProcEvent),
    Move(Box<MoveEvent>),
    Cgroup(Box<CgroupEvent>),
    /// A held process killed by the gate at its first system call.
    Gate(ProcEvent),
    /// An open the kernel's sensitive-path filter matched.
    Open(Box<OpenEvent>),
    /// A workload went over its byte budget to one destination.
    Budget(BudgetEvent),
    /// A DNS query or answer of an agent workload.
    Dns(Box<DnsEvent>),
    /// A watched file call that failed with EACCES or EPERM (protected paths).
    File(Box<FileEvent>),
    /// A workload went past its deletion budget.
    Deletions(Box<DeletionsEvent>),
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
        Some(EventKind::Exec) => read_exec(buf).map(Event::Exec),
        Some(EventKind::Connect) => read::<ConnectEvent>(buf, "connect event").map(Event::Connect),
        Some(EventKind::Socket) => read::<SocketEvent>(buf, "socket event").map(Event::Socket),
        Some(EventKind::Fork) => read::<ProcEvent>(buf, "fork event").map(Event::Fork),
        Some(EventKind::Exit) => read::<ProcEvent>(buf, "exit event").map(Event::Exit),
        Some(EventKind::Move) => read::<MoveEvent>(buf, "move event").map(|e| Event::Move(Box::new(e))),
        Some(EventKind::Cgroup) => read::<CgroupEvent>(buf, "cgroup event").map(|e| Event::Cgroup(Box::new(e))),
        Some(EventKind::Gate) => read::<ProcEvent>(buf, "gate event").map(Event::Gate),
        Some(EventKind::Open) => read::<OpenEvent>(buf, "open event").map(|e| Event::Open(Box::new(e))),
        Some(EventKind::Budget) => read::<BudgetEvent>(buf, "budget event").map(Event::Budget),
        Some(EventKind::Dns) => read::<DnsEvent>(buf, "dns event").map(|e| Event::Dns(Box::new(e))),
        Some(EventKind::FileDenied) => read::<FileEvent>(buf, "file event").map(|e| Event::File(Box::new(e))),
        Some(EventKind::Deletions) => read::<DeletionsEvent>(buf, "deletions event").map(|e| Event::Deletions(Box::new(e))),
        None => Err(DecodeError::UnknownKind { kind }),
    }
}

impl Event {
    /// The kind, as counted in `status` and `/metrics`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Event::Exec(_) => "exec",
            Event::Connect(_) => "connect",
            Event::Socket(_) => "socket",
            Event::Fork(_) => "fork",
            Event::Exit(_) => "exit",
            Event::Move(_) => "move",
            Event::Cgroup(_) => "cgroup",
            Event::Gate(_) => "gate",
            Event::Open(_) => "open",
            Event::Budget(_) => "budget",
            Event::Dns(_) => "dns",
            Event::File(_) => "file",
            Event::Deletions(_) => "deletions",
        }
    }

    /// The event's header; a cgroup event has none.
    pub fn header(&self) -> Option<&EventHeader> {
        match self {
            Event::Exec(e) => Some(&e.header),
            Event::Connect(e) => Some(&e.header),
            Event::Socket(e) => Some(&e.header),
            Event::Fork(e) | Event::Exit(e) | Event::Gate(e) => Some(&e.header),
            Event::Move(e) => Some(&e.header),
            Event::Open(e) => Some(&e.header),
            Event::File(e) => Some(&e.header),
            Event::Deletions(e) => Some(&e.header),
            Event::Cgroup(_) | Event::Budget(_) | Event::Dns(_) => None,
        }
    }
}

/// An exec record ends after its argv bytes (`argv_len` of them): the rest stays zero.
fn read_exec(buf: &[u8]) -> Result<Box<ExecEvent>, DecodeError> {
    let fixed = size_of::<ExecEvent>() - ARGV_LEN;
    let short = DecodeError::Short { len: buf.len(), what: "exec event" };
    if buf.len() < fixed || buf.len() > size_of::<ExecEvent>() {
        return Err(short);
    }
    // Straight into its box, once: the record is the event's first `buf.len()` bytes (the
    // program leaves out the unused end of argv), the rest stays zero.
    // SAFETY: `ExecEvent` is `Pod` (integers and arrays only): all zeroes is a valid value.
    let mut ev: Box<ExecEvent> = unsafe { Box::<ExecEvent>::new_zeroed().assume_init() };
    // SAFETY: `buf.len() <= size_of::<ExecEvent>()` (checked above); any bytes are a valid
    // `ExecEvent`; the two do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), (&raw mut *ev).cast::<u8>(), buf.len()) };
    if ev.argv_len as usize > buf.len() - fixed {
        return Err(short);
    }
    Ok(ev)
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
        assert_eq!(decode(&[99, 0, 0, 0, 0]).unwrap_err(), DecodeError::UnknownKind { kind: 99 });
        assert!(matches!(decode(&[1, 0, 0, 0, 0, 0]), Err(DecodeError::Short { what: "exec event", .. })));
    }

    #[test]
    fn exec_records_carry_only_their_argv() {
        let fixed = size_of::<ExecEvent>() - ARGV_LEN;
        let argv_len_at = std::mem::offset_of!(ExecEvent, argv_len);
        let mut buf = vec![0u8; fixed + 5];
        buf[..4].copy_from_slice(&1u32.to_ne_bytes());
        buf[argv_len_at..argv_len_at + 4].copy_from_slice(&5u32.to_ne_bytes());
        buf[fixed..].copy_from_slice(b"ls\0-l");
        let Event::Exec(e) = decode(&buf).unwrap() else { panic!("not an exec") };
        assert_eq!(&e.argv[..5], b"ls\0-l");
        // An argv_len beyond the record is malformed, not trusted.
        buf[argv_len_at..argv_len_at + 4].copy_from_slice(&6u32.to_ne_bytes());
        assert!(decode(&buf).is_err());
        assert!(decode(&buf[..fixed - 1]).is_err());
    }
}
