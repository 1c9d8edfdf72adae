//! copyscope's orchestration: set-up, build, run, test, benchmarks. No product logic here.

mod bench;
mod chart_readme;
mod dashboards;
mod deploy;
mod fuzz;
mod image;
mod results;
mod setup;
mod test;
mod util;
mod vm;

use std::process::Command;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need: rust-src, bpf-linker, Debian packages.
    Setup,
    /// Set up, then build copyscope (release) with its eBPF programs.
    Build,
    /// Set up, build, and run copyscope with these arguments (e.g. `-- snapshot -d 5`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run every test tier: lints, unit tests, CLI tests, kernel tests.
    Test {
        /// Skip clippy and rustfmt.
        #[arg(long)]
        no_lint: bool,
        /// Skip the QEMU kernel matrix (`cargo xtask vm`) that runs after the host tiers.
        #[arg(long)]
        no_vm: bool,
    },
    /// Fuzz the parsers of system and network text (agent/fuzz; cargo-fuzz, nightly).
    Fuzz(fuzz::FuzzArgs),
    /// Boot Debian kernels under QEMU and run the kernel tests and `copyscope probes` in each.
    Vm(vm::VmArgs),
    /// Build the container image (static musl binary, FROM scratch, buildah) and check it.
    Image {
        /// Architectures, comma-separated; with more than one, a manifest list of them too.
        #[arg(long, value_delimiter = ',', default_value = "amd64")]
        arch: Vec<image::Arch>,
    },
    /// Set up, then write the plain Kubernetes manifests (deploy/kubernetes) from the Helm
    /// chart (deploy/helm/copyscope).
    Manifests {
        /// Write nothing; check the chart (lint, values schema, rendered objects validated
        /// offline) and that the manifests are up to date, as `cargo xtask test` does.
        #[arg(long)]
        check: bool,
    },
    /// Write the Helm chart's README (deploy/helm/copyscope/README.md) from its
    /// README.tmpl.md and the comments of its values.yaml.
    ChartReadme,
    /// Benchmarks (report ratios measured in one run; never timed tests).
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

fn build_release() -> Result<std::path::PathBuf> {
    util::run(
        Command::new("cargo")
            .args(["build", "--release", "--package", "copyscope", "--bins"])
            .current_dir(util::root()),
    )?;
    Ok(util::root().join("target/release"))
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Setup => setup::setup().map(|_| 0),
        Cmd::Build => setup::setup().and_then(|_| build_release()).map(|_| 0),
        Cmd::Run { args } => (|| {
            setup::setup()?;
            let bin = build_release()?.join("copyscope");
            let mut cmd = if util::is_root()
                || Command::new("sudo").arg("-n").arg("true").output().is_err()
            {
                Command::new(&bin)
            } else {
                let mut c = Command::new("sudo");
                c.arg("-E").arg(&bin);
                c
            };
            let status = cmd.args(&args).status()?;
            Ok(status.code().unwrap_or(1))
        })(),
        Cmd::Test { no_lint, no_vm } => setup::setup()
            .and_then(|_| test::test(!no_lint, !no_vm))
            .map(|_| 0),
        Cmd::Fuzz(args) => fuzz::fuzz(&args).map(|_| 0),
        Cmd::Vm(args) => setup::setup()
            .and_then(|_| vm::vm(args))
            .and_then(|r| vm::check(&r))
            .map(|_| 0),
        Cmd::Image { arch } => setup::setup().and_then(|_| image::images(&arch)).map(|_| 0),
        Cmd::Manifests { check } => setup::setup()
            .and_then(|_| {
                if check {
                    deploy::check()
                } else {
                    deploy::manifests()
                }
            })
            .map(|_| 0),
        Cmd::ChartReadme => chart_readme::write().map(|_| 0),
        Cmd::Bench { which } => setup::setup()
            .and_then(|_| build_release())
            .and_then(|dir| bench::run(which, &dir))
            .map(|_| 0),
    };
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::exit(1);
        }
    }
}
