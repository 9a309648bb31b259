//! `guard-test-connect ADDR PORT [udp]`: prints its pid, then one `connect()` to ADDR:PORT.
//! Exit 0: connected; exit 3 and `errno N` on stdout: connect failed with errno N.
use std::{
    io::Write as _,
    net::{SocketAddr, TcpStream, UdpSocket},
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr: SocketAddr = match (args.get(1), args.get(2)) {
        (Some(a), Some(p)) => match format!("{}:{p}", if a.contains(':') { format!("[{a}]") } else { a.clone() }).parse() {
            Ok(addr) => addr,
            Err(e) => {
                eprintln!("bad address: {e}");
                std::process::exit(2);
            }
        },
        _ => {
            eprintln!("usage: guard-test-connect ADDR PORT [udp]");
            std::process::exit(2);
        }
    };
    println!("pid {}", std::process::id());
    let _ = std::io::stdout().flush();
    let result = if args.get(3).map(String::as_str) == Some("udp") {
        let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
        UdpSocket::bind(bind).and_then(|s| s.connect(addr))
    } else {
        TcpStream::connect(addr).map(drop)
    };
    match result {
        Ok(()) => println!("connected"),
        Err(e) => {
            println!("errno {}", e.raw_os_error().unwrap_or(-1));
            std::process::exit(3);
        }
    }
}
