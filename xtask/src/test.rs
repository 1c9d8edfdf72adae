//! `cargo xtask test`: every test tier, in order, stopping at the first that fails, and
//! one table at the end that says, per tier, what ran, what was skipped and why, what
//! failed, and how long it took.
//!
//! The tiers: lints; the dashboards and the chart (offline checks); the pure tests (unit,
//! CLI, golden files, TUI snapshots: a plain `cargo test`); the kernel tests (marked
//! `#[ignore = "kernel tier: ..."]`, run with `--ignored` as root in strict mode, where a
//! test may skip only for a kernel feature it names as missing); the guard (a required
//! program broken on purpose must fail the kernel tier); the fuzz targets; the container
//! image; and the QEMU kernel matrix.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    results::{
        Counts, GUARD_BINARY, GUARD_FILTER, GUARD_PROBE, Tier, guard_verdict, parse_result,
        read_skips,
    },
    util::{is_root, root, run, show},
};

pub fn test(lint: bool, matrix: bool) -> Result<()> {
    let mut tiers: Vec<Tier> = Vec::new();
    let result = run_tiers(lint, matrix, &mut tiers);
    print_summary(&tiers);
    let failed: u64 = tiers.iter().map(|t| t.failed).sum();
    if failed > 0 {
        bail!("{failed} tests failed");
    }
    result
}

fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new("cargo");
    c.args(args).current_dir(root());
    c
}

/// A tier of one or more checks that pass or fail as a whole.
fn checks(
    tiers: &mut Vec<Tier>,
    name: &str,
    steps: &mut [&mut dyn FnMut() -> Result<()>],
) -> Result<()> {
    let t0 = Instant::now();
    let mut tier = Tier {
        name: name.into(),
        ..Default::default()
    };
    let mut result = Ok(());
    for step in steps.iter_mut() {
        match step() {
            Ok(()) => tier.ran += 1,
            Err(e) => {
                tier.failed += 1;
                result = Err(e);
                break;
            }
        }
    }
    tier.seconds = t0.elapsed().as_secs_f64();
    tiers.push(tier);
    result
}

fn run_tiers(lint: bool, matrix: bool, tiers: &mut Vec<Tier>) -> Result<()> {
    if lint {
        lint_tier(tiers)?;
    }
    checks(tiers, "dashboards", &mut [&mut crate::dashboards::check])?;
    // The Helm chart and the manifests made from it, validated offline.
    checks(
        tiers,
        "chart and manifests",
        &mut [&mut crate::deploy::check],
    )?;
    let skips = root().join("target/xtask");
    std::fs::create_dir_all(&skips)?;

    // Unit, CLI, golden-file and TUI tests: what a plain `cargo test` runs, as any user.
    let t0 = Instant::now();
    let log = skips.join("skips-pure.tsv");
    let mut t = cargo(&["test", "--", "--test-threads=2"]);
    t.env("COPYSCOPE_SKIP_LOG", &log);
    let pure = cargo_tier(&mut t, "pure (unit, CLI, golden, TUI)", &log, t0)?;
    let kernel_tests = pure.1.ignored;
    let ok = pure.0.failed == 0;
    tiers.push(pure.0);
    if !ok {
        return Ok(());
    }

    if !kernel_tier(tiers, &skips, kernel_tests)? {
        return Ok(());
    }
    fuzz_tier(tiers)?;
    image_tier(tiers)?;
    if matrix {
        matrix_tier(tiers)?;
    }
    Ok(())
}

/// rustfmt and clippy, of the default build and of the image's.
fn lint_tier(tiers: &mut Vec<Tier>) -> Result<()> {
    checks(
        tiers,
        "lint (rustfmt, clippy)",
        &mut [
            &mut || run(&mut cargo(&["fmt", "--all", "--check"])),
            &mut || {
                run(&mut cargo(&[
                    "clippy",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]))
            },
            // The image's build (cargo xtask image): no tui, no bench.
            &mut || {
                run(&mut cargo(&[
                    "clippy",
                    "--package",
                    "copyscope",
                    "--no-default-features",
                    "--bins",
                    "--lib",
                    "--",
                    "-D",
                    "warnings",
                ]))
            },
        ],
    )?;
    Ok(())
}

/// The kernel tier and its guard, as root; whether the next tiers may run.
fn kernel_tier(tiers: &mut Vec<Tier>, skips: &Path, kernel_tests: u64) -> Result<bool> {
    // The kernel tier: the tests that load the real programs. As root they must really
    // run: a skip for a reason other than a missing kernel feature fails.
    if is_root() {
        let t0 = Instant::now();
        let log = skips.join("skips-kernel.tsv");
        let mut t = cargo(&[
            "test",
            "--no-fail-fast",
            "--",
            "--ignored",
            "--test-threads=2",
        ]);
        // COPYSCOPE_TEST_REJECT, when set for the whole run, reaches these tests: the
        // tier must then fail, naming the probe.
        t.env("COPYSCOPE_REQUIRE_KERNEL_TESTS", "1")
            .env("COPYSCOPE_SKIP_LOG", &log);
        let (tier, _) = cargo_tier(&mut t, "kernel (this host)", &log, t0)?;
        let ok = tier.failed == 0;
        tiers.push(tier);
        if !ok {
            return Ok(false);
        }
        checks(
            tiers,
            "guard (a rejected program fails the kernel tier)",
            &mut [&mut guard],
        )?;
    } else {
        tiers.push(Tier {
            name: "kernel (this host)".into(),
            not_run: Some(format!(
                "not root: its {kernel_tests} tests load eBPF programs (run `cargo xtask test` as root)"
            )),
            ..Default::default()
        });
    }
    Ok(true)
}

/// The parsers' fuzz targets.
fn fuzz_tier(tiers: &mut Vec<Tier>) -> Result<()> {
    // The parsers' fuzz targets (agent/fuzz), a few seconds each.
    let t0 = Instant::now();
    match crate::fuzz::tier() {
        Ok(Some(why)) => tiers.push(Tier {
            name: "fuzz".into(),
            not_run: Some(why),
            seconds: t0.elapsed().as_secs_f64(),
            ..Default::default()
        }),
        Ok(None) => tiers.push(Tier {
            name: "fuzz".into(),
            ran: crate::fuzz::target_count().unwrap_or(0),
            seconds: t0.elapsed().as_secs_f64(),
            ..Default::default()
        }),
        Err(e) => {
            tiers.push(Tier {
                name: "fuzz".into(),
                failed: 1,
                seconds: t0.elapsed().as_secs_f64(),
                ..Default::default()
            });
            return Err(e);
        }
    }
    Ok(())
}

/// The container image, as root.
fn image_tier(tiers: &mut Vec<Tier>) -> Result<()> {
    // The container image: built, sized and its binary run (buildah needs root).
    if is_root() {
        checks(
            tiers,
            "image",
            &mut [&mut || crate::image::image().map(drop)],
        )?;
    } else {
        tiers.push(Tier {
            name: "image".into(),
            not_run: Some("not root: buildah's vfs storage needs root".into()),
            ..Default::default()
        });
    }
    Ok(())
}

/// The QEMU matrix, as root.
fn matrix_tier(tiers: &mut Vec<Tier>) -> Result<()> {
    if is_root() {
        let t0 = Instant::now();
        let results = crate::vm::vm(crate::vm::VmArgs {
            kernels: crate::vm::KERNELS.iter().map(|k| k.0.to_string()).collect(),
            parallel: 4,
            timeout: 3000,
            only: vec![],
            arch: crate::image::Arch::Amd64,
        })?;
        let verdict = crate::vm::check(&results);
        for r in &results {
            tiers.extend(r.tiers());
        }
        tiers.push(Tier {
            name: "kernel matrix (QEMU): kernels, payload, boots (time)".into(),
            seconds: t0.elapsed().as_secs_f64(),
            ..Default::default()
        });
        verdict?;
    } else {
        tiers.push(Tier {
            name: "kernel matrix (QEMU)".into(),
            not_run: Some("not root: it needs qemu, kernel packages and BPF in the guests".into()),
            ..Default::default()
        });
    }
    Ok(())
}

/// Run one `cargo test`, echoing its output, and make a tier of it: its `test result:`
/// lines, less the tests that recorded a skip in `log`.
fn cargo_tier(cmd: &mut Command, name: &str, log: &Path, t0: Instant) -> Result<(Tier, Counts)> {
    let _ = std::fs::remove_file(log);
    let counts = run_counting(cmd)?;
    let skipped = read_skips(log);
    Ok((
        Tier {
            name: name.into(),
            ran: (counts.passed + counts.failed).saturating_sub(skipped.len() as u64),
            failed: counts.failed,
            skipped,
            not_run: None,
            seconds: t0.elapsed().as_secs_f64(),
        },
        counts,
    ))
}

/// The guard: one family's kernel tests, with a required program that the verifier
/// rejects (COPYSCOPE_TEST_REJECT), must fail and name the probe.
fn guard() -> Result<()> {
    let mut t = cargo(&[
        "test",
        "-p",
        "copyscope",
        "--test",
        GUARD_BINARY,
        "--",
        "--ignored",
        GUARD_FILTER,
    ]);
    t.env("COPYSCOPE_REQUIRE_KERNEL_TESTS", "1")
        .env("COPYSCOPE_TEST_REJECT", GUARD_PROBE)
        .env_remove("COPYSCOPE_SKIP_LOG");
    eprintln!(
        "xtask: {} (must fail: {GUARD_PROBE} rejected on purpose)",
        show(&t)
    );
    let out = t
        .output()
        .with_context(|| format!("cannot start {}", show(&t)))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    guard_verdict(out.status.success(), &text)
}

/// Run `cargo test`, echoing its output, and add up its `test result:` lines.
fn run_counting(cmd: &mut Command) -> Result<Counts> {
    eprintln!("xtask: {}", show(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", show(cmd)))?;
    let mut counts = Counts::default();
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(c) = parse_result(&line) {
            counts += c;
        }
    }
    let status = child.wait()?;
    if !status.success() && counts.failed == 0 {
        bail!("{} failed ({status})", show(cmd));
    }
    Ok(counts)
}

/// The closing table, then one line CI reads.
fn print_summary(tiers: &[Tier]) {
    println!();
    println!(
        "{:<52} {:>6} {:>8} {:>7} {:>8}",
        "TIER", "RAN", "SKIPPED", "FAILED", "TIME"
    );
    for t in tiers {
        let time = format!("{:.0} s", t.seconds);
        match &t.not_run {
            Some(why) => println!("{:<52} not run: {why}", t.name),
            None => println!(
                "{:<52} {:>6} {:>8} {:>7} {:>8}",
                t.name,
                t.ran,
                t.skipped.len(),
                t.failed,
                time
            ),
        }
    }
    let skipped: Vec<_> = tiers
        .iter()
        .flat_map(|t| t.skipped.iter().map(move |s| (&t.name, s)))
        .collect();
    if !skipped.is_empty() {
        println!("\nskipped, with the reason each test gave:");
        for (tier, (test, why)) in &skipped {
            println!("  [{tier}] {test}: {why}");
        }
    }
    let ran: u64 = tiers.iter().map(|t| t.ran).sum();
    let failed: u64 = tiers.iter().map(|t| t.failed).sum();
    // One closing line for the whole run, whatever the last test binary was.
    println!(
        "tests: {ran} passed, {failed} failed, {} skipped",
        skipped.len()
    );
}
