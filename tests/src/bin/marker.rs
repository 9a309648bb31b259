//! Writes the file named by `$GUARD_MARKER` from an ELF constructor, before `main` and before
//! any of Rust's runtime set-up: if the file does not exist, not one instruction of this
//! program's own code ran.
extern "C" fn write_marker() {
    // SAFETY: getenv/open/write/close are plain libc calls on NUL-terminated strings; the
    // constructor runs single-threaded before main.
    unsafe {
        let path = libc::getenv(c"GUARD_MARKER".as_ptr());
        if path.is_null() {
            return;
        }
        let fd = libc::open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644);
        if fd >= 0 {
            let msg = b"ran\n";
            libc::write(fd, msg.as_ptr().cast(), msg.len());
            libc::close(fd);
        }
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static CONSTRUCTOR: extern "C" fn() = write_marker;

fn main() {
    let exe = std::env::args().next().unwrap_or_default();
    println!("marker ran as {exe}");
}
