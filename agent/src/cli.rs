//! Command line.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "copyscope",
    version,
    about = "Where is my CPU going on copying bytes? Per-process eBPF counts of \
syscalls, mode switches, bytes copied by the CPU versus moved zero-copy."
)]
pub struct Cli {
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, global = true, env = "COPYSCOPE_LOG", default_value = "warn")]
    pub log_level: log::LevelFilter,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every probe: family, hook, the method used, attached or not and why.
    Probes {
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Count for a while (or while a command runs) and report per process.
    Snapshot(SnapshotArgs),
}

#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    /// Seconds to count (ignored when a command is given; Ctrl-C ends early).
    #[arg(long, short = 'd', default_value_t = 5.0, value_parser = parse_duration)]
    pub duration: f64,

    /// Report only this process.
    #[arg(long, short = 'p')]
    pub pid: Option<u32>,

    /// One JSON document on stdout instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Kernel-side diagnostics (aya-log), printed at debug level.
    #[arg(long)]
    pub debug_bpf: bool,

    /// Measure copyscope's own programs: run count and time per program (BPF stats).
    #[arg(long)]
    pub bpf_stats: bool,

    /// Run this command and report it and its descendants when it exits.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

fn parse_duration(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 || v > 86_400.0 {
        return Err(format!(
            "duration must be between 0 and 86400 seconds, got {s}"
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_command_mode() {
        let c = Cli::try_parse_from([
            "copyscope",
            "snapshot",
            "--json",
            "--",
            "cat",
            "/etc/hostname",
        ])
        .unwrap();
        let Command::Snapshot(a) = c.command else {
            panic!("not snapshot")
        };
        assert!(a.json);
        assert_eq!(a.command, vec!["cat", "/etc/hostname"]);
    }

    #[test]
    fn rejects_bad_durations() {
        for bad in ["0", "-1", "abc", "1e9", "NaN"] {
            assert!(
                Cli::try_parse_from(["copyscope", "snapshot", "--duration", bad]).is_err(),
                "{bad}"
            );
        }
        let c = Cli::try_parse_from(["copyscope", "snapshot", "-d", "0.5"]).unwrap();
        let Command::Snapshot(a) = c.command else {
            panic!()
        };
        assert_eq!(a.duration, 0.5);
    }
}
