//! Ring-buffer records: `decode` agrees with a model of the record format (a known kind of at
//! least its size, an exec record between its fixed part and its full size with its argv in
//! it), a decoded record holds exactly the bytes it came from, and what the daemon does next
//! with a record's lengths (names, argv, the DNS payload) stays inside the record.
use std::mem::size_of;

use guard_common::{
    ARGV_LEN, BudgetEvent, CgroupEvent, ConnectEvent, DeletionsEvent, DnsEvent, EventKind, ExecEvent, FileEvent, MoveEvent, OpenEvent,
    ProcEvent, SocketEvent,
};

use super::{Rng, Target, mutate};
use crate::events::{self, DecodeError, Event};

/// Record sizes by kind, as the kernel programs write them.
fn size_of_kind(kind: u32) -> Option<usize> {
    Some(match EventKind::from_u32(kind)? {
        EventKind::Exec => size_of::<ExecEvent>(),
        EventKind::Connect => size_of::<ConnectEvent>(),
        EventKind::Socket => size_of::<SocketEvent>(),
        EventKind::Fork | EventKind::Exit | EventKind::Gate => size_of::<ProcEvent>(),
        EventKind::Move => size_of::<MoveEvent>(),
        EventKind::Cgroup => size_of::<CgroupEvent>(),
        EventKind::Open => size_of::<OpenEvent>(),
        EventKind::Budget => size_of::<BudgetEvent>(),
        EventKind::Dns => size_of::<DnsEvent>(),
        EventKind::FileDenied => size_of::<FileEvent>(),
        EventKind::Deletions => size_of::<DeletionsEvent>(),
    })
}

const EXEC_FIXED: usize = size_of::<ExecEvent>() - ARGV_LEN;

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    if let Some(b) = buf.get_mut(at..at + 4) {
        b.copy_from_slice(&v.to_ne_bytes());
    }
}

fn generate(rng: &mut Rng) -> Vec<u8> {
    let kind = match rng.below(20) {
        0 => rng.edge_u64() as u32,
        _ => 1 + rng.below(13) as u32,
    };
    let full = size_of_kind(kind).unwrap_or(64);
    let mut buf = rng.bytes(full);
    put_u32(&mut buf, 0, kind);
    match EventKind::from_u32(kind) {
        Some(EventKind::Exec) => {
            // The kernel sends the fixed part and argv_len bytes of argv.
            let argv = rng.below(ARGV_LEN + 1);
            buf.truncate(EXEC_FIXED + argv);
            let claimed = if rng.chance(4, 5) { argv } else { rng.edge_u64() as usize };
            put_u32(&mut buf, std::mem::offset_of!(ExecEvent, argv_len), claimed as u32);
            let filename_len = rng.edge_u64() as u32;
            put_u32(&mut buf, std::mem::offset_of!(ExecEvent, filename_len), filename_len);
            put_u32(&mut buf, std::mem::offset_of!(ExecEvent, cwd_depth), rng.edge_u64() as u32);
        }
        Some(EventKind::Dns) => {
            let msg = super::dns::wire(rng);
            let at = std::mem::offset_of!(DnsEvent, payload);
            let copied = msg.len().min(guard_common::DNS_PAYLOAD_LEN);
            buf[at..at + copied].copy_from_slice(&msg[..copied]);
            let claimed = if rng.chance(3, 4) { copied as u32 } else { rng.edge_u64() as u32 };
            put_u32(&mut buf, std::mem::offset_of!(DnsEvent, copied), claimed);
            put_u32(&mut buf, std::mem::offset_of!(DnsEvent, payload_len), if rng.chance(3, 4) { msg.len() as u32 } else { rng.edge_u64() as u32 });
            put_u32(&mut buf, std::mem::offset_of!(DnsEvent, protocol), *rng.pick(&[17, 6, 0]));
        }
        Some(EventKind::Open) => put_u32(&mut buf, std::mem::offset_of!(OpenEvent, filename_len), rng.edge_u64() as u32),
        Some(EventKind::FileDenied) => {
            put_u32(&mut buf, std::mem::offset_of!(FileEvent, path_len), rng.edge_u64() as u32);
            put_u32(&mut buf, std::mem::offset_of!(FileEvent, dir_depth), rng.edge_u64() as u32);
        }
        _ => {}
    }
    if rng.chance(1, 3) {
        mutate::mutate_bytes(rng, &mut buf, 4);
    }
    buf
}

/// The bytes of a decoded record.
fn bytes_of<T: aya::Pod>(v: &T) -> &[u8] {
    // SAFETY: `T: Pod` types are `repr(C)` with their padding written out as fields
    // (guard-common asserts their sizes), so all size_of::<T>() bytes are initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

#[expect(clippy::ptr_arg, reason = "a target's check takes a reference to what its generator makes")]
fn check(buf: &Vec<u8>) {
    let got = events::decode(buf);
    let kind = buf.get(..4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    // The model.
    let expect_ok = match (kind, kind.and_then(size_of_kind)) {
        (None, _) => {
            assert!(matches!(got, Err(DecodeError::Short { .. })), "{got:?}");
            return;
        }
        (Some(k), None) => {
            assert_eq!(got.as_ref().err(), Some(&DecodeError::UnknownKind { kind: k }));
            return;
        }
        (Some(k), Some(full)) if k == EventKind::Exec as u32 => {
            let argv_len = buf.get(std::mem::offset_of!(ExecEvent, argv_len)..).and_then(|b| b.get(..4)).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            (EXEC_FIXED..=full).contains(&buf.len()) && argv_len.is_some_and(|n| n as usize <= buf.len() - EXEC_FIXED)
        }
        (Some(_), Some(full)) => buf.len() >= full,
    };
    let event = match got {
        Ok(e) => e,
        Err(e) => {
            assert!(!expect_ok, "a well-formed record of {} bytes was refused: {e}", buf.len());
            assert!(matches!(e, DecodeError::Short { len, .. } if len == buf.len()), "{e:?}");
            return;
        }
    };
    assert!(expect_ok, "a malformed record of {} bytes decoded as {}", buf.len(), event.kind_name());
    let raw: &[u8] = match &event {
        Event::Exec(e) => {
            let raw = bytes_of(&**e);
            assert!(raw[buf.len()..].iter().all(|b| *b == 0), "an exec record's tail is not zero");
            assert!(e.argv_len as usize <= ARGV_LEN);
            let _ = crate::correlate::nul_terminated(&e.comm);
            let _ = String::from_utf8_lossy(&e.key.path[..(e.filename_len as usize).min(e.key.path.len())]);
            &raw[..buf.len()]
        }
        Event::Connect(e) => bytes_of(e),
        Event::Socket(e) => bytes_of(e),
        Event::Fork(e) | Event::Exit(e) | Event::Gate(e) => bytes_of(e),
        Event::Move(e) => bytes_of(e.as_ref()),
        Event::Cgroup(e) => bytes_of(e.as_ref()),
        Event::Open(e) => bytes_of(e.as_ref()),
        Event::Budget(e) => bytes_of(e),
        Event::File(e) => {
            // As the daemon reads the path and the directory chain.
            let _ = crate::daemon::files_path_text(e);
            bytes_of(e.as_ref())
        }
        Event::Deletions(e) => {
            // As the daemon reads the name.
            let _ = crate::correlate::nul_terminated(&e.name[..(e.name_len as usize).min(e.name.len())]);
            bytes_of(e.as_ref())
        }
        Event::Dns(d) => {
            // As the daemon hands the payload on.
            let copied = (d.copied as usize).min(d.payload.len());
            let transport = if d.protocol == 6 { crate::dns::Transport::Tcp } else { crate::dns::Transport::Udp };
            if let Ok(msg) = crate::dns::parse(&d.payload[..copied], transport, d.copied == d.payload_len) {
                let _ = msg.resolved();
            }
            bytes_of(d.as_ref())
        }
    };
    assert_eq!(raw, &buf[..raw.len()], "the decoded {} record differs from its bytes", event.kind_name());
    assert_eq!(event.header().map_or(kind, |h| Some(h.kind)), kind);
}

#[test]
fn records() {
    Target { name: "records::records", generate, check }.run();
}
