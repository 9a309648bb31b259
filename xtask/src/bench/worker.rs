//! The workloads. The bench runs them as `xtask bench worker JOB ...` (this same binary), either
//! directly or through `guard-agent launch --agent NAME -- ...`, so the process that loops is
//! the same in every configuration and only where it runs changes. Each job times itself (its
//! start-up and the launcher's are outside the timed region) and ends by printing one line:
//! `bench-result key=value ...`.
use std::{
    ffi::{CString, c_char},
    io::{BufRead as _, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

#[derive(Debug, clap::Subcommand)]
pub enum Job {
    /// fork + execve + waitpid of BIN, N times (after N/20 untimed).
    ExecLoop {
        #[arg(long)]
        bin: PathBuf,
        #[arg(long)]
        n: u64,
        /// After the warm-up, print `waiting` and wait for a line on stdin before timing.
        #[arg(long)]
        wait: bool,
    },
    /// Like exec-loop, timing each exec of BIN and of BASE alternately; prints percentiles.
    ExecTimes {
        #[arg(long)]
        bin: PathBuf,
        #[arg(long)]
        base: PathBuf,
        #[arg(long)]
        n: u64,
        /// Arguments given to BIN (and BASE).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// TCP connect + accept + close (RST, so no TIME_WAIT piles up) to a loopback listener.
    ConnectLoop {
        #[arg(long)]
        n: u64,
        #[arg(long)]
        wait: bool,
    },
    /// BYTES over one loopback TCP connection, writer and reader in two threads.
    Stream {
        #[arg(long)]
        bytes: u64,
    },
    /// fork+exec of BIN from THREADS threads for SECS seconds at RATE execs/s (0: as fast as
    /// possible).
    Storm {
        #[arg(long)]
        bin: PathBuf,
        #[arg(long)]
        rate: f64,
        #[arg(long)]
        secs: f64,
        #[arg(long)]
        threads: u32,
    },
    /// Starts N children exec'ing BIN (which sleeps) at RATE/s, prints `ready`, waits for a
    /// line on stdin, then SIGKILLs and reaps exactly those children.
    Sleepers {
        #[arg(long)]
        bin: PathBuf,
        #[arg(long)]
        n: u64,
        #[arg(long)]
        rate: f64,
    },
}

pub fn main(job: Job) -> anyhow::Result<()> {
    let result = match job {
        Job::ExecLoop { bin, n, wait } => {
            let e = Exec::new(&bin, &[])?;
            for _ in 0..(n / 20).max(1) {
                e.run()?;
            }
            wait_for_go(wait)?;
            let (t, cpu) = (Instant::now(), cpu_ns());
            for _ in 0..n {
                e.run()?;
            }
            format!("ns={} cpu_ns={}", t.elapsed().as_nanos(), cpu_ns() - cpu)
        }
        Job::ExecTimes { bin, base, n, args } => exec_times(&bin, &base, n, &args)?,
        Job::ConnectLoop { n, wait } => connect_loop(n, wait)?,
        Job::Stream { bytes } => stream(bytes)?,
        Job::Storm { bin, rate, secs, threads } => storm(&bin, rate, secs, threads)?,
        Job::Sleepers { bin, n, rate } => sleepers(&bin, n, rate)?,
    };
    println!("bench-result {result}");
    std::io::stdout().flush()?;
    Ok(())
}

/// A prepared execve: path, argv and an empty environment, built before any timing.
struct Exec {
    path: CString,
    _args: Vec<CString>,
    argv: Vec<*const c_char>,
    envp: [*const c_char; 1],
}

// SAFETY: the raw pointers point into `path` and `_args`, owned by the same value and never
// mutated; they are only read by execve in a forked child.
unsafe impl Send for Exec {}
unsafe impl Sync for Exec {}

impl Exec {
    fn new(bin: &Path, args: &[String]) -> anyhow::Result<Self> {
        use std::os::unix::ffi::OsStrExt as _;
        let path = CString::new(bin.as_os_str().as_bytes())?;
        let mut all = vec![path.clone()];
        for a in args {
            all.push(CString::new(a.as_str())?);
        }
        let mut argv: Vec<*const c_char> = all.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        Ok(Self { path, _args: all, argv, envp: [std::ptr::null()] })
    }

    /// fork, execve in the child, and (unless `wait` is false) wait for it to exit 0.
    fn spawn(&self) -> anyhow::Result<libc::pid_t> {
        // SAFETY: the child only calls execve and _exit (async-signal-safe) on memory prepared
        // before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            bail!("fork: {}", std::io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                libc::execve(self.path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr());
                libc::_exit(127);
            }
        }
        Ok(pid)
    }

    fn run(&self) -> anyhow::Result<()> {
        let pid = self.spawn()?;
        let status = wait(pid)?;
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            bail!("{} exited with wait status {status:#x}", self.path.to_string_lossy());
        }
        Ok(())
    }
}

fn wait(pid: libc::pid_t) -> anyhow::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child; `status` is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            bail!("waitpid {pid}: {e}");
        }
    }
}

fn exec_times(bin: &Path, base: &Path, n: u64, args: &[String]) -> anyhow::Result<String> {
    let (held, plain) = (Exec::new(bin, args)?, Exec::new(base, args)?);
    for _ in 0..(n / 20).max(1) {
        held.run()?;
        plain.run()?;
    }
    let (mut a, mut b) = (Vec::with_capacity(n as usize), Vec::with_capacity(n as usize));
    for _ in 0..n {
        let t = Instant::now();
        held.run()?;
        a.push(t.elapsed().as_nanos() as u64);
        let t = Instant::now();
        plain.run()?;
        b.push(t.elapsed().as_nanos() as u64);
    }
    a.sort_unstable();
    b.sort_unstable();
    let p = |v: &[u64], q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Ok(format!(
        "bin_p50={} bin_p99={} bin_max={} base_p50={} base_p99={} base_max={}",
        p(&a, 0.5),
        p(&a, 0.99),
        a[a.len() - 1],
        p(&b, 0.5),
        p(&b, 0.99),
        b[b.len() - 1]
    ))
}

/// With `wait`: says it is ready and waits for the go (a line on stdin).
fn wait_for_go(wait: bool) -> anyhow::Result<()> {
    if wait {
        println!("waiting");
        std::io::stdout().flush()?;
        std::io::stdin().lock().read_line(&mut String::new())?;
    }
    Ok(())
}

fn connect_loop(n: u64, wait: bool) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind a loopback listener")?;
    let addr = listener.local_addr()?;
    let one = || -> anyhow::Result<()> {
        let client = TcpStream::connect(addr).context("connect")?;
        let (server, _) = listener.accept().context("accept")?;
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: sets SO_LINGER on a socket we own from a valid struct of the right size.
        unsafe {
            libc::setsockopt(
                client.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        drop(client);
        drop(server);
        Ok(())
    };
    for _ in 0..(n / 20).max(1) {
        one()?;
    }
    wait_for_go(wait)?;
    let (t, cpu) = (Instant::now(), cpu_ns());
    for _ in 0..n {
        one()?;
    }
    Ok(format!("ns={} cpu_ns={}", t.elapsed().as_nanos(), cpu_ns() - cpu))
}

/// CPU time (user + system, nanoseconds) of this worker's threads and of the children it has
/// waited for: what the workload itself ran, including guard's programs, which run in its
/// context (charged to it as system time), but not the daemon or anything else on the machine.
fn cpu_ns() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let ns = |who| unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut u);
        let t = |v: libc::timeval| v.tv_sec as u64 * 1_000_000_000 + v.tv_usec as u64 * 1000;
        t(u.ru_utime) + t(u.ru_stime)
    };
    ns(libc::RUSAGE_SELF) + ns(libc::RUSAGE_CHILDREN)
}

fn stream(bytes: u64) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind a loopback listener")?;
    let addr = listener.local_addr()?;
    let reader = thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(got),
                k => got += k as u64,
            }
        }
    });
    let mut s = TcpStream::connect(addr).context("connect")?;
    let chunk = vec![0x5au8; 128 * 1024];
    let (t, cpu) = (Instant::now(), cpu_ns());
    let mut sent = 0u64;
    while sent < bytes {
        let k = chunk.len().min((bytes - sent) as usize);
        s.write_all(&chunk[..k])?;
        sent += k as u64;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let got = reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    let (ns, cpu) = (t.elapsed().as_nanos(), cpu_ns() - cpu);
    if got != bytes {
        bail!("sent {bytes} bytes, the reader got {got}");
    }
    Ok(format!("ns={ns} bytes={bytes} cpu_ns={cpu}"))
}

fn storm(bin: &Path, rate: f64, secs: f64, threads: u32) -> anyhow::Result<String> {
    let exec = std::sync::Arc::new(Exec::new(bin, &[])?);
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + Duration::from_secs_f64(secs);
    let period = (rate > 0.0).then(|| Duration::from_secs_f64(f64::from(threads) / rate));
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            let exec = std::sync::Arc::clone(&exec);
            thread::spawn(move || -> anyhow::Result<u64> {
                // Threads are offset by a fraction of the period, so execs are spread evenly.
                let offset = period.map_or(Duration::ZERO, |p| p * i / threads.max(1));
                let mut next = start + offset;
                let mut done = 0u64;
                loop {
                    let now = Instant::now();
                    if now >= end {
                        return Ok(done);
                    }
                    if let Some(p) = period {
                        if now < next {
                            thread::sleep(next - now);
                        }
                        next += p;
                    }
                    exec.run()?;
                    done += 1;
                }
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.join().map_err(|_| anyhow::anyhow!("storm thread panicked"))??;
    }
    let elapsed = start.elapsed().as_secs_f64().max(secs);
    Ok(format!("execs={total} secs={elapsed:.3}"))
}

fn sleepers(bin: &Path, n: u64, rate: f64) -> anyhow::Result<String> {
    let exec = Exec::new(bin, &[])?;
    let period = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let start = Instant::now();
    let mut pids = Vec::with_capacity(n as usize);
    let result = (|| -> anyhow::Result<()> {
        for i in 0..n {
            let next = start + period * i as u32;
            let now = Instant::now();
            if now < next {
                thread::sleep(next - now);
            }
            pids.push(exec.spawn()?);
        }
        println!("ready {}", pids.len());
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(())
    })();
    // Exactly the children started here, whatever happened above.
    for &pid in &pids {
        // SAFETY: signals a child of this process that has not been reaped (so the pid is ours).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for &pid in &pids {
        wait(pid)?;
    }
    result?;
    Ok(format!("killed={}", pids.len()))
}

/// A static ELF executable of a few dozen bytes that exits 0 at once (or, with `sleep`, first
/// waits for a signal): the cheapest exec there is, so exec-path overhead is not hidden behind
/// the dynamic loader.
pub fn tiny_elf(sleep: bool) -> anyhow::Result<Vec<u8>> {
    let (machine, code): (u16, Vec<u8>) = if cfg!(target_arch = "x86_64") {
        let mut c = Vec::new();
        if sleep {
            c.extend([0xb8, 34, 0, 0, 0, 0x0f, 0x05]); // mov eax, SYS_pause; syscall
        }
        c.extend([0xb8, 60, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05]); // mov eax, SYS_exit; xor edi, edi; syscall
        (0x3e, c)
    } else if cfg!(target_arch = "aarch64") {
        let mut words: Vec<u32> = Vec::new();
        if sleep {
            // ppoll(NULL, 0, NULL, NULL): x0..x3 = 0, x8 = 73, svc #0
            words.extend([0xd280_0000, 0xd280_0001, 0xd280_0002, 0xd280_0003, 0xd280_0928, 0xd400_0001]);
        }
        words.extend([0xd280_0000, 0xd280_0ba8, 0xd400_0001]); // x0 = 0; x8 = SYS_exit (93); svc #0
        (0xb7, words.iter().flat_map(|w| w.to_le_bytes()).collect())
    } else {
        bail!("the bench's tiny executable is written for x86_64 and aarch64 only");
    };
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let size = HEADERS + code.len() as u64;
    let mut e = Vec::with_capacity(size as usize);
    e.extend([0x7f, b'E', b'L', b'F', 2, 1, 1, 0]); // 64-bit, little-endian, version 1, SysV
    e.extend([0u8; 8]);
    e.extend(2u16.to_le_bytes()); // ET_EXEC
    e.extend(machine.to_le_bytes());
    e.extend(1u32.to_le_bytes());
    e.extend((BASE + HEADERS).to_le_bytes()); // entry
    e.extend(64u64.to_le_bytes()); // program headers right after this header
    e.extend(0u64.to_le_bytes()); // no section headers
    e.extend(0u32.to_le_bytes());
    e.extend([64u16, 56, 1, 64, 0, 0].iter().flat_map(|v| v.to_le_bytes()));
    e.extend(1u32.to_le_bytes()); // PT_LOAD
    e.extend(5u32.to_le_bytes()); // R + X
    e.extend(0u64.to_le_bytes()); // from file offset 0
    e.extend(BASE.to_le_bytes());
    e.extend(BASE.to_le_bytes());
    e.extend(size.to_le_bytes());
    e.extend(size.to_le_bytes());
    e.extend(0x1000u64.to_le_bytes());
    e.extend(code);
    Ok(e)
}
