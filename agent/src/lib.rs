//! copyscope: per-process eBPF counts of the bytes the CPU copies between kernel and user
//! space, the bytes moved zero-copy, and the mode switches that go with them.

pub mod advisor;
pub mod args;
#[cfg(feature = "bench")]
pub mod bench;
pub mod bpf_syscall;
pub mod calibrate;
pub mod cgroups;
pub mod cli;
pub mod collect;
pub mod commands;
pub mod family;
pub mod http;
pub mod loader;
pub mod metrics;
pub mod model;
pub mod pin;
pub mod pods;
pub mod privileges;
pub mod procfs;
pub mod reason;
pub mod signals;
pub mod snapshot_table;
#[doc(hidden)]
pub mod testing;
#[cfg(feature = "tui")]
pub mod tui;
pub mod units;
pub mod webconfig;
pub mod workload;

use anyhow::Result;

/// Run one parsed command; returns the process exit code.
pub fn run(cli: cli::Cli) -> Result<i32> {
    match cli.command {
        cli::Command::Probes { json } => commands::probes::run(json),
        cli::Command::Snapshot(args) => commands::snapshot::run(&args),
        cli::Command::Run(args) => commands::run::run(&args),
        cli::Command::Unpin { pin_path } => commands::unpin::run(&pin_path),
        #[cfg(feature = "tui")]
        cli::Command::Top(args) => tui::run(&args),
        #[cfg(not(feature = "tui"))]
        cli::Command::Top(_) => Ok(cli::left_out(
            "tui",
            "run `copyscope top --from URL` from a full build on your own machine",
        )),
        #[cfg(feature = "bench")]
        cli::Command::Bench(args) => bench::run(&args),
        #[cfg(not(feature = "bench"))]
        cli::Command::Bench(_) => Ok(cli::left_out(
            "bench",
            "run `copyscope bench` from a full build (cargo build --release)",
        )),
        #[cfg(feature = "bench")]
        cli::Command::BenchSend(args) => bench::send::run(&args),
        cli::Command::Calibrate => calibrate::print(),
        cli::Command::Completions { shell } => {
            cli::completions(shell, &mut std::io::stdout().lock());
            Ok(0)
        }
        cli::Command::Man => cli::man(&mut std::io::stdout().lock())
            .map(|()| 0)
            .map_err(Into::into),
    }
}
