//! A test workload that speaks DNS from inside an agent workload, so tests can observe what
//! guard learns and cuts off.
//!
//! - `guard-test-dns SERVER NAME [PORT [DELAY_MS]]`: resolves NAME (A) at SERVER (`ip:port`),
//!   prints `addr IP` (or `error TEXT`, exit 4); with PORT, connects to the first address
//!   (DELAY_MS after the answer): prints `connected` or `errno N` (exit 3).
//! - `guard-test-dns SERVER repeat N NAME`: N lookups of NAME; prints `answered K`.
//! - `guard-test-dns SERVER burst N SUFFIX`: N lookups of random 57-character labels (three
//!   of them) under SUFFIX, as DNS tunnels send; prints `answered K` and `first_error I TEXT`.
//! - `guard-test-dns SERVER listen SECS`: sends one datagram to SERVER from a socket, prints
//!   `port P`, then counts datagrams received on it for SECS: `received N`.
//!
//! Prints `pid N` first.
use std::{
    io::Write as _,
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use guard_tests::dns_server::query;
use hickory_proto::rr::RecordType;

const TIMEOUT: Duration = Duration::from_secs(2);

fn out(line: String) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    out(format!("pid {}", std::process::id()));
    let server: SocketAddr = args.first().and_then(|a| a.parse().ok()).expect("SERVER as ip:port");
    match args.get(1).map(String::as_str) {
        Some("repeat") => {
            let n: usize = args[2].parse().expect("N");
            let answered = (0..n).filter(|_| query(server, &args[3], RecordType::A, TIMEOUT).is_ok()).count();
            out(format!("answered {answered}"));
        }
        Some("burst") => {
            let n: usize = args[2].parse().expect("N");
            let mut seed = u64::from(std::process::id()) | 1;
            let mut answered = 0;
            let mut first_error = None;
            for i in 0..n {
                let labels: Vec<String> = (0..3).map(|_| label(&mut seed, 57)).collect();
                let name = format!("{}.{}", labels.join("."), args[3]);
                match query(server, &name, RecordType::A, Duration::from_millis(500)) {
                    Ok(_) => answered += 1,
                    Err(e) if first_error.is_none() => first_error = Some((i, e)),
                    Err(_) => {}
                }
            }
            out(format!("answered {answered}"));
            if let Some((i, e)) = first_error {
                out(format!("first_error {i} {e}"));
            }
        }
        Some("listen") => {
            let secs: u64 = args[2].parse().expect("SECS");
            let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
            sock.send_to(b"hello", server).expect("send");
            out(format!("port {}", sock.local_addr().expect("addr").port()));
            sock.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
            let end = Instant::now() + Duration::from_secs(secs);
            let mut received = 0u64;
            let mut buf = [0u8; 2048];
            while Instant::now() < end {
                if sock.recv(&mut buf).is_ok() {
                    received += 1;
                }
            }
            out(format!("received {received}"));
        }
        Some(name) => {
            let addrs = match query(server, name, RecordType::A, TIMEOUT) {
                Ok(a) if !a.is_empty() => a,
                Ok(_) => {
                    out("error no address".into());
                    std::process::exit(4);
                }
                Err(e) => {
                    out(format!("error {e}"));
                    std::process::exit(4);
                }
            };
            out(format!("addr {}", addrs[0]));
            if let Some(port) = args.get(2) {
                let port: u16 = port.parse().expect("PORT");
                let delay: u64 = args.get(3).map_or(0, |d| d.parse().expect("DELAY_MS"));
                std::thread::sleep(Duration::from_millis(delay));
                match TcpStream::connect_timeout(&SocketAddr::new(addrs[0], port), TIMEOUT) {
                    Ok(_) => out("connected".into()),
                    Err(e) => {
                        out(format!("errno {}", e.raw_os_error().unwrap_or(0)));
                        std::process::exit(3);
                    }
                }
            }
        }
        None => panic!("usage: see the file's doc comment"),
    }
}

/// `len` base32 characters from a xorshift generator: random, like encoded data.
fn label(seed: &mut u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            ALPHABET[(*seed % 32) as usize] as char
        })
        .collect()
}
