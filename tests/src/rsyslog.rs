//! A real rsyslogd (Debian's package, installed by `cargo xtask setup`) started by a test: it
//! listens on a loopback TCP port (plain, or TLS with a throwaway certificate) and writes every
//! message it parsed to a file, one line each, which the test reads back.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::TempDir;

/// What rsyslog parsed out of each message: facility, severity, app name, msgid, structured
/// data, message.
pub const FIELDS: &str = "%syslogfacility-text%|%syslogseverity%|%app-name%|%msgid%|%structured-data%|%msg%";

pub struct Rsyslog {
    child: Option<Child>,
    pub port: u16,
    pub out: PathBuf,
    /// With TLS: the CA certificate a client must trust.
    pub ca: Option<PathBuf>,
}

impl Rsyslog {
    /// Starts rsyslogd in the foreground with its own config, work directory and pid file in
    /// `dir`; waits until it accepts connections.
    pub fn start(dir: &TempDir, tls: bool) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let work = dir.path(&format!("rsyslog-{port}"));
        std::fs::create_dir_all(&work).unwrap();
        let out = work.join("received.log");
        let ca = tls.then(|| certificate(&work));
        let driver = if tls {
            format!(
                "global(DefaultNetstreamDriver=\"ossl\" DefaultNetstreamDriverCAFile=\"{w}/ca.pem\" \
                 DefaultNetstreamDriverCertFile=\"{w}/cert.pem\" DefaultNetstreamDriverKeyFile=\"{w}/key.pem\")\n\
                 module(load=\"imtcp\" StreamDriver.Name=\"ossl\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\")\n",
                w = work.display()
            )
        } else {
            "module(load=\"imtcp\")\n".to_owned()
        };
        let conf = format!(
            "global(workDirectory=\"{w}\" maxMessageSize=\"256k\")\n{driver}\
             template(name=\"fields\" type=\"string\" string=\"{FIELDS}\\n\")\n\
             ruleset(name=\"guard\") {{ action(type=\"omfile\" file=\"{out}\" template=\"fields\") }}\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"guard\")\n",
            w = work.display(),
            out = out.display()
        );
        let conf_path = work.join("rsyslog.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(&conf_path)
            .arg("-i")
            .arg(work.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rsyslogd (installed by `cargo xtask setup`)");
        let r = Self { child: Some(child), port, out, ca };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "rsyslogd did not listen on {port}");
            thread::sleep(Duration::from_millis(20));
        }
        r
    }

    /// The lines rsyslog wrote so far.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out).map(|t| t.lines().map(str::to_owned).collect()).unwrap_or_default()
    }

    /// Waits until rsyslog wrote at least `n` lines (it writes asynchronously).
    pub fn wait_lines(&self, n: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let lines = self.lines();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signals the rsyslogd this harness started.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

/// A throwaway CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it (`cert.pem`,
/// `key.pem`) in `dir`; returns the CA, which a client trusts. (A self-signed certificate would
/// be a CA used as an end entity, which rustls rightly refuses.)
fn certificate(dir: &Path) -> PathBuf {
    let ext = dir.join("server.ext");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").unwrap();
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl").current_dir(dir).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().expect("run openssl");
        assert!(status.success(), "openssl {args:?} failed");
    };
    openssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=guard test CA", "-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "key.pem", "-out", "server.csr"]);
    openssl(&["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-extfile", "server.ext", "-out", "cert.pem"]);
    dir.join("ca.pem")
}
