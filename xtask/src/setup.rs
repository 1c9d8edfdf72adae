//! `cargo xtask setup`: make a fresh machine ready, idempotently, and quickly when it is.
//!
//! - a Rust toolchain with rust-src for the BPF target (nightly if installed, else stable
//!   with RUSTC_BOOTSTRAP, as agent/build.rs expects);
//! - bpf-linker 0.13 built against that toolchain's own libLLVM (no system LLVM needed);
//! - the Debian packages the tests and benchmarks use.

use std::{
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{is_root, output, run, succeeds};

/// The bpf-linker release line copyscope builds with.
const BPF_LINKER_VERSION: &str = "0.13";

/// The cargo-fuzz release `cargo xtask fuzz` runs (it builds with the nightly toolchain).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Debian packages the test tiers and benchmarks use, with the command (or file) that shows
/// each is there.
const PACKAGES: &[(&str, &str)] = &[
    ("bpftrace", "bpftrace"),
    ("util-linux", "setpriv"),
    ("procps", "ps"),
    // `copyscope run` end to end: a real Prometheus scrapes it; promtool lints the metrics.
    ("prometheus", "promtool"),
    // The real application the advisor is checked on.
    ("nginx", "nginx"),
    // The io_uring and Linux AIO counts are checked against fio's own report.
    ("fio", "fio"),
    // The MSG_ZEROCOPY counts are checked against strace's decoding of the same calls.
    ("strace", "strace"),
    ("curl", "curl"),
    // `copyscope top` end to end: the real binary in a real terminal.
    ("tmux", "tmux"),
    // The dashboards' type check against Grafana's schema (tsc from npm).
    ("nodejs", "node"),
    ("npm", "npm"),
    // The container image: a static binary (ring's C parts need musl-gcc), built by buildah.
    ("musl-tools", "musl-gcc"),
    ("binutils", "strip"),
    ("buildah", "buildah"),
    // The fake Kubernetes API server's certificate in the pod-label tests.
    ("openssl", "openssl"),
    // The restart tests damage a pin on purpose (a map of another layout).
    ("bpftool", "bpftool"),
    // The font `copyscope bench --plot` draws its text with.
    (
        "fonts-dejavu-core",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    ),
];

pub struct Toolchain {
    /// `nightly`, or the stable toolchain's name when no nightly is installed.
    pub name: String,
    pub sysroot: PathBuf,
}

pub fn setup() -> Result<Toolchain> {
    let tc = bpf_toolchain()?;
    ensure_rust_src(&tc)?;
    ensure_bpf_linker(&tc)?;
    ensure_packages()?;
    Ok(tc)
}

fn rustc_sysroot(toolchain: &str) -> Option<PathBuf> {
    output(Command::new("rustc").args([&format!("+{toolchain}"), "--print", "sysroot"]))
        .ok()
        .map(PathBuf::from)
}

/// Nightly when installed; otherwise the default (stable) toolchain.
fn bpf_toolchain() -> Result<Toolchain> {
    if let Some(sysroot) = rustc_sysroot("nightly") {
        return Ok(Toolchain {
            name: "nightly".into(),
            sysroot,
        });
    }
    let name = output(Command::new("rustup").args(["show", "active-toolchain"]))
        .context("rustup is needed to manage the BPF toolchain")?
        .split_whitespace()
        .next()
        .unwrap_or("stable")
        .to_string();
    let sysroot = rustc_sysroot(&name).with_context(|| format!("toolchain {name} does not run"))?;
    eprintln!(
        "xtask: no nightly toolchain; building the kernel programs with {name} and RUSTC_BOOTSTRAP=1"
    );
    Ok(Toolchain { name, sysroot })
}

fn ensure_rust_src(tc: &Toolchain) -> Result<()> {
    if tc
        .sysroot
        .join("lib/rustlib/src/rust/library/core")
        .is_dir()
    {
        return Ok(());
    }
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", &tc.name]))
}

/// The toolchain's own libLLVM: (file name, LLVM major version), e.g.
/// ("libLLVM.so.22.1-rust-1.97.0-nightly", 22).
pub fn toolchain_llvm(sysroot: &Path) -> Result<(String, u32)> {
    let lib = sysroot.join("lib");
    let mut names: Vec<String> = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with("libLLVM.so.") || (n.starts_with("libLLVM-") && n.ends_with(".so"))
        })
        .collect();
    names.sort();
    let name = names
        .iter()
        .find(|n| n.starts_with("libLLVM.so."))
        .or_else(|| names.first())
        .with_context(|| {
            format!(
                "no libLLVM in {}: install the toolchain's llvm-tools or rustc-dev",
                lib.display()
            )
        })?
        .clone();
    Ok((
        name.clone(),
        llvm_major(&name).with_context(|| format!("cannot read the LLVM version from {name}"))?,
    ))
}

/// LLVM major version from a libLLVM file name: `libLLVM.so.22.1-rust-…` or `libLLVM-22-rust-….so`.
pub fn llvm_major(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix("libLLVM.so.")
        .or_else(|| name.strip_prefix("libLLVM-"))?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn bpf_linker_ok() -> bool {
    output(Command::new("bpf-linker").arg("--version")).is_ok_and(|v| {
        v.split_whitespace()
            .nth(1)
            .is_some_and(|ver| ver.starts_with(&format!("{BPF_LINKER_VERSION}.")))
    })
}

fn ensure_bpf_linker(tc: &Toolchain) -> Result<()> {
    if bpf_linker_ok() {
        return Ok(());
    }
    let (lib, major) = toolchain_llvm(&tc.sysroot)?;
    // A prefix whose lib/ holds the toolchain's libLLVM under the names bpf-linker's
    // build looks for. bpf-linker keeps it as its run path, so it lives beside cargo's
    // own installs rather than in target/ (which `cargo clean` removes).
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let prefix = cargo_home.join("copyscope-llvm").join(&lib);
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    let target = tc.sysroot.join("lib").join(&lib);
    for link in ["libLLVM.so".to_string(), lib.clone()] {
        let p = prefix_lib.join(&link);
        let _ = std::fs::remove_file(&p);
        symlink(&target, &p).with_context(|| format!("linking {}", p.display()))?;
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {} (LLVM {major})",
        target.display()
    );
    run(Command::new("cargo")
        .args([
            "install",
            "--locked",
            "bpf-linker",
            "--version",
            &format!("^{BPF_LINKER_VERSION}"),
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix))?;
    if !bpf_linker_ok() {
        bail!("bpf-linker was installed but does not run: is ~/.cargo/bin on PATH?");
    }
    Ok(())
}

fn cargo_fuzz_ok() -> bool {
    // `cargo-fuzz 0.13.2`
    output(Command::new("cargo").args(["fuzz", "--version"]))
        .is_ok_and(|v| v.split_whitespace().nth(1) == Some(CARGO_FUZZ_VERSION))
}

pub fn ensure_cargo_fuzz() -> Result<()> {
    if cargo_fuzz_ok() {
        return Ok(());
    }
    run(Command::new("cargo").args([
        "install",
        "--locked",
        "cargo-fuzz",
        "--version",
        &format!("={CARGO_FUZZ_VERSION}"),
    ]))?;
    if !cargo_fuzz_ok() {
        bail!("cargo-fuzz was installed but `cargo fuzz` does not run: is ~/.cargo/bin on PATH?");
    }
    Ok(())
}

fn ensure_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, probe)| {
            // A path is a file the package installs; anything else a command.
            if probe.starts_with('/') {
                !Path::new(probe).exists()
            } else {
                !succeeds(Command::new("sh").args(["-c", &format!("command -v {probe}")]))
            }
        })
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() || !Path::new("/usr/bin/apt-get").exists() {
        eprintln!(
            "xtask: missing packages {missing:?}: install them (Debian: apt-get install {}); the tests that need them will say so",
            missing.join(" ")
        );
        return Ok(());
    }
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_toolchain_library_names() {
        assert_eq!(llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly"), Some(22));
        assert_eq!(llvm_major("libLLVM-22-rust-1.97.0-nightly.so"), Some(22));
        assert_eq!(llvm_major("libLLVM.so.19.1-rust-1.84.0-stable"), Some(19));
        assert_eq!(llvm_major("libfoo.so"), None);
    }
}
