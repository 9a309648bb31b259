//! `guard-agent daemon`.
use std::path::PathBuf;

use crate::policy::{self, PolicyError, compile::Compiled};

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// Policy file (YAML). Without one, the embedded default policy for coding agents is used.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

/// Reads and compiles the policy the daemon will enforce. Runs before anything is loaded into
/// the kernel, so a bad policy leaves the system untouched.
pub fn policy(args: &DaemonArgs) -> Result<Compiled, PolicyError> {
    let model = match &args.policy {
        Some(path) => policy::load_file(path)?,
        None => policy::default_policy(),
    };
    policy::compile::compile(&model)
}
