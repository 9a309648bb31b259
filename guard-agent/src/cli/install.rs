//! `guard-agent install | uninstall`.
use std::path::PathBuf;

use crate::install::{self, Layout, Report};

/// Where to install: shared by install and uninstall, which must be given the same.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// Install under this directory instead of / (a package staging tree, an image, a test).
    /// Only / needs root; systemd is told only about /.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// The binary goes to PREFIX/bin. With /usr (the packaged layout) the units go to
    /// /usr/lib/systemd/system, otherwise to /etc/systemd/system.
    #[arg(long, value_name = "DIR", default_value = "/usr/local")]
    pub prefix: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    #[command(flatten)]
    pub target: Target,
    /// Also delete configuration files the admin changed, daemon state, and the verdict log
    /// (evidence: copy it first if it may be needed).
    #[arg(long)]
    pub purge: bool,
}

pub fn install(args: &InstallArgs) -> anyhow::Result<()> {
    let layout = Layout::new(&args.target.root, &args.target.prefix)?;
    install::install(&layout, &mut Report::printing())?;
    print!("{}", install::next_steps(&layout));
    Ok(())
}

pub fn uninstall(args: &UninstallArgs) -> anyhow::Result<()> {
    let layout = Layout::new(&args.target.root, &args.target.prefix)?;
    install::uninstall(&layout, args.purge, &mut Report::printing())
}
