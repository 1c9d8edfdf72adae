//! `cargo xtask test`: every test tier, in order, stopping at the first that fails.

use std::process::Command;

use anyhow::Result;

use crate::util::{is_root, root, run};

pub fn test(lint: bool) -> Result<()> {
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
    // Unit, CLI and kernel tests. As root the kernel tests must really run: a skip for a
    // reason other than a missing kernel feature (no eBPF object, no privileges) fails.
    let mut t = cargo(&["test", "--", "--test-threads=2"]);
    if is_root() {
        t.env("COPYSCOPE_REQUIRE_KERNEL_TESTS", "1");
    }
    run(&mut t)?;
    Ok(())
}
