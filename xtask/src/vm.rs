//! `cargo xtask vmtest`: the privileged tests that prove the enforcement tiers, run inside QEMU
//! on Debian's stock kernels (bookworm 6.1 and trixie 6.12, straight from the Debian registry),
//! booted with and without `bpf` in `lsm=`. The host's root filesystem is the guest's, read-only
//! over 9p under a tmpfs overlay, so the guest runs the very binaries just built and the tools
//! the tests use; results come back through a second, writable 9p share.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::testrun::{Binary, Outcome, Report, tally_line};

/// Where kernels are downloaded and unpacked, once per machine (outside the clone, like the
/// toolchain): `cargo xtask test` from a fresh clone reuses them.
const CACHE: &str = "/var/cache/guard-vmtest";

/// A Debian kernel, by suite (its `linux-image-amd64`).
pub struct Kernel {
    pub suite: &'static str,
}

pub const KERNELS: [Kernel; 2] = [Kernel { suite: "bookworm" }, Kernel { suite: "trixie" }];

/// The LSM lists booted: with BPF LSM (the `lsm` tier must be chosen) and without (the daemon
/// must fall back to `tracepoint`, visibly).
const LSM_BPF: &str = "lockdown,capability,landlock,bpf";
const LSM_NO_BPF: &str = "lockdown,capability,landlock";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM when it can boot a stock kernel here, else TCG (said loudly).
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, clap::Args)]
pub struct VmArgs {
    /// Kernels to boot (default: both).
    #[arg(long = "kernel", value_name = "SUITE", value_parser = ["bookworm", "trixie"])]
    pub kernels: Vec<String>,
    /// How QEMU runs the guest.
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,
    /// Seconds one boot may take, tests included, before QEMU is killed (counted as failed).
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    pub boot_deadline: u64,
}

/// The accelerator, and why, said before anything boots.
fn choose_accel(want: Accel) -> anyhow::Result<(&'static str, u64)> {
    let kvm = Path::new("/dev/kvm").exists();
    // PVM ("pagetable-based virtual machine") is a KVM without hardware virtualisation: its
    // guests must be built for it, and Debian's stock kernels are not (they hang right after
    // the decompressor).
    let pvm = Path::new("/sys/module/kvm_pvm").exists();
    match want {
        Accel::Tcg => Ok(("tcg", 10)),
        Accel::Kvm if !kvm => bail!("--accel kvm: /dev/kvm does not exist on this machine"),
        Accel::Kvm if pvm => bail!("--accel kvm: this machine's KVM is PVM (kvm_pvm), which cannot boot Debian's stock kernels"),
        Accel::Kvm => Ok(("kvm", 2)),
        Accel::Auto if kvm && !pvm => Ok(("kvm", 2)),
        Accel::Auto => {
            let why = if kvm { "this machine's /dev/kvm is PVM (kvm_pvm), whose guests must be built for it: Debian's stock kernels hang at boot under it" } else { "/dev/kvm does not exist" };
            println!("\n[xtask] ************************************************************");
            println!("[xtask] vmtest: NO KVM for stock kernels: {why}.");
            println!("[xtask] vmtest: running the guests under QEMU's TCG emulation instead: slower (deadlines x10), the same kernels and tests.");
            println!("[xtask] ************************************************************\n");
            Ok(("tcg", 10))
        }
    }
}

/// An unpacked kernel package: the image and its modules directory.
struct Unpacked {
    version: String,
    vmlinuz: PathBuf,
    modules: PathBuf,
}

/// apt options that use a private sources list and private lists and caches under `dir`, so
/// the system's own apt state is never touched.
fn apt_opts(dir: &Path) -> Vec<String> {
    let d = dir.display();
    vec![
        format!("-o=Dir::Etc::sourcelist={d}/sources.list"),
        format!("-o=Dir::Etc::sourceparts={d}/sources.list.d"),
        format!("-o=Dir::State::Lists={d}/lists"),
        format!("-o=Dir::Cache={d}/cache"),
        "-o=Debug::NoLocking=1".to_owned(),
    ]
}

/// Downloads and unpacks the suite's `linux-image-amd64` kernel once; later runs reuse it.
fn kernel(suite: &str) -> anyhow::Result<Unpacked> {
    let dir = Path::new(CACHE).join(suite);
    let tree = dir.join("tree");
    if !dir.join("ready").exists() {
        println!("[xtask] vmtest: fetching Debian {suite}'s stock kernel (linux-image-amd64) from the Debian registry");
        let _ = fs::remove_dir_all(&dir);
        for sub in ["lists/partial", "cache/archives/partial", "sources.list.d", "debs"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        fs::write(
            dir.join("sources.list"),
            format!(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian {suite} main\n\
                 deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security {suite}-security main\n"
            ),
        )?;
        let opts = apt_opts(&dir);
        run(Command::new("apt-get").args(&opts).args(["-q", "update"]))?;
        let out = Command::new("apt-cache").args(&opts).args(["depends", "linux-image-amd64"]).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let pkg = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-"))
            .with_context(|| format!("{suite}: linux-image-amd64 names no kernel package: {text}"))?
            .to_owned();
        run(Command::new("apt-get").current_dir(dir.join("debs")).args(&opts).args(["-q", "download", &pkg]))?;
        let deb = fs::read_dir(dir.join("debs"))?.flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "deb")).context("apt-get download left no .deb")?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
        fs::write(dir.join("ready"), format!("{pkg}\n"))?;
        let _ = fs::remove_dir_all(dir.join("debs"));
    }
    let vmlinuz = fs::read_dir(tree.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .context("no vmlinuz in the kernel package")?;
    let version = vmlinuz.file_name().unwrap().to_string_lossy().trim_start_matches("vmlinuz-").to_owned();
    let modules = ["lib/modules", "usr/lib/modules"].iter().map(|m| tree.join(m).join(&version)).find(|p| p.is_dir()).context("no modules directory")?;
    Ok(Unpacked { version, vmlinuz, modules })
}

/// A module's file and the modules it depends on (from its `.modinfo`), decompressed.
fn module(modules: &Path, name: &str) -> anyhow::Result<(Vec<u8>, Vec<String>)> {
    let file = walk(modules)
        .into_iter()
        .find(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n == format!("{name}.ko") || n == format!("{name}.ko.xz") || n == format!("{name}.ko.zst")
        })
        .with_context(|| format!("module {name} is not in {}", modules.display()))?;
    let bytes = match file.extension().and_then(|e| e.to_str()) {
        Some("xz") => Command::new("xz").arg("-dc").arg(&file).output()?.stdout,
        Some("zst") => Command::new("zstd").arg("-dc").arg(&file).output()?.stdout,
        _ => fs::read(&file)?,
    };
    let deps = bytes
        .split(|b| *b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|d| String::from_utf8_lossy(d).split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    Ok((bytes, deps))
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) { stack.push(p) } else { out.push(p) }
        }
    }
    out
}

/// The guest's first process: loads the modules for 9p and overlayfs (built into neither Debian
/// kernel), mounts the host's root read-only under a tmpfs overlay, moves /proc, /sys and /dev
/// into it and runs the guest script (`guard_script=` on the command line) there.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m.ko 2>/dev/null || echo "guard-vm: insmod $m failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /host || echo "guard-vm: cannot mount the host's root"
mount -t tmpfs tmpfs /rw; mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot || echo "guard-vm: overlay failed"
for d in proc sys dev; do mount --move /$d /newroot/$d; done
chroot /newroot /bin/sh "$guard_script"
echo "guard-vm: guest script ended"
poweroff -f
"#;

/// Builds the initramfs for `k` (busybox, the module closure, INIT) at `out`.
fn initramfs(k: &Unpacked, out: &Path) -> anyhow::Result<()> {
    let busybox = ["/usr/bin/busybox", "/bin/busybox"].into_iter().find(|p| Path::new(p).exists()).context("busybox-static is not installed")?;
    let tmp = out.with_extension("d");
    let _ = fs::remove_dir_all(&tmp);
    for d in ["bin", "lib/modules", "proc", "sys", "dev", "host", "rw", "newroot"] {
        fs::create_dir_all(tmp.join(d))?;
    }
    fs::copy(busybox, tmp.join("bin/busybox"))?;
    let mut order: Vec<String> = Vec::new();
    fn add(k: &Unpacked, tmp: &Path, name: &str, order: &mut Vec<String>) -> anyhow::Result<()> {
        if order.iter().any(|m| m == name) {
            return Ok(());
        }
        let (bytes, deps) = module(&k.modules, name)?;
        for d in &deps {
            add(k, tmp, d, order)?;
        }
        fs::write(tmp.join("lib/modules").join(format!("{name}.ko")), bytes)?;
        order.push(name.to_owned());
        Ok(())
    }
    // virtio-pci is a module on 6.1 and built in on 6.12; 9p and overlayfs are modules on both.
    for m in ["virtio_pci", "9pnet_virtio", "9p", "overlay"] {
        match add(k, &tmp, m, &mut order) {
            Err(_) if m == "virtio_pci" => {}
            r => r?,
        }
    }
    fs::write(tmp.join("modules.order"), order.join("\n") + "\n")?;
    fs::write(tmp.join("init"), INIT)?;
    fs::set_permissions(tmp.join("init"), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let status = Command::new("sh")
        .current_dir(&tmp)
        .arg("-c")
        .arg(format!("find . | cpio -o -H newc --quiet | gzip -1 > '{}'", out.display()))
        .status()?;
    if !status.success() {
        bail!("building the initramfs failed");
    }
    let _ = fs::remove_dir_all(&tmp);
    Ok(())
}

/// One test binary the guest runs, with its libtest arguments.
struct GuestRun<'a> {
    bin: &'a Binary,
    pub args: Vec<String>,
}

/// The guest script: the mounts the tests need, then each binary in turn, its output and status
/// to the results share.
fn guest_script(agent: &Path, runs: &[GuestRun], expect_tier: &str, scale: u64) -> String {
    let mut s = String::from(
        "mount -t securityfs none /sys/kernel/security\nmount -t cgroup2 none /sys/fs/cgroup\nmount -t bpf none /sys/fs/bpf\n\
         mount -t tracefs none /sys/kernel/tracing\nmount -t tmpfs none /run\nmkdir -p /vmout\n\
         mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results /vmout || echo 'guard-vm: no results share'\n\
         ip link set lo up\nuname -r > /vmout/kernel\ncat /sys/kernel/security/lsm > /vmout/lsm\n",
    );
    s += &format!("'{}' probe > /vmout/probe.txt 2>&1\n", agent.display());
    for (i, r) in runs.iter().enumerate() {
        let args: Vec<String> = r.args.iter().map(|a| format!("'{a}'")).collect();
        s += &format!(
            "cd '{}' && env GUARD_AGENT_BIN='{}' GUARD_EXPECT_TIER={expect_tier} GUARD_TEST_TIME_SCALE={scale} GUARD_VM_EVIDENCE=/vmout/verdict.json '{}' --test-threads=1 {} > /vmout/{i}.out 2>&1; echo $? > /vmout/{i}.rc\n",
            r.bin.dir.display(),
            agent.display(),
            r.bin.path.display(),
            args.join(" ")
        );
    }
    s += "echo done > /vmout/done\n";
    s
}

/// Boots `k` with `lsm`, runs `runs` in it and adds each binary's outcome to `report`, named
/// after the kernel and the boot. Returns the boot's summary line.
#[allow(clippy::too_many_arguments)]
fn boot(root: &Path, k: &Unpacked, suite: &str, lsm_bpf: bool, accel: (&str, u64), agent: &Path, runs: &[GuestRun], deadline: Duration, report: &mut Report) -> anyhow::Result<String> {
    let label = format!("{suite} {} lsm={}", k.version, if lsm_bpf { LSM_BPF } else { LSM_NO_BPF });
    let expect = if lsm_bpf { "lsm" } else { "tracepoint" };
    let dir = root.join("target/vmtest").join(format!("{suite}-{}", if lsm_bpf { "bpf" } else { "nobpf" }));
    let _ = fs::remove_dir_all(&dir);
    let results = dir.join("results");
    fs::create_dir_all(&results)?;
    let initrd = dir.join("initramfs.gz");
    initramfs(k, &initrd)?;
    let script = dir.join("guest.sh");
    fs::write(&script, guest_script(agent, runs, expect, accel.1))?;
    let console = dir.join("console.log");
    println!("\n[xtask] vmtest: booting {label} ({}; expecting the {expect} tier)", accel.0);
    let lsm = if lsm_bpf { LSM_BPF } else { LSM_NO_BPF };
    let mut cmd = Command::new("qemu-system-x86_64");
    if accel.0 == "kvm" {
        cmd.args(["-enable-kvm", "-cpu", "host"]);
    } else {
        cmd.args(["-accel", "tcg,thread=multi", "-cpu", "max"]);
    }
    cmd.args(["-smp", "2", "-m", "4G", "-display", "none", "-no-reboot", "-nic", "none", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(&k.vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(format!("console=ttyS0 quiet panic=-1 lsm={lsm} guard_script={}", script.display()))
        .arg("-virtfs")
        .arg("local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap")
        .arg("-virtfs")
        .arg(format!("local,path={},mount_tag=results,security_model=passthrough", results.display()))
        .stdin(Stdio::null());
    let start = Instant::now();
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let killed = loop {
        if child.try_wait()?.is_some() {
            break None;
        }
        if start.elapsed() > deadline || crate::testrun::interrupted() {
            let _ = child.kill();
            let _ = child.wait();
            break Some(format!("the guest ran past its {} s deadline (or was interrupted)", deadline.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let elapsed = start.elapsed();
    let read = |name: &str| fs::read_to_string(results.join(name)).unwrap_or_default();
    let (mut passed, mut failed, mut ignored) = (0, 0, 0);
    for (i, r) in runs.iter().enumerate() {
        let out = read(&format!("{i}.out"));
        let rc = read(&format!("{i}.rc")).trim().to_owned();
        let name = format!("vm {suite} lsm={}: {}", if lsm_bpf { "bpf" } else { "no-bpf" }, r.bin.name);
        println!("\n[xtask] vmtest {label}: {}\n{}", r.bin.name, out.lines().filter(|l| !l.starts_with(|c: char| c.is_ascii_digit()) && !l.starts_with("; ")).collect::<Vec<_>>().join("\n"));
        let tally = out.lines().filter_map(|l| l.strip_prefix("test result: ")).map(tally_line).next_back();
        let bad_exit = match (&tally, rc.as_str()) {
            (None, _) => Some(format!("no `test result:` line from the guest (status {rc:?})")),
            (Some(_), "0") => None,
            (Some(_), rc) => Some(format!("exit status {rc} in the guest")),
        };
        let (p, f, ig) = tally.unwrap_or((0, 0, 0));
        (passed, failed, ignored) = (passed + p, failed + f, ignored + ig);
        report.add(&name, Outcome { passed: p, failed: f, ignored: ig, elapsed, killed: killed.clone(), bad_exit });
    }
    if read("done").is_empty() {
        let log = fs::read_to_string(&console).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        println!("[xtask] vmtest {label}: the guest did not finish its script; console tail:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        if runs.is_empty() || killed.is_none() {
            report.add(&format!("vm {suite} boot"), Outcome { passed: 0, failed: 0, ignored: 0, elapsed, killed: None, bad_exit: Some("the guest did not finish".into()) });
        }
    }
    let verdict = read("verdict.json");
    if !verdict.trim().is_empty() {
        println!("[xtask] vmtest {label}: the lsm tier's verdicts (the denied exec, the denied open):\n{}", verdict.trim());
    }
    let probe = read("probe.txt");
    let tier = probe.lines().find_map(|l| l.strip_prefix("tier:")).map(|t| t.trim().split(' ').next().unwrap_or("").to_owned()).unwrap_or_else(|| "?".into());
    Ok(format!(
        "vmtest {label} (guest kernel {}, active LSMs {}; probe: {tier} tier; {:.0}s): summary: {passed} passed, {failed} failed, {ignored} ignored",
        read("kernel").trim(),
        read("lsm").trim(),
        elapsed.as_secs_f64()
    ))
}

/// The test binaries and filters each boot runs: every lsm-tier hook (tests/lsm.rs) on both
/// boots, and on the fallback boot the first slice's exec kill and connect refusal too.
fn selection(e2e: &[Binary], lsm_bpf: bool) -> anyhow::Result<Vec<GuestRun<'_>>> {
    let find = |src: &str| e2e.iter().find(|b| b.name.contains(&format!("(tests/{src})"))).with_context(|| format!("no test binary for tests/{src}"));
    let mut runs = vec![GuestRun { bin: find("lsm.rs")?, args: Vec::new() }];
    if !lsm_bpf {
        runs.push(GuestRun {
            bin: find("foundation.rs")?,
            args: vec!["denied_binary_is_killed_before_its_first_instruction".into(), "denied_connect_is_refused_with_eperm_v4_and_v6".into()],
        });
    }
    Ok(runs)
}

/// The whole matrix: each kernel, with and without BPF LSM. Summary lines are returned for the
/// closing report.
pub fn matrix(root: &Path, args: &VmArgs, agent: &Path, e2e: &[Binary], report: &mut Report) -> anyhow::Result<Vec<String>> {
    let accel = choose_accel(args.accel)?;
    let mut lines = Vec::new();
    for k in KERNELS.iter().filter(|k| args.kernels.is_empty() || args.kernels.iter().any(|s| s == k.suite)) {
        let unpacked = kernel(k.suite)?;
        for lsm_bpf in [true, false] {
            let runs = selection(e2e, lsm_bpf)?;
            let line = boot(root, &unpacked, k.suite, lsm_bpf, accel, agent, &runs, Duration::from_secs(args.boot_deadline), report)?;
            println!("{line}");
            lines.push(line);
            if crate::testrun::interrupted() {
                return Ok(lines);
            }
        }
    }
    Ok(lines)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
