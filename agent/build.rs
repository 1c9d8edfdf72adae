//! Builds the kernel programs (ebpf/programs) for the BPF target with aya-build and leaves
//! the object in OUT_DIR for `include_bytes!`. When the BPF toolchain (bpf-linker and a
//! Rust toolchain with rust-src) is absent, writes an empty stub object instead and says so,
//! so that `cargo check`, clippy and the unprivileged tests never need it. The agent
//! refuses to load a stub with a message that names `cargo xtask setup`.
use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

const STUB_ENV: &str = "COPYSCOPE_EBPF_STUB";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed={STUB_ENV}");
    println!("cargo:rerun-if-env-changed=PATH");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let object = out_dir.join("copyscope");

    // cargo fuzz (agent/fuzz) builds the library with --cfg fuzzing and a sanitizer to test
    // its parsers: the kernel programs are not built under those flags, the stub stands in.
    if env::var_os("CARGO_CFG_FUZZING").is_some() || env::var_os("CARGO_CFG_SANITIZE").is_some() {
        fs::write(&object, []).with_context(|| format!("writing {}", object.display()))?;
        return Ok(());
    }

    let forced_stub = env::var(STUB_ENV).is_ok_and(|v| v == "1");
    let toolchain = if forced_stub {
        Err(format!("{STUB_ENV}=1"))
    } else {
        bpf_toolchain()
    };
    let toolchain = match toolchain {
        Ok(t) => t,
        Err(why) => {
            println!(
                "cargo:warning=copyscope: building without eBPF programs ({why}); \
                 run `cargo xtask setup` to install the BPF toolchain"
            );
            fs::write(&object, []).with_context(|| format!("writing {}", object.display()))?;
            return Ok(());
        }
    };

    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let pkg = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "copyscope-ebpf")
        .ok_or_else(|| anyhow!("copyscope-ebpf package not found in the workspace"))?;
    let root = pkg
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", pkg.manifest_path))?;
    let package = aya_build::Package {
        name: pkg.name.as_str(),
        root_dir: root.as_str(),
        ..Default::default()
    };
    match toolchain {
        Some(name) => {
            // No nightly: a stable toolchain builds core for the BPF target with RUSTC_BOOTSTRAP.
            // SAFETY: build scripts are single-threaded.
            unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
            aya_build::build_ebpf([package], Toolchain::Custom(&name))
        }
        None => aya_build::build_ebpf([package], Toolchain::Nightly),
    }
}

/// `Ok(None)`: build with nightly; `Ok(Some(name))`: build with that stable toolchain.
fn bpf_toolchain() -> Result<Option<String>, String> {
    which::which("bpf-linker").map_err(|_| "bpf-linker not found on PATH".to_string())?;
    let has_src = |tc: &str| {
        Command::new("rustc")
            .args([&format!("+{tc}"), "--print", "sysroot"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .is_some_and(|root| root.join("lib/rustlib/src/rust/library/core").is_dir())
    };
    if has_src("nightly") {
        return Ok(None);
    }
    let stable = env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".into());
    if has_src(&stable) {
        return Ok(Some(stable));
    }
    Err("no Rust toolchain with the rust-src component (nightly or stable)".into())
}
