//! `guard-agent policy ...`.
use std::path::PathBuf;

use crate::policy;

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file: exit 0 if it is valid, else print `file:line:column: message`.
    Check {
        /// The policy file.
        file: PathBuf,
    },
}

pub fn run(cmd: PolicyCommand) -> Result<(), policy::PolicyError> {
    match cmd {
        PolicyCommand::Check { file } => {
            let model = policy::load_file(&file)?;
            let compiled = policy::compile::compile(&model)?;
            for w in &compiled.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: ok ({} agents, {} rules, sha256 {})",
                file.display(),
                compiled.agents.len(),
                compiled.rules.len(),
                compiled.hash
            );
            Ok(())
        }
    }
}
