//! A test workload making one network call, so tests can observe the kernel's answer.
//!
//! `guard-test-connect ADDR PORT [tcp|udp|sendto]`: one `connect()` (TCP or UDP), or one UDP
//! `sendto()` on an unconnected socket. `guard-test-connect raw|packet`: one `socket()` call
//! for a raw IPv4 ICMP socket or an `AF_PACKET` socket.
//!
//! Prints `pid N` first. Exit 0: the call succeeded; exit 3 and `errno N`: it failed.
use std::{
    io::Write as _,
    net::{SocketAddr, TcpStream, UdpSocket},
};

fn socket(family: i32, ty: i32, protocol: i32) -> std::io::Result<()> {
    // SAFETY: plain socket(2) call; the fd is closed right away.
    let fd = unsafe { libc::socket(family, ty, protocol) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is ours.
    unsafe { libc::close(fd) };
    Ok(())
}

fn usage() -> ! {
    eprintln!("usage: guard-test-connect ADDR PORT [tcp|udp|sendto] | raw | packet");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("pid {}", std::process::id());
    let _ = std::io::stdout().flush();
    let result = match args.first().map(String::as_str) {
        Some("raw") => socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
        Some("packet") => socket(libc::AF_PACKET, libc::SOCK_RAW, 0),
        Some(a) => {
            let Some(port) = args.get(1) else { usage() };
            let host = if a.contains(':') { format!("[{a}]") } else { a.to_owned() };
            let Ok(addr) = format!("{host}:{port}").parse::<SocketAddr>() else { usage() };
            let any: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
            match args.get(2).map(String::as_str).unwrap_or("tcp") {
                "tcp" => TcpStream::connect(addr).map(drop),
                "udp" => UdpSocket::bind(any).and_then(|s| s.connect(addr)),
                "sendto" => UdpSocket::bind(any).and_then(|s| s.send_to(b"guard", addr)).map(drop),
                _ => usage(),
            }
        }
        None => usage(),
    };
    match result {
        Ok(()) => println!("ok"),
        Err(e) => {
            println!("errno {}", e.raw_os_error().unwrap_or(-1));
            std::process::exit(3);
        }
    }
}
