//! What /proc says of a process the test started.

/// The state letter of /proc/PID/stat (`T`: stopped), `None` once the process is gone.
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the state follows the last `)`.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Waits (up to 5 s) until process `pid` is stopped.
pub fn await_stopped(pid: u32) {
    let deadline = std::time::Instant::now() + crate::secs(5);
    while state(pid) != Some('T') {
        assert!(std::time::Instant::now() < deadline, "process {pid} is not stopped: {:?}", state(pid));
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
