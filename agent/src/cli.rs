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
    /// Run as an agent: collect every interval and serve Prometheus metrics, health
    /// checks and the last window's snapshot over HTTP.
    Run(RunArgs),
    /// The live view: which processes copy bytes through the CPU, switch modes and miss
    /// the page cache, and what to do about it. `?` lists the keys.
    Top(TopArgs),
}

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Show a running agent (`copyscope run`) instead of attaching probes here, e.g.
    /// http://127.0.0.1:9435 through `kubectl port-forward`. Needs no privileges.
    #[arg(long, env = "COPYSCOPE_TOP_FROM", value_name = "URL")]
    pub from: Option<String>,

    /// Seconds between refreshes (+ and - change it while running).
    #[arg(long, short = 'i', default_value_t = 2.0, value_parser = parse_interval)]
    pub interval: f64,

    /// Column to sort by: pid, comm, container, syscalls, mode, switches, to-user,
    /// from-user, zero-copy, direct, hit, advice.
    #[arg(long, value_parser = crate::tui::parse_column)]
    pub sort: Option<crate::tui::view::Column>,

    /// Show only lines whose command, container or pid matches.
    #[arg(long)]
    pub filter: Option<String>,

    #[command(flatten)]
    pub advice: AdviceArgs,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Address to serve HTTP on (/metrics, /healthz, /readyz, /api/v1/snapshot).
    #[arg(long, env = "COPYSCOPE_LISTEN", default_value = "0.0.0.0:9435", value_parser = parse_listen)]
    pub listen: std::net::SocketAddr,

    /// Seconds between collections (the window of /api/v1/snapshot and the advice).
    #[arg(long, env = "COPYSCOPE_INTERVAL", default_value_t = 5.0, value_parser = parse_interval)]
    pub interval: f64,

    /// Workloads (comm + container) with their own series; the rest are summed under
    /// comm="other".
    #[arg(long, env = "COPYSCOPE_MAX_WORKLOADS", default_value_t = 200)]
    pub max_workloads: usize,

    /// Label series with the pid as well (one series per process: high cardinality).
    #[arg(long, env = "COPYSCOPE_PID_LABELS")]
    pub pid_labels: bool,

    /// Seconds a workload may stay idle before its series are dropped.
    #[arg(long, env = "COPYSCOPE_WORKLOAD_TTL", default_value_t = 600.0, value_parser = parse_duration)]
    pub workload_ttl: f64,

    /// Export per-program run counts and times (turns on the kernel's BPF stats, which
    /// cost a little on every program run).
    #[arg(long, env = "COPYSCOPE_BPF_STATS")]
    pub bpf_stats: bool,

    #[command(flatten)]
    pub kube: KubeArgs,

    #[command(flatten)]
    pub advice: AdviceArgs,
}

/// Pod names for container ids, from the Kubernetes API (`copyscope_container_info`).
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// This node's name (in a pod: the downward API's spec.nodeName). Turns on a watch of
    /// this node's pods in the Kubernetes API, for pod, namespace and container names.
    #[arg(long, env = "COPYSCOPE_KUBE_NODE", value_name = "NODE")]
    pub kube_node: Option<String>,

    /// The Kubernetes API server [default in a pod:
    /// https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT].
    #[arg(long, env = "COPYSCOPE_KUBE_API", value_name = "URL")]
    pub kube_api: Option<String>,

    /// Bearer token for the API server (used when the file exists; read for every request).
    #[arg(long, env = "COPYSCOPE_KUBE_TOKEN_FILE", value_name = "FILE",
          default_value = crate::pods::SERVICE_ACCOUNT_TOKEN)]
    pub kube_token_file: std::path::PathBuf,

    /// CA certificates (PEM) an https API server must be signed by.
    #[arg(long, env = "COPYSCOPE_KUBE_CA_FILE", value_name = "FILE",
          default_value = crate::pods::SERVICE_ACCOUNT_CA)]
    pub kube_ca_file: std::path::PathBuf,
}

impl KubeArgs {
    pub fn config(&self) -> anyhow::Result<Option<crate::pods::Config>> {
        crate::pods::Config::resolve(
            self.kube_node.as_deref(),
            self.kube_api.as_deref(),
            &self.kube_token_file,
            &self.kube_ca_file,
        )
    }
}

fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("{s:?} is not an address to listen on: give IP:PORT, e.g. 0.0.0.0:9435 or 127.0.0.1:9435")
    })
}

fn parse_interval(s: &str) -> Result<f64, String> {
    let v = parse_duration(s)?;
    if v < 0.1 {
        return Err(format!("the interval must be at least 0.1 s, got {s}"));
    }
    Ok(v)
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

    #[command(flatten)]
    pub advice: AdviceArgs,

    /// Run this command and report it and its descendants when it exits.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The advisor's thresholds (see the README's advisor section).
#[derive(Debug, Clone, clap::Args)]
pub struct AdviceArgs {
    /// Bytes per second both sides of a copy pattern must reach to be flagged.
    #[arg(long, env = "COPYSCOPE_ADVISE_MIN_RATE", default_value_t = 1048576.0, value_parser = parse_nonneg)]
    pub advise_min_rate: f64,
    /// Smaller side over larger side (0-1] for a read and a write to count as one flow.
    #[arg(long, env = "COPYSCOPE_ADVISE_MIN_RATIO", default_value_t = 0.5, value_parser = parse_fraction)]
    pub advise_min_ratio: f64,
    /// Page-cache hit ratio (0-1) at or below which streamed reads are flagged for O_DIRECT.
    #[arg(long, env = "COPYSCOPE_ADVISE_DIRECTIO_HIT_RATIO", default_value_t = 0.5, value_parser = parse_fraction)]
    pub advise_directio_hit_ratio: f64,
    /// Share (0-1) of bytes moved zero-copy at or above which a process is reported zero-copy.
    #[arg(long, env = "COPYSCOPE_ADVISE_ZERO_COPY_SHARE", default_value_t = 0.5, value_parser = parse_fraction)]
    pub advise_zero_copy_share: f64,
}

impl AdviceArgs {
    pub fn thresholds(&self) -> anyhow::Result<crate::advisor::Thresholds> {
        let t = crate::advisor::Thresholds {
            min_bytes_per_second: self.advise_min_rate,
            min_ratio: self.advise_min_ratio,
            directio_max_hit_ratio: self.advise_directio_hit_ratio,
            zero_copy_share: self.advise_zero_copy_share,
        };
        t.check().map_err(anyhow::Error::msg)?;
        Ok(t)
    }
}

fn parse_nonneg(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("must be a number >= 0, got {s}"));
    }
    Ok(v)
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !v.is_finite() || !(0.0..=1.0).contains(&v) {
        return Err(format!("must be between 0 and 1, got {s}"));
    }
    Ok(v)
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
    fn run_flags_parse_and_bad_values_are_refused() {
        let c = Cli::try_parse_from(["copyscope", "run", "--listen", "127.0.0.1:0"]).unwrap();
        let Command::Run(a) = c.command else { panic!() };
        assert_eq!(a.listen.port(), 0);
        assert_eq!(a.interval, 5.0);
        for bad in [
            vec!["--listen", "localhost"],
            vec!["--listen", "1.2.3.4:99999"],
            vec!["--interval", "0"],
            vec!["--interval", "0.01"],
            vec!["--advise-min-ratio", "2"],
            vec!["--advise-min-rate", "-5"],
            vec!["--advise-directio-hit-ratio", "x"],
            vec!["--no-such-flag"],
        ] {
            let mut argv = vec!["copyscope", "run"];
            argv.extend(bad.iter());
            assert!(Cli::try_parse_from(&argv).is_err(), "{bad:?}");
        }
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
