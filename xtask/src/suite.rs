//! `cargo xtask test` and `cargo xtask fuzz`: which binaries run, in what order, with which
//! deadlines, and the closing summary.
use std::{
    ffi::OsStr,
    path::Path,
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    deb, setup, vm,
    testrun::{self, Binary, Deadlines, Report},
};

/// The fuzz targets (`guard-agent/src/fuzz/`), as `cargo xtask fuzz` takes them.
pub const FUZZ_TARGETS: [&str; 8] = ["policy", "settings", "control", "records", "dns", "mask", "sql", "spool"];

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Seconds a test binary may run before it is killed (and counted as failed).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub binary_deadline: u64,
    /// Seconds one privileged test may run (they run one at a time, so each is timed alone).
    #[arg(long, value_name = "SECS", default_value_t = 180)]
    pub test_deadline: u64,
    /// Seconds each fuzz target runs (about a minute and a half for the eight).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub fuzz_secs: u64,
    /// Skip the VM matrix (`cargo xtask vmtest`) that follows the host suite.
    #[arg(long)]
    pub skip_vm: bool,
    #[command(flatten)]
    pub vm: vm::VmArgs,
    /// Arguments after `--` go to the test binaries (e.g. a test name filter). With a filter,
    /// the fuzz targets run only if it names them, for their short default time.
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Seconds each target runs.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub secs: u64,
    /// Replay one input by the seed a failure printed (with one TARGET).
    #[arg(long, value_name = "SEED")]
    pub seed: Option<String>,
    /// Targets to run (default: all): policy, settings, control, records, dns, mask, sql, spool.
    #[arg(value_name = "TARGET", value_parser = clap::builder::PossibleValuesParser::new(FUZZ_TARGETS))]
    pub targets: Vec<String>,
}

/// The unit-test binary of guard-agent, which holds the fuzz targets.
fn agent_unit_binary(bins: &[Binary]) -> anyhow::Result<&Binary> {
    bins.iter()
        .find(|b| b.dir.file_name() == Some(OsStr::new("guard-agent")) && b.name.contains("(src/main.rs)"))
        .context("cargo built no unit-test binary for guard-agent")
}

fn timed<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let start = Instant::now();
    let out = f();
    println!("[xtask] {what}: {:.1}s", start.elapsed().as_secs_f64());
    out
}

/// Runs the fuzz targets matching `filters` in guard-agent's unit-test binary.
fn run_fuzz(report: &mut Report, agent: &Binary, filters: &[String], secs: u64, seed: Option<&str>, binary_deadline: u64) -> anyhow::Result<()> {
    let mut args: Vec<String> = filters.to_vec();
    // Two at a time (this machine's cores); their counts and seeds shown as they finish.
    args.extend(["--nocapture".into(), "--test-threads=2".into()]);
    let secs_text = secs.to_string();
    let mut envs: Vec<(&str, &OsStr)> = vec![("GUARD_FUZZ_SECS", OsStr::new(&secs_text))];
    if let Some(seed) = seed {
        envs.push(("GUARD_FUZZ_SEED", OsStr::new(seed)));
    }
    // Each target runs for `secs`, two at a time, plus the corpus checks.
    let deadline = Duration::from_secs(binary_deadline.max(secs * FUZZ_TARGETS.len() as u64 / 2 + 120));
    let name = format!("{} [fuzz, {secs}s per target]", agent.name);
    let fuzz_bin = Binary { name: name.clone(), ..agent.clone() };
    let outcome = testrun::run(&fuzz_bin, &args, &envs, Deadlines { binary: deadline, test: None })?;
    if !outcome.ok() {
        inflight_seeds();
    }
    report.add(&name, outcome);
    Ok(())
}

/// A fuzz input that killed the whole process (a stack overflow aborts) left its seed behind.
fn inflight_seeds() {
    let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(target) = name.strip_prefix("guard-fuzz-").and_then(|n| n.strip_suffix(".inflight")) {
            let seed = std::fs::read_to_string(entry.path()).unwrap_or_default();
            println!(
                "[xtask] fuzz target {target} was running seed {} when its process died (it runs first next time; replay: GUARD_FUZZ_SEED={} cargo test -p guard-agent fuzz::{})",
                seed.trim(),
                seed.trim(),
                target.replace('-', "::")
            );
        }
    }
}

fn summary(report: &Report) {
    report.print_times();
    let (passed, failed, ignored) = report.totals();
    // One closing line for the whole run, in the format CI reads.
    println!("summary: {passed} passed, {failed} failed, {ignored} ignored");
}

pub fn test(root: &Path, a: TestArgs) -> anyhow::Result<ExitCode> {
    setup::ensure(&["test"])?;
    testrun::catch_interrupts();
    let mut report = Report::default();
    let binary = Duration::from_secs(a.binary_deadline);
    // Unit tests of every host crate (guard-ebpf only builds for BPF), each binary in parallel.
    let unit = timed("build of the unit tests", || {
        testrun::build(root, &["--workspace", "--exclude", "guard-tests", "--exclude", "guard-ebpf"])
    })?;
    // The fuzz targets get a run of their own, with a longer budget, unless a filter was given.
    let unit_args: Vec<String> = if a.args.is_empty() { vec!["--skip".into(), "fuzz::".into()] } else { a.args.clone() };
    for bin in &unit {
        let o = testrun::run(bin, &unit_args, &[], Deadlines { binary, test: None })?;
        report.add(&bin.name, o);
        if testrun::interrupted() {
            summary(&report);
            bail!("interrupted");
        }
    }
    if a.args.is_empty() {
        let filters: Vec<String> = vec!["fuzz::".into()];
        run_fuzz(&mut report, agent_unit_binary(&unit)?, &filters, a.fuzz_secs, None, a.binary_deadline)?;
    }
    // The binary the end-to-end tests run.
    timed("build of guard-agent", || crate::cargo(root, &["build", "--package", "guard-agent"]))?;
    let agent = root.join("target/debug/guard-agent");
    let e2e = timed("build of the end-to-end tests", || testrun::build(root, &["--package", "guard-tests"]))?;
    // Privileged end-to-end tests: one binary and one test at a time, because each one attaches
    // programs at the cgroup root and checks that nothing is left behind afterwards.
    let mut e2e_args = vec!["--test-threads=1".to_owned()];
    e2e_args.extend(a.args.iter().cloned());
    let envs = [("GUARD_AGENT_BIN", agent.as_os_str())];
    for bin in &e2e {
        let o = testrun::run(bin, &e2e_args, &envs, Deadlines { binary, test: Some(Duration::from_secs(a.test_deadline)) })?;
        if o.killed.is_some() {
            detach_after_kill(&agent);
        }
        report.add(&bin.name, o);
        if testrun::interrupted() {
            summary(&report);
            bail!("interrupted");
        }
    }
    // The package, built from the binary just tested, checked as dpkg sees it.
    let deb = deb::build_and_check(root, &agent);
    match &deb {
        Ok(n) => println!("deb check: ok ({n} checks)"),
        Err(e) => println!("deb check: FAILED: {e:#}"),
    }
    // The Kubernetes manifest and Helm chart (deploy/), validated and compared.
    let k8s = crate::k8s::check(root, &agent);
    match &k8s {
        Ok(line) => println!("{line}"),
        Err(e) => println!("k8s check: FAILED: {e:#}"),
    }
    // The tiers on stock distribution kernels, in VMs (a name filter runs the host only).
    let vm_lines = if a.skip_vm || !a.args.is_empty() {
        println!("[xtask] vmtest: skipped ({})", if a.skip_vm { "--skip-vm" } else { "a test filter was given" });
        Vec::new()
    } else {
        match timed("vmtest", || vm::matrix(root, &a.vm, &agent, &e2e, &mut report)) {
            Ok(lines) => lines,
            Err(e) => {
                println!("vmtest: FAILED: {e:#}");
                report.add("vmtest", testrun::Outcome { passed: 0, failed: 0, ignored: 0, elapsed: Duration::ZERO, killed: None, bad_exit: Some(format!("{e:#}")) });
                Vec::new()
            }
        }
    };
    for l in &vm_lines {
        println!("{l}");
    }
    summary(&report);
    if !report.ok() {
        bail!("tests failed");
    }
    deb.context("the .deb check failed")?;
    k8s.context("the Kubernetes packaging check failed")?;
    Ok(ExitCode::SUCCESS)
}

/// A killed test's Drop guards never ran: its daemon died by SIGKILL with programs attached and
/// pinned. `guard-agent detach` removes them, so the next test starts clean.
fn detach_after_kill(agent: &Path) {
    println!("[xtask] the killed test could not clean up after itself; running `guard-agent detach`");
    match Command::new(agent).arg("detach").output() {
        Ok(out) => {
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            println!("[xtask] guard-agent detach ({}): {}", out.status, text.trim());
        }
        Err(e) => println!("[xtask] could not run {}: {e}", agent.display()),
    }
}

/// `cargo xtask vmtest`: the VM matrix alone.
pub fn vmtest(root: &Path, a: vm::VmArgs) -> anyhow::Result<ExitCode> {
    setup::ensure(&["vmtest"])?;
    testrun::catch_interrupts();
    timed("build of guard-agent", || crate::cargo(root, &["build", "--package", "guard-agent"]))?;
    let agent = root.join("target/debug/guard-agent");
    let e2e = timed("build of the end-to-end tests", || testrun::build(root, &["--package", "guard-tests"]))?;
    let mut report = Report::default();
    let lines = vm::matrix(root, &a, &agent, &e2e, &mut report)?;
    for l in &lines {
        println!("{l}");
    }
    summary(&report);
    if !report.ok() {
        bail!("vmtest failed");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn fuzz(root: &Path, a: FuzzArgs) -> anyhow::Result<ExitCode> {
    if a.seed.is_some() && a.targets.len() != 1 {
        bail!("--seed replays one input: name its one TARGET");
    }
    setup::ensure(&["fuzz"])?;
    testrun::catch_interrupts();
    let bins = timed("build", || testrun::build(root, &["--package", "guard-agent", "--bins"]))?;
    let targets: Vec<String> = if a.targets.is_empty() { vec!["fuzz::".into()] } else { a.targets.iter().map(|t| format!("fuzz::{t}::")).collect() };
    let mut report = Report::default();
    run_fuzz(&mut report, agent_unit_binary(&bins)?, &targets, a.secs, a.seed.as_deref(), 0)?;
    summary(&report);
    if !report.ok() {
        bail!("fuzzing found a failure (its seed is printed above)");
    }
    Ok(ExitCode::SUCCESS)
}
