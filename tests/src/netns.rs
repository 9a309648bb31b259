//! Network namespaces for the network tests: a namespace joined to the host by a veth pair, so a
//! test has addresses of its own (10.x.y.2-4) that the host reaches over a real interface and
//! that no other test or service on the VM uses, and servers (TCP sinks, DNS) that listen there.
//!
//! The namespace is made with `ip` (iproute2) and removed on drop. Code runs inside it on a
//! thread of its own that first joins it with `setns(CLONE_NEWNET)`, which changes the network
//! namespace of the calling thread only: the rest of the test stays in the host's. A socket
//! belongs to the namespace it was created in for its whole life, so a listener bound on such a
//! thread can be served from any thread afterwards.
//!
//! Drop order: a socket (or a thread still in the namespace) keeps the kernel's namespace, and
//! with it the veth, alive after `ip netns del`. Declare the [`NetNs`] before the servers in it,
//! so that they are dropped first.
use std::{
    fs::File,
    io::{ErrorKind, Read as _},
    net::{Ipv4Addr, SocketAddr, TcpListener},
    os::fd::AsRawFd as _,
    path::Path,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// A network namespace with a veth pair to the host: the host side has 10.x.y.1/24, the
/// namespace side 10.x.y.2/24, .3 and .4, and a default route via the host.
pub struct NetNs {
    name: String,
    host_if: String,
    ns_if: String,
    /// The second and third octets of the /24.
    net: (u8, u8),
}

/// Serialises the choice of a free /24 (and the setup that makes it taken) within this process.
static SETUP: Mutex<()> = Mutex::new(());

/// The `ip` binary: cargo's environment may not have /usr/sbin in PATH.
fn ip_bin() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].into_iter().find(|p| Path::new(p).exists()).unwrap_or("ip")
}

/// Runs `ip ARGS...`; the error is the command and what it printed on stderr.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new(ip_bin()).args(args).output().map_err(|e| format!("run `ip {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`ip {}` failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Whether any address or route on the host is in 10.x.y.0/24.
fn subnet_in_use(x: u8, y: u8) -> bool {
    let text = [ip(&["-4", "-o", "addr", "show"]), ip(&["-4", "-o", "route", "show", "table", "all"])].map(Result::unwrap_or_default).join("\n");
    text.split(|c: char| c.is_whitespace() || c == '/')
        .filter_map(|w| w.parse::<Ipv4Addr>().ok())
        .any(|a| a.octets()[..3] == [10, x, y])
}

impl NetNs {
    /// Makes namespace `gt-<tag>-<pid>-<n>` with veth `gv<pid hex><n hex>a` (host side) and `…b`
    /// (namespace side), in a /24 of 10.200.0.0/13 chosen from the pid and free on the host.
    /// Panics, saying which `ip` command failed and why, if the setup fails (after removing
    /// what it made).
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let _setup = SETUP.lock().unwrap_or_else(|e| e.into_inner());
        let (pid, n) = (std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let name = format!("gt-{tag}-{pid}-{n}");
        // Interface names are at most 15 bytes (IFNAMSIZ - 1): 2 + 6 (pid_max is 2^22) + 2 + 1.
        let base = format!("gv{:06x}{:02x}", pid & 0xff_ffff, n & 0xff);
        let (host_if, ns_if) = (format!("{base}a"), format!("{base}b"));
        let start = (pid as usize).wrapping_mul(8).wrapping_add(n as usize) % 2048;
        let idx = (0..2048)
            .map(|i| (start + i) % 2048)
            .find(|idx| !subnet_in_use((200 + idx / 256) as u8, (idx % 256) as u8))
            .expect("a free /24 in 10.200.0.0/13");
        let net = ((200 + idx / 256) as u8, (idx % 256) as u8);
        // A namespace of this name is left by an earlier process with our pid (it crashed).
        if Path::new("/run/netns").join(&name).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
        if let Err(e) = ip(&["netns", "add", &name]) {
            panic!("create network namespace {name}: {e}");
        }
        // From here on, a failed step drops `ns`, which removes the namespace and the veth.
        let ns = Self { name, host_if, ns_if, net };
        let (h, b, nsn) = (ns.host_if.as_str(), ns.ns_if.as_str(), ns.name.as_str());
        let step = |args: &[&str]| {
            if let Err(e) = ip(args) {
                panic!("set up network namespace {nsn}: {e}");
            }
        };
        let (host, host_cidr) = (ns.host_addr().to_string(), format!("{}/24", ns.host_addr()));
        step(&["link", "add", h, "type", "veth", "peer", "name", b, "netns", nsn]);
        step(&["addr", "add", &host_cidr, "dev", h]);
        step(&["link", "set", h, "up"]);
        for i in 2..=4 {
            step(&["-n", nsn, "addr", "add", &format!("{}/24", ns.addr(i)), "dev", b]);
        }
        step(&["-n", nsn, "link", "set", b, "up"]);
        step(&["-n", nsn, "link", "set", "lo", "up"]);
        step(&["-n", nsn, "route", "add", "default", "via", &host]);
        ns
    }

    /// The namespace's name (`ip netns` and /run/netns/).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host side of the veth: 10.x.y.1.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.addr(1)
    }

    /// 10.x.y.`n`: 2, 3 and 4 are the namespace's.
    pub fn addr(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net.0, self.net.1, n)
    }

    /// The veth interface on the host (`gv…a`); the namespace's end is `gv…b`.
    pub fn host_if(&self) -> &str {
        &self.host_if
    }

    /// The veth interface inside the namespace.
    pub fn ns_if(&self) -> &str {
        &self.ns_if
    }

    /// Opens /run/netns/<name>, the handle `setns` takes.
    fn handle(&self) -> File {
        let path = Path::new("/run/netns").join(&self.name);
        File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
    }

    /// Runs `f` inside the namespace (on a thread of its own, which joins it first) and returns
    /// what it returns; a panic in `f` is resumed here.
    pub fn run_in<F: FnOnce() -> R + Send, R: Send>(&self, f: F) -> R {
        let handle = self.handle();
        let name = self.name.as_str();
        thread::scope(|s| {
            let t = s.spawn(move || {
                enter(&handle, name);
                f()
            });
            t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// Starts `f` inside the namespace on a thread of its own, for a long-running server. The
    /// thread keeps the namespace alive until it ends: join it before the [`NetNs`] is dropped.
    pub fn spawn_in<F: FnOnce() -> R + Send + 'static, R: Send + 'static>(&self, f: F) -> JoinHandle<R> {
        let handle = self.handle();
        let name = self.name.clone();
        thread::spawn(move || {
            enter(&handle, &name);
            f()
        })
    }
}

/// Moves the calling thread into the network namespace `handle` refers to.
fn enter(handle: &File, name: &str) {
    // SAFETY: setns on a valid namespace fd; it affects only the calling thread.
    if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        panic!("setns(CLONE_NEWNET) into {name}: {}", std::io::Error::last_os_error());
    }
}

impl Drop for NetNs {
    /// Removes the namespace, which removes the veth pair once nothing holds the namespace. Waits
    /// (up to 2 s) for the host's end to go, and says so on stderr if it did not; never panics.
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("netns: {e}");
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Path::new("/sys/class/net").join(&self.host_if).exists() {
            if Instant::now() > deadline {
                eprintln!("netns: {} is still there 2 s after `ip netns del {}` (a socket or thread in the namespace keeps it)", self.host_if, self.name);
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A TCP listener that accepts every connection and reads (and counts) everything sent to it,
/// until dropped.
pub struct Sink {
    addr: SocketAddr,
    bytes: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

/// A [`Sink`] on `addr:port` inside `ns` (`port` 0: a free one).
pub fn tcp_sink(ns: &NetNs, addr: Ipv4Addr, port: u16) -> Sink {
    let listener = ns.run_in(|| TcpListener::bind((addr, port))).unwrap_or_else(|e| panic!("bind a TCP sink on {addr}:{port} in {}: {e}", ns.name()));
    Sink::serve(listener)
}

/// A [`Sink`] on `addr` (a loopback address, say 127.0.0.2), a free port, in the host's namespace.
pub fn tcp_sink_local(addr: Ipv4Addr) -> Sink {
    let listener = TcpListener::bind((addr, 0)).unwrap_or_else(|e| panic!("bind a TCP sink on {addr}: {e}"));
    Sink::serve(listener)
}

impl Sink {
    fn serve(listener: TcpListener) -> Self {
        let addr = listener.local_addr().expect("the sink's address");
        listener.set_nonblocking(true).expect("a nonblocking listener");
        let (bytes, connections, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (b, c, s) = (Arc::clone(&bytes), Arc::clone(&connections), Arc::clone(&stop));
        let acceptor = thread::spawn(move || {
            let mut readers = Vec::new();
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        c.fetch_add(1, Ordering::SeqCst);
                        let (b, s) = (Arc::clone(&b), Arc::clone(&s));
                        readers.push(thread::spawn(move || {
                            // Short read timeouts, so that the reader sees the stop flag.
                            let mut stream = stream;
                            if stream.set_nonblocking(false).and_then(|()| stream.set_read_timeout(Some(Duration::from_millis(20)))).is_err() {
                                return;
                            }
                            let mut buf = vec![0u8; 64 * 1024];
                            while !s.load(Ordering::SeqCst) {
                                match stream.read(&mut buf) {
                                    Ok(0) => return,
                                    Ok(n) => {
                                        b.fetch_add(n as u64, Ordering::SeqCst);
                                    }
                                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                                    Err(_) => return,
                                }
                            }
                        }));
                        readers.retain(|r: &JoinHandle<()>| !r.is_finished());
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
            for r in readers {
                let _ = r.join();
            }
        });
        Self { addr, bytes, connections, stop, acceptor: Some(acceptor) }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Bytes received so far, over all connections.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits (up to `within`) until at least `n` bytes arrived; returns the count then.
    pub fn wait_bytes(&self, n: u64, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        while self.bytes() < n && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        self.bytes()
    }
}

impl Drop for Sink {
    /// Stops accepting and reading, and closes every connection.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}
