//! `cargo xtask test`: every test tier, in order, stopping at the first that fails.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::util::{is_root, root, run, show};

pub fn test(lint: bool, matrix: bool) -> Result<()> {
    let cargo = |args: &[&str]| {
        let mut c = Command::new("cargo");
        c.args(args).current_dir(root());
        c
    };
    if lint {
        run(&mut cargo(&["fmt", "--all", "--check"]))?;
        run(&mut cargo(&[
            "clippy",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    crate::dashboards::check()?;
    // The Helm chart and the manifests made from it, validated offline.
    crate::deploy::check()?;
    // Unit, CLI and kernel tests. As root the kernel tests must really run: a skip for a
    // reason other than a missing kernel feature (no eBPF object, no privileges) fails.
    let mut t = cargo(&["test", "--", "--test-threads=2"]);
    if is_root() {
        t.env("COPYSCOPE_REQUIRE_KERNEL_TESTS", "1");
    }
    let (mut passed, mut failed) = run_counting(&mut t)?;
    // The parsers' fuzz targets (agent/fuzz), a few seconds each.
    if failed == 0 {
        crate::fuzz::tier()?;
    }
    // The container image: built, sized and its binary run (buildah needs root).
    if failed == 0 {
        if is_root() {
            crate::image::image()?;
        } else {
            eprintln!("xtask: skipping the image check: buildah's vfs storage needs root");
        }
    }
    let mut matrix_error = None;
    if matrix && failed == 0 {
        if is_root() {
            let results = crate::vm::vm(crate::vm::VmArgs {
                kernels: ["5.10", "6.1", "6.12", "7.2"].map(String::from).to_vec(),
                parallel: 2,
                timeout: 1500,
                only: vec![],
            })?;
            for r in &results {
                passed += r.passed;
                failed += r.failed;
            }
            matrix_error = crate::vm::check(&results).err();
        } else {
            eprintln!(
                "xtask: skipping the QEMU kernel matrix: it needs root (qemu, kernel packages, BPF in the guests)"
            );
        }
    }
    // One closing line for the whole run, whatever the last test binary was.
    println!("tests: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} tests failed");
    }
    if let Some(e) = matrix_error {
        return Err(e);
    }
    Ok(())
}

/// Run `cargo test`, echoing its output, and add up its `test result:` lines.
fn run_counting(cmd: &mut Command) -> Result<(u64, u64)> {
    eprintln!("xtask: {}", show(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", show(cmd)))?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        if let Some((p, f)) = parse_result(&line) {
            passed += p;
            failed += f;
        }
    }
    let status = child.wait()?;
    if !status.success() && failed == 0 {
        bail!("{} failed ({status})", show(cmd));
    }
    Ok((passed, failed))
}

/// `test result: ok. 18 passed; 0 failed; ...` -> (18, 0).
pub(crate) fn parse_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let mut passed = None;
    let mut failed = None;
    for part in rest.split(';') {
        let mut words = part.split_whitespace().rev();
        let (what, n) = (words.next()?, words.next()?);
        match what {
            "passed" => passed = n.parse().ok(),
            "failed" => failed = n.parse().ok(),
            _ => {}
        }
    }
    Some((passed?, failed?))
}

#[cfg(test)]
mod tests {
    use super::parse_result;

    #[test]
    fn reads_cargo_test_summaries() {
        assert_eq!(
            parse_result(
                "test result: ok. 18 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.08s"
            ),
            Some((18, 0))
        );
        assert_eq!(
            parse_result("test result: FAILED. 10 passed; 1 failed; 0 ignored"),
            Some((10, 1))
        );
        assert_eq!(parse_result("running 3 tests"), None);
    }
}
