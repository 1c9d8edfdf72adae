//! `cargo xtask fuzz`: the fuzz targets of the parsers that read text from the system or
//! the network (agent/fuzz), each for a while, with cargo-fuzz on the nightly toolchain.
//!
//! The targets are built once, then each runs from its committed seed corpus
//! (agent/fuzz/corpus/TARGET), which stays as committed: libFuzzer writes the inputs it
//! finds to the first corpus directory it is given, target/fuzz/corpus/TARGET here. A
//! crash, timeout or out-of-memory input lands in agent/fuzz/artifacts/TARGET.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{root, run, show, succeeds};

/// Seconds per target in `cargo xtask test`.
const TEST_SECONDS: u64 = 10;

/// Seconds one input may take before libFuzzer reports it as a hang.
const INPUT_TIMEOUT_SECONDS: u64 = 10;

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds to fuzz each target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Build the targets without optimizations: a build a few times faster, runs a few
    /// times slower (the test tier's few seconds a target).
    #[arg(long)]
    pub dev: bool,
    /// Targets to run (agent/fuzz/fuzz_targets/TARGET.rs); all when none is named.
    pub targets: Vec<String>,
}

/// The test tier: every target for a few seconds. Without nightly it does not run, and
/// the reason is returned.
pub fn tier() -> Result<Option<String>> {
    if !nightly() {
        let why = "cargo-fuzz needs the nightly toolchain (rustup toolchain install nightly)";
        eprintln!("xtask: skipping the fuzz targets: {why}");
        return Ok(Some(why.into()));
    }
    fuzz(&FuzzArgs {
        seconds: TEST_SECONDS,
        dev: true,
        targets: vec![],
    })?;
    Ok(None)
}

/// How many fuzz targets there are.
pub fn target_count() -> Result<u64> {
    Ok(targets(&root().join("agent/fuzz"))?.len() as u64)
}

pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    if !nightly() {
        bail!("cargo-fuzz needs the nightly toolchain: rustup toolchain install nightly");
    }
    crate::setup::ensure_cargo_fuzz()?;
    let fuzz_dir = root().join("agent/fuzz");
    let target_dir = root().join("target/fuzz");
    let known = targets(&fuzz_dir)?;
    let chosen: Vec<String> = if args.targets.is_empty() {
        known.iter().cloned().collect()
    } else {
        for t in &args.targets {
            if !known.contains(t) {
                bail!(
                    "no fuzz target {t:?}: the targets are {}",
                    known.iter().cloned().collect::<Vec<_>>().join(", ")
                );
            }
        }
        args.targets.clone()
    };
    let cargo_fuzz = |subcommand: &str| {
        let mut c = Command::new("cargo");
        c.args(["+nightly", "fuzz", subcommand]);
        if args.dev {
            c.arg("--dev");
        }
        c.arg("--fuzz-dir")
            .arg(&fuzz_dir)
            .arg("--target-dir")
            .arg(&target_dir)
            .current_dir(root());
        c
    };
    // One build for all the targets (the agent library under the sanitizer is most of
    // it); the runs below find it up to date.
    run(&mut cargo_fuzz("build"))?;
    let mut failures = Vec::new();
    for t in &chosen {
        let scratch = target_dir.join("corpus").join(t);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let artifacts = fuzz_dir.join("artifacts").join(t);
        let before = files(&artifacts);
        let mut cmd = cargo_fuzz("run");
        cmd.arg(t)
            .arg(&scratch)
            .arg(fuzz_dir.join("corpus").join(t))
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"));
        eprintln!("xtask: {}", show(&cmd));
        let status = cmd
            .status()
            .with_context(|| format!("cannot start {}", show(&cmd)))?;
        if status.success() {
            continue;
        }
        let found: Vec<PathBuf> = files(&artifacts).difference(&before).cloned().collect();
        if found.is_empty() {
            failures.push(format!("{t}: {} failed ({status})", show(&cmd)));
        }
        for a in found {
            let a = a.strip_prefix(root()).unwrap_or(&a).display().to_string();
            failures.push(format!(
                "{t}: {a} (reproduce: cargo +nightly fuzz run --fuzz-dir agent/fuzz {t} {a})"
            ));
        }
    }
    if !failures.is_empty() {
        bail!("fuzzing found crashes:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

fn nightly() -> bool {
    succeeds(Command::new("rustc").args(["+nightly", "--version"]))
}

/// The targets: agent/fuzz/fuzz_targets/NAME.rs.
fn targets(fuzz_dir: &Path) -> Result<BTreeSet<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    Ok(std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".rs").map(str::to_string)
        })
        .collect())
}

/// The files in a directory (none if it does not exist).
fn files(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}
