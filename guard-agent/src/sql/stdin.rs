//! A stopped process's stdin, read without taking anything from it.
//!
//! - A regular file (a `< file` redirect, or a here-document bash wrote to a temporary file):
//!   opened again through `/proc/PID/fd/0` and read from the process's own offset.
//! - A pipe or FIFO (`echo … |`, a here-document bash wrote to a pipe, a here-string): the
//!   buffered bytes are copied with `tee(2)`, which leaves them in the pipe for the client. That
//!   is everything it will ever read only once no process holds the write end open; until then
//!   the caller is told who does ([`Stdin::Writers`]) and asks again.
//! - A terminal, a socket, a device: what arrives later cannot be seen.
use std::{
    fs,
    io::Read as _,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    },
};

use super::READ_MAX;

pub enum Stdin {
    /// All it will read, and what kind of stdin it was.
    Text { text: String, what: &'static str },
    /// A pipe these processes still hold open for writing.
    Writers(Vec<u32>),
    /// Why it cannot be seen whole.
    Unseen(String),
}

pub fn read(pid: u32, last_look: bool) -> Stdin {
    let link = format!("/proc/{pid}/fd/0");
    let target = match fs::read_link(&link) {
        Ok(t) => t.to_string_lossy().into_owned(),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            return Stdin::Text {
                text: String::new(),
                what: "closed",
            };
        }
        Err(e) => return Stdin::Unseen(format!("stdin cannot be examined: {e}")),
    };
    if target == "/dev/null" {
        return Stdin::Text {
            text: String::new(),
            what: "/dev/null",
        };
    }
    let meta = match fs::metadata(&link) {
        Ok(m) => m,
        Err(e) => return Stdin::Unseen(format!("stdin ({target}) cannot be examined: {e}")),
    };
    let ft = meta.file_type();
    if ft.is_file() {
        return match regular(pid, &link) {
            Ok(text) => Stdin::Text { text, what: "file" },
            Err(why) => Stdin::Unseen(format!("stdin ({target}): {why}")),
        };
    }
    if ft.is_fifo() {
        let writers = writers_of(&target);
        if !writers.is_empty() {
            return if last_look {
                Stdin::Unseen(format!(
                    "stdin is a pipe still open for writing (by pid {}): what comes later cannot be judged",
                    join(&writers)
                ))
            } else {
                Stdin::Writers(writers)
            };
        }
        return match peek(&link) {
            Ok(text) => Stdin::Text { text, what: "pipe" },
            Err(why) => Stdin::Unseen(format!("stdin (a pipe): {why}")),
        };
    }
    if ft.is_char_device() {
        return Stdin::Unseen(format!(
            "stdin is a terminal or device ({target}): statements typed later cannot be judged"
        ));
    }
    Stdin::Unseen(format!(
        "stdin is {target}: what arrives later cannot be judged"
    ))
}

fn join(pids: &[u32]) -> String {
    pids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rest of a regular file from the process's offset (`/proc/PID/fdinfo/0`).
fn regular(pid: u32, link: &str) -> Result<String, String> {
    use std::io::{Seek as _, SeekFrom};
    let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/0")).map_err(|e| e.to_string())?;
    let pos: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("pos:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or("no offset in fdinfo")?;
    let mut f = fs::File::open(link).map_err(|e| e.to_string())?;
    f.seek(SeekFrom::Start(pos)).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    f.take(READ_MAX as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() > READ_MAX {
        return Err(format!("more than {} MiB", READ_MAX >> 20));
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Processes holding `target` (`pipe:[N]`, or a FIFO's path) open for writing.
fn writers_of(target: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == target) {
                let info = fs::read_to_string(format!(
                    "/proc/{pid}/fdinfo/{}",
                    fd.file_name().to_string_lossy()
                ))
                .unwrap_or_default();
                let flags = info
                    .lines()
                    .find_map(|l| l.strip_prefix("flags:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok());
                // Unknown flags count as a writer: fail closed.
                if flags.is_none_or(|f| f & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32) {
                    out.push(pid);
                    break;
                }
            }
        }
    }
    out
}

/// What the pipe holds, copied with `tee(2)` into a pipe of our own and read from there.
fn peek(link: &str) -> Result<String, String> {
    let src = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(link)
        .map_err(|e| format!("cannot open it again: {e}"))?;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two descriptors, which we own from here on.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: both were just created and belong to nobody else.
    let (ours_r, ours_w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Room for everything the source can hold.
    // SAFETY: fcntl on descriptors we own.
    let size = unsafe { libc::fcntl(src.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if size > 0 {
        // SAFETY: as above; failure leaves the default size, checked below.
        unsafe { libc::fcntl(ours_w.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
    }
    // SAFETY: tee between two pipe descriptors we hold; copies, consumes nothing.
    let n = unsafe {
        libc::tee(
            src.as_raw_fd(),
            ours_w.as_raw_fd(),
            READ_MAX,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EAGAIN) {
            return Ok(String::new());
        }
        return Err(format!("tee: {e}"));
    }
    // SAFETY: as above.
    let held = unsafe {
        let mut queued: libc::c_int = 0;
        libc::ioctl(src.as_raw_fd(), libc::FIONREAD, &mut queued);
        queued
    };
    if (n as i64) < i64::from(held) {
        return Err(format!("holds {held} bytes; only {n} could be copied"));
    }
    drop(ours_w);
    let mut buf = Vec::with_capacity(n as usize);
    fs::File::from(ours_r)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use std::{io::Write as _, process::Stdio};

    use super::*;

    /// A child stopped before it reads, with a pipe on stdin: peeked, not consumed.
    #[test]
    fn a_pipe_is_peeked_once_its_writers_are_gone_and_keeps_its_bytes() {
        let mut child = std::process::Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        // SAFETY: stops our own child.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        // Only once it has stopped: a `cat` still starting could otherwise read the bytes
        // written next before the pending stop takes it (seen in CI: the pipe was empty).
        let mut status = 0;
        // SAFETY: waits for our own child's stop; `status` is ours to fill.
        let stopped = unsafe { libc::waitpid(pid as i32, &mut status, libc::WUNTRACED) };
        assert!(stopped == pid as i32 && libc::WIFSTOPPED(status), "the child did not stop: {status:#x}");
        let mut w = child.stdin.take().unwrap();
        w.write_all(b"DROP TABLE t;\n").unwrap();
        match read(pid, false) {
            Stdin::Writers(p) => assert!(p.contains(&std::process::id()), "{p:?}"),
            _ => panic!("we hold the write end"),
        }
        assert!(
            matches!(read(pid, true), Stdin::Unseen(why) if why.contains("still open for writing"))
        );
        drop(w);
        // A child another test forks at this moment may hold a copy until it execs: wait that out.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match read(pid, false) {
                Stdin::Text { text, what } => {
                    break assert_eq!((text.as_str(), what), ("DROP TABLE t;\n", "pipe"));
                }
                Stdin::Writers(p) => assert!(
                    std::time::Instant::now() < deadline && !p.contains(&std::process::id()),
                    "{p:?}"
                ),
                Stdin::Unseen(why) => panic!("{why}"),
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // SAFETY: continues our own child.
        unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.stdout, b"DROP TABLE t;\n",
            "the client still reads every byte"
        );
    }

    #[test]
    fn a_file_is_read_from_the_offset_and_null_is_empty() {
        let path = std::env::temp_dir().join(format!("guard-stdin-{}", std::process::id()));
        fs::write(&path, "SELECT 1;\nDROP TABLE t;\n").unwrap();
        let mut f = fs::File::open(&path).unwrap();
        let mut skip = [0u8; 10];
        f.read_exact(&mut skip).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(f)
            .spawn()
            .unwrap();
        match read(child.id(), true) {
            Stdin::Text { text, what } => {
                assert_eq!((text.as_str(), what), ("DROP TABLE t;\n", "file"))
            }
            _ => panic!("a regular file"),
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        assert!(matches!(
            read(child.id(), true),
            Stdin::Text {
                what: "/dev/null",
                ..
            }
        ));
        child.kill().unwrap();
        child.wait().unwrap();
        fs::remove_file(&path).unwrap();
    }
}
