//! Builds the kernel programs (ebpf/programs) for the BPF target with aya-build and leaves
//! the object in OUT_DIR for `include_bytes!`. When the BPF toolchain (bpf-linker and a
//! Rust toolchain with rust-src) is absent, writes an empty stub object instead and says so,
//! so that `cargo check`, clippy and the unprivileged tests never need it. The agent
//! refuses to load a stub with a message that names `cargo xtask setup`.
//!
//! aya-build relays everything the inner cargo prints (a line per crate compiled) as cargo
//! warnings. This script runs it in a child process of its own (itself, again) and keeps
//! that output: it shows the compiler's own warnings, and all of it only when the inner
//! build fails.
use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

const STUB_ENV: &str = "COPYSCOPE_EBPF_STUB";
/// Set for the child that runs aya-build: the kernel crate's directory.
const INNER_ROOT: &str = "COPYSCOPE_EBPF_INNER_ROOT";
/// The same child's toolchain: a name, or empty for nightly.
const INNER_TOOLCHAIN: &str = "COPYSCOPE_EBPF_INNER_TOOLCHAIN";

fn main() -> anyhow::Result<()> {
    if let Some(root) = env::var_os(INNER_ROOT) {
        return build_inner(&root.to_string_lossy());
    }
    println!("cargo:rerun-if-env-changed={STUB_ENV}");
    println!("cargo:rerun-if-env-changed=PATH");
    build_info();
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
    let target_dir = metadata.target_directory.clone().into_std_path_buf();
    let pkg = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "copyscope-ebpf")
        .ok_or_else(|| anyhow!("copyscope-ebpf package not found in the workspace"))?;
    let root = pkg
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", pkg.manifest_path))?;
    // One build of the kernel programs for every profile, feature set and target of the
    // same architecture (debug, release, the static builds, clippy): a directory of their
    // own under the target directory, locked while one build uses it, copied from there.
    let toolchain = toolchain.unwrap_or_default();
    let key = format!(
        "{}-{}-{}",
        env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH not set")?,
        env::var("CARGO_CFG_TARGET_ENDIAN").context("CARGO_CFG_TARGET_ENDIAN not set")?,
        if toolchain.is_empty() {
            "nightly"
        } else {
            &toolchain
        },
    );
    let shared = target_dir.join("ebpf").join(key);
    fs::create_dir_all(&shared).with_context(|| format!("creating {}", shared.display()))?;
    let lock = fs::File::create(shared.join(".lock"))
        .with_context(|| format!("creating {}", shared.join(".lock").display()))?;
    // SAFETY: flock on a descriptor this function holds open.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("locking {}", shared.join(".lock").display()));
    }
    let out = Command::new(env::current_exe().context("this build script's path")?)
        .env(INNER_ROOT, root.as_str())
        .env(INNER_TOOLCHAIN, &toolchain)
        // aya-build builds under OUT_DIR and leaves the object there.
        .env("OUT_DIR", &shared)
        .output()
        .context("running the eBPF build")?;
    let mut relayed = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        match line.strip_prefix("cargo:warning=") {
            Some(w) => relayed.push(w.to_string()),
            // rerun-if-changed and the like: cargo's to read.
            None => println!("{line}"),
        }
    }
    if !out.status.success() {
        for w in &relayed {
            println!("cargo:warning={w}");
        }
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        return Err(anyhow!(
            "building the eBPF programs (ebpf/programs) failed: {}; its output is above",
            out.status
        ));
    }
    // Built: what the compiler said about the code stays, cargo's progress goes.
    for w in relayed.iter().filter(|w| !is_progress(w)) {
        println!("cargo:warning={w}");
    }
    let built = shared.join("copyscope");
    fs::copy(&built, &object)
        .with_context(|| format!("copying {} to {}", built.display(), object.display()))?;
    drop(lock);
    Ok(())
}

/// A line of cargo's progress (`   Compiling x v0.1.0`, `    Finished ...`): a status word
/// right-aligned in 12 columns.
fn is_progress(line: &str) -> bool {
    const STATUS: &[&str] = &[
        "Adding",
        "Blocking",
        "Checking",
        "Compiling",
        "Downloaded",
        "Downloading",
        "Finished",
        "Fresh",
        "Locking",
        "Updating",
    ];
    let word = line.trim_start().split(' ').next().unwrap_or("");
    line.starts_with(' ') && STATUS.contains(&word) || line.trim().is_empty()
}

/// The child: aya-build, whose cargo:warning lines the parent sorts.
fn build_inner(root: &str) -> anyhow::Result<()> {
    let package = aya_build::Package {
        name: "copyscope-ebpf",
        root_dir: root,
        ..Default::default()
    };
    match env::var(INNER_TOOLCHAIN).unwrap_or_default() {
        name if name.is_empty() => aya_build::build_ebpf([package], Toolchain::Nightly),
        name => {
            // No nightly: a stable toolchain builds core for the BPF target with RUSTC_BOOTSTRAP.
            // SAFETY: build scripts are single-threaded.
            unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
            aya_build::build_ebpf([package], Toolchain::Custom(&name))
        }
    }
}

/// `COPYSCOPE_REVISION` (the git commit, `unknown` outside a git tree; a value given in
/// the environment wins, for builds from a source archive) and `COPYSCOPE_RUSTC_VERSION`,
/// for `copyscope_build_info`.
fn build_info() {
    println!("cargo:rerun-if-env-changed=COPYSCOPE_REVISION");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let revision = match env::var("COPYSCOPE_REVISION") {
        Ok(r) if !r.is_empty() => r,
        _ => match git(&["rev-parse", "--short=12", "HEAD"]) {
            Some(r) => {
                // Built again when HEAD moves: HEAD itself, and the branch it names.
                let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
                watch.extend(git(&["symbolic-ref", "-q", "HEAD"]));
                for f in watch {
                    if let Some(path) = git(&["rev-parse", "--git-path", &f])
                        .map(PathBuf::from)
                        .filter(|p| p.exists())
                    {
                        println!("cargo:rerun-if-changed={}", path.display());
                    }
                }
                r
            }
            None => "unknown".into(),
        },
    };
    println!("cargo:rustc-env=COPYSCOPE_REVISION={revision}");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(1)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=COPYSCOPE_RUSTC_VERSION={version}");
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
