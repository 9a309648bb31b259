//! Builds the eBPF object (`guard-ebpf`, target bpfel-unknown-none) with aya-build, using the
//! installed nightly toolchain and bpf-linker. `cargo xtask setup` installs both.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    // Read when the script runs, not baked in when it is compiled: a build directory copied
    // from another checkout (a CI cache) must not go on building, and watching, that one.
    let root = format!("{}/..", std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR is not set")?);
    // The eBPF crate is not a dependency of this one, so cargo would not rebuild on its (or its
    // ABI crate's) changes without these.
    println!("cargo:rerun-if-changed={root}/guard-common/src");
    let package = aya_build::Package {
        name: "guard-ebpf",
        root_dir: &format!("{root}/guard-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
        .context("building the eBPF programs (run `cargo xtask setup` if a tool is missing)")
}
