//! Whose socket is whose, in the kernel. The connect and sendmsg hooks record an agent
//! workload's socket in the socket's own storage (`SOCK_OWNER`, BPF socket-local storage); the
//! `cgroup_skb` programs, attached at the cgroup v2 root and so run for every packet on the
//! host, read it. A socket of a process outside agents carries nothing, which is all its
//! packets cost: one storage read that finds nothing. A workload that moved out of its agent's
//! cgroups still owns the sockets it makes there, and its byte budget still holds. Run as root
//! by `cargo xtask test`.
use std::{
    io::{BufRead as _, BufReader},
    net::{Ipv4Addr, TcpListener, TcpStream},
    os::{
        fd::{FromRawFd as _, OwnedFd},
        unix::{fs::MetadataExt as _, process::ExitStatusExt as _},
    },
    path::PathBuf,
    time::Duration,
};

use aya::maps::{Map, MapData, MapError, SkStorage};
use guard_tests::{Daemon, PIN_DIR, TempDir, cgroup2_root, field, launch, netns::tcp_sink_local, spawn_launch, unique};

const PYTHON: &str = "/usr/bin/python3";

/// `SockOwner`'s bytes: tgid (u32), policy id (u32), cgroup id (u64), matched cgroup id (u64).
type Owner = [u8; size_of::<guard_common::SockOwner>()];

fn tgid(o: &Owner) -> u32 {
    u32::from_ne_bytes(o[0..4].try_into().unwrap())
}

fn cgroup_id(o: &Owner) -> u64 {
    u64::from_ne_bytes(o[8..16].try_into().unwrap())
}

/// The pinned `SOCK_OWNER` map of the one generation the daemon enforces.
fn owners() -> SkStorage<MapData, Owner> {
    let generations: Vec<PathBuf> = std::fs::read_dir(PIN_DIR)
        .unwrap_or_else(|e| panic!("read {PIN_DIR}: {e}"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("gen-")))
        .collect();
    assert_eq!(generations.len(), 1, "one generation pinned: {generations:?}");
    let path = generations[0].join("maps").join(guard_common::names::SOCK_OWNER);
    let data = MapData::from_pin(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    SkStorage::try_from(Map::SkStorage(data)).expect("SOCK_OWNER is a socket storage map")
}

fn assert_no_owner(map: &SkStorage<MapData, Owner>, socket: &impl std::os::fd::AsRawFd, what: &str) {
    match map.get(socket, 0) {
        Err(MapError::KeyNotFound) => {}
        other => panic!("{what}: expected no owner, got {other:?}"),
    }
}

/// Another process's descriptor, duplicated into this one (`pidfd_getfd`, root).
fn fd_of(pid: u32, fd: i32) -> OwnedFd {
    // SAFETY: plain system calls; each result is checked before use.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as i32;
        assert!(pidfd >= 0, "pidfd_open({pid}): {}", std::io::Error::last_os_error());
        let got = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) as i32;
        let err = std::io::Error::last_os_error();
        libc::close(pidfd);
        assert!(got >= 0, "pidfd_getfd({pid}, {fd}): {err}");
        OwnedFd::from_raw_fd(got)
    }
}

/// Connects to argv[1]:argv[2], prints `fd N pid P cgroup PATH`, and keeps the socket open
/// until the other end closes it.
const CONNECT_AND_WAIT: &str = r#"
import os, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
cg = [l for l in open("/proc/self/cgroup").read().splitlines() if l.startswith("0::")][0][3:]
print("fd", s.fileno(), "pid", os.getpid(), "cgroup", cg, flush=True)
s.settimeout(30)
s.recv(1)
"#;

#[test]
fn sockets_outside_agents_carry_no_owner_and_an_agent_socket_names_its_process() {
    let dir = TempDir::new("owners");
    let agent = unique("owners");
    let daemon = Daemon::start(&dir, &format!("agents:\n  - name: {agent}\n"));
    let map = owners();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();

    // This process is outside every agent: neither end of its connection is recorded.
    let client = TcpStream::connect(addr).unwrap();
    let (server, _) = listener.accept().unwrap();
    assert_no_owner(&map, &client, "a connect outside agents");
    assert_no_owner(&map, &server, "a socket accepted outside agents");

    // An agent workload's connected socket carries its process and its cgroup.
    let mut child = spawn_launch(&[], &agent, &[PYTHON, "-c", CONNECT_AND_WAIT, "127.0.0.1", &addr.port().to_string()], &[]);
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert!(words.len() == 6 && words[0] == "fd" && words[2] == "pid" && words[4] == "cgroup", "workload said {line:?}");
    let (fd, pid, cgroup) = (words[1].parse().unwrap(), words[3].parse().unwrap(), words[5]);
    assert!(cgroup.starts_with(&format!("/guard/{agent}/")), "the workload runs in its agent's cgroup: {cgroup}");
    let (accepted, _) = listener.accept().unwrap();
    let socket = fd_of(pid, fd);
    let owner = map.get(&socket, 0).unwrap_or_else(|e| panic!("the agent's socket has no owner: {e}"));
    assert_eq!(tgid(&owner), pid);
    let ino = std::fs::metadata(cgroup2_root().join(cgroup.trim_start_matches('/'))).unwrap().ino();
    assert_eq!(cgroup_id(&owner), ino, "owned by the workload's cgroup");
    // The listener's end is this process's, outside agents.
    assert_no_owner(&map, &accepted, "the outside end of an agent's connection");
    drop((socket, accepted));
    let status = child.wait().unwrap();
    assert!(status.success(), "the workload: {status:?}");
    daemon.stop();
}

/// Moves itself to the cgroup root (argv[1]), then streams argv[4] MiB to argv[2]:argv[3]
/// from a socket made after the move; prints `sent N` as it goes.
const MOVE_THEN_STREAM: &str = r#"
import os, socket, sys
open(sys.argv[1] + "/cgroup.procs", "w").write(str(os.getpid()))
print("cgroup", [l for l in open("/proc/self/cgroup").read().splitlines() if l.startswith("0::")][0], flush=True)
s = socket.create_connection((sys.argv[2], int(sys.argv[3])))
chunk = b"x" * 65536
sent = 0
for _ in range(int(sys.argv[4]) * 16):
    s.sendall(chunk)
    sent += len(chunk)
    print("sent", sent, flush=True)
print("done", flush=True)
"#;

#[test]
fn a_workload_that_moved_out_is_still_budgeted_on_a_socket_made_after_the_move() {
    let dir = TempDir::new("moved-budget");
    let agent = unique("movedbudget");
    const BUDGET: u64 = 1 << 20;
    let daemon = Daemon::start(&dir, &format!("agents:\n  - name: {agent}\n    exfil:\n      egress_budget: {{ bytes: 1MiB, per: 60s, action: kill }}\n"));
    let sink = tcp_sink_local(Ipv4Addr::LOCALHOST);
    let port = sink.addr().port().to_string();
    let root = cgroup2_root();
    let (_, out) = launch(&agent, &[PYTHON, "-c", MOVE_THEN_STREAM, root.to_str().unwrap(), "127.0.0.1", &port, "50"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("cgroup 0::/\n"), "the workload did not move out: {stdout}");
    assert!(!stdout.contains("done"), "streamed 50 MiB past a 1 MiB budget: {stdout}");
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "moved out and streamed unbudgeted: {:?} {stdout}", out.status);
    let received = sink.wait_bytes(u64::MAX, Duration::from_secs(2));
    assert!(received > 0 && received <= BUDGET, "the sink received {received} bytes, budget {BUDGET}");
    let v = daemon.await_verdict("the budget verdict", 10, |v| field(v, "/unmapped/operation") == "egress_budget");
    assert_eq!(field(&v, "/unmapped/verdict"), "killed");
    assert_eq!(field(&v, "/unmapped/agent"), agent);
    assert_eq!(field(&v, "/dst_endpoint/port"), port);
    daemon.stop();
}
