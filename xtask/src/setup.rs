//! Idempotent machine setup. Each step checks first and only installs what is missing, saying
//! what it installs. Needs root; without it, says exactly what to run instead.
use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, bail};

/// Debian packages: what bpf-linker is built against (its `llvm-22` feature links libLLVM 22),
/// rsyslog with its TLS driver, which the syslog sink tests send to, sqlite3, the real
/// database client the SQL tests hold and judge, librdkafka (with pkg-config, which finds it),
/// which the Kafka sink links and whose mock cluster its tests run against, python3-venv for the
/// Kubernetes validators (`deploy/check.py`), and QEMU, a static busybox and cpio for
/// `cargo xtask vmtest`'s guests.
const APT_PACKAGES: [&str; 14] = [
    "llvm-22-dev", "libpolly-22-dev", "libzstd-dev", "zlib1g-dev", "rsyslog", "rsyslog-openssl", "sqlite3",
    "librdkafka-dev", "pkg-config", "python3-venv", "qemu-system-x86", "busybox-static", "cpio", "xz-utils",
];
/// Debian's hook that tells maintainer scripts not to start services (exit 101).
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
/// The eBPF programs are built with the installed `nightly`; its LLVM must match bpf-linker's.
const NIGHTLY: &str = "nightly";
const LLVM_MAJOR: &str = "22";
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn ensure(invoked_as: &[&str]) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "guard loads eBPF programs and manages cgroups, so setup, run and test need root.\n\
             Run instead:  sudo -E env \"PATH=$PATH\" cargo xtask {}",
            invoked_as.join(" ")
        );
    }
    apt_packages()?;
    nightly()?;
    bpf_linker()?;
    mount_if_absent("/sys/fs/bpf", "bpf", "bpf")?;
    if !Path::new("/sys/kernel/tracing/events").is_dir() && !Path::new("/sys/kernel/debug/tracing/events").is_dir() {
        mount_if_absent("/sys/kernel/tracing", "tracefs", "tracefs")?;
    }
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "install ok installed")
}

fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES.into_iter().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("xtask: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    // rsyslog's postinst would start a system-wide rsyslogd; tests start their own. Services
    // stay stopped while installing (unless the machine already has its own policy).
    let own_policy = !Path::new(POLICY_RC_D).exists();
    if own_policy {
        fs::write(POLICY_RC_D, "#!/bin/sh\n# written by cargo xtask setup while it installs packages\nexit 101\n")
            .with_context(|| format!("writing {POLICY_RC_D}"))?;
        fs::set_permissions(POLICY_RC_D, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let result = run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"));
    if own_policy {
        fs::remove_file(POLICY_RC_D).with_context(|| format!("removing {POLICY_RC_D}"))?;
    }
    result
}

fn nightly() -> anyhow::Result<()> {
    let out = Command::new("rustc")
        .args([&format!("+{NIGHTLY}"), "-vV"])
        .output()
        .context("running `rustc +nightly -vV` (is rustup installed?)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("the `{NIGHTLY}` toolchain is not installed; the eBPF programs need it (with LLVM {LLVM_MAJOR})");
    }
    let llvm = text.lines().find_map(|l| l.strip_prefix("LLVM version: ")).unwrap_or("unknown");
    if llvm.split('.').next() != Some(LLVM_MAJOR) {
        bail!(
            "the `{NIGHTLY}` toolchain uses LLVM {llvm}, but bpf-linker is built against LLVM {LLVM_MAJOR}; \
             install a nightly with LLVM {LLVM_MAJOR} as `{NIGHTLY}`"
        );
    }
    let components = Command::new("rustup").args(["component", "list", "--installed", "--toolchain", NIGHTLY]).output()?;
    if !String::from_utf8_lossy(&components.stdout).lines().any(|l| l.starts_with("rust-src")) {
        println!("xtask: installing rust-src for the {NIGHTLY} toolchain");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))?;
    }
    Ok(())
}

/// bpf-linker must exist, be the pinned version, and be linked against libLLVM 22.
fn bpf_linker() -> anyhow::Result<()> {
    let version_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == format!("bpf-linker {BPF_LINKER_VERSION}"));
    let linked_ok = version_ok
        && which("bpf-linker").is_some_and(|path| {
            Command::new("ldd")
                .arg(path)
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("libLLVM.so.{LLVM_MAJOR}")))
        });
    if linked_ok {
        return Ok(());
    }
    println!("xtask: installing bpf-linker {BPF_LINKER_VERSION} built against LLVM {LLVM_MAJOR} (takes a few minutes)");
    run(Command::new("cargo")
        .args(["install", "bpf-linker", "--force", "--locked", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", &format!("llvm-{LLVM_MAJOR}")])
        .env("LLVM_PREFIX", format!("/usr/lib/llvm-{LLVM_MAJOR}")))
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(bin)).find(|p| p.is_file())
}

fn mount_if_absent(target: &str, fs_type: &str, source: &str) -> anyhow::Result<()> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mounted = mountinfo.lines().any(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        let ty = fields.iter().skip_while(|f| **f != "-").nth(1);
        fields.get(4) == Some(&target) && ty == Some(&fs_type)
    });
    if mounted {
        return Ok(());
    }
    println!("xtask: mounting {fs_type} at {target}");
    fs::create_dir_all(target).with_context(|| format!("creating {target}"))?;
    run(Command::new("mount").args(["-t", fs_type, source, target]))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
