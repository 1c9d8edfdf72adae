//! Command line: the commands, each with its arguments (those of `bench`, `bench-send` and
//! `top` live with the command).

use clap::{Parser, Subcommand};

use crate::args::{AdviceArgs, boolish, parse_duration, parse_interval};

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
    Top(crate::tui::TopArgs),
    /// Transfer a file with each copy method (read+write, mmap+write, sendfile, splice,
    /// O_DIRECT with io_uring, copy_file_range) and compare throughput, CPU time and
    /// copyscope's own counts of copies and switches.
    Bench(crate::bench::BenchArgs),
    /// Remove what `copyscope run` pinned under bpffs: its programs detach and its maps
    /// and totals are freed (once no agent holds them).
    Unpin {
        /// The pin directory.
        #[arg(long, env = "COPYSCOPE_PIN_PATH", value_name = "DIR", default_value = crate::pin::DEFAULT_PATH)]
        pin_path: std::path::PathBuf,
    },
    /// One transfer of `copyscope bench`, in its own process so that its counts are its own.
    #[command(hide = true)]
    BenchSend(crate::bench::send::BenchSendArgs),
    /// Measure memory-copy bandwidth and one system call's cost, as JSON (what `run`
    /// starts in a child process of its own).
    #[command(hide = true)]
    Calibrate,
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
    #[arg(long, env = "COPYSCOPE_PID_LABELS", value_parser = boolish())]
    pub pid_labels: bool,

    /// Seconds a workload may stay idle before its series are dropped.
    #[arg(long, env = "COPYSCOPE_WORKLOAD_TTL", default_value_t = 600.0, value_parser = parse_duration)]
    pub workload_ttl: f64,

    /// Export per-program run counts and times (turns on the kernel's BPF stats, which
    /// cost a little on every program run).
    #[arg(long, env = "COPYSCOPE_BPF_STATS", value_parser = boolish())]
    pub bpf_stats: bool,

    /// TLS, client certificates and basic auth for the HTTP server, in the Prometheus
    /// exporter-toolkit's web configuration format (tls_server_config,
    /// basic_auth_users, http_server_config.headers); relative paths in it are from its
    /// directory.
    #[arg(long, env = "COPYSCOPE_WEB_CONFIG", value_name = "FILE")]
    pub web_config: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub families: FamilyArgs,

    /// Once the probes are attached, become this user (and group), names or numeric ids,
    /// keeping only the capabilities collecting needs. Needs CAP_SETUID and CAP_SETGID
    /// at start; without GROUP, the user's group in /etc/passwd.
    #[arg(long, env = "COPYSCOPE_USER", value_name = "USER[:GROUP]")]
    pub user: Option<String>,

    #[command(flatten)]
    pub pin: PinArgs,

    #[command(flatten)]
    pub kube: KubeArgs,

    #[command(flatten)]
    pub advice: AdviceArgs,
}

/// Which probe families to attach.
#[derive(Debug, Clone, clap::Args)]
pub struct FamilyArgs {
    /// Probe families not to attach, comma-separated: sched, pagecache, copies, uring (see
    /// the README's overhead table for what each costs). syscalls and process are always on.
    #[arg(
        long,
        env = "COPYSCOPE_DISABLE_FAMILIES",
        value_name = "FAMILY,...",
        value_delimiter = ',',
        value_parser = parse_family
    )]
    pub disable_families: Vec<String>,
}

/// Where `copyscope run` keeps its programs, maps and totals between restarts.
#[derive(Debug, Clone, clap::Args)]
pub struct PinArgs {
    /// Pin the programs, maps and links in this directory of a BPF file system, and
    /// continue from what is pinned there: the programs keep counting while no agent
    /// runs, and a restarted agent's counters go on from where they were [default:
    /// /sys/fs/bpf/copyscope when /sys/fs/bpf is a BPF file system; otherwise copyscope
    /// runs unpinned and says so].
    #[arg(
        long,
        env = "COPYSCOPE_PIN_PATH",
        value_name = "DIR",
        conflicts_with = "no_pin"
    )]
    pub pin_path: Option<std::path::PathBuf>,

    /// Do not pin: the programs detach when copyscope exits, and counts start from zero
    /// with each agent.
    #[arg(long, env = "COPYSCOPE_NO_PIN", value_parser = boolish())]
    pub no_pin: bool,

    /// Discard a pin of another layout version, or a damaged one, and start from zero,
    /// instead of failing.
    #[arg(long, env = "COPYSCOPE_REPIN", value_parser = boolish())]
    pub repin: bool,
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
    pub families: FamilyArgs,

    #[command(flatten)]
    pub advice: AdviceArgs,

    /// Run this command and report it and its descendants when it exits.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// A probe family that can be turned off.
fn parse_family(s: &str) -> Result<String, String> {
    let s = s.trim();
    use crate::family::{Family, optional, optional_families};
    match Family::from_name(s) {
        Some(f) if optional(f) => Ok(s.to_string()),
        Some(_) => Err(format!(
            "the {s} family cannot be turned off: every other figure builds on it"
        )),
        None => Err(format!(
            "no probe family {s:?}: the families that can be turned off are {}",
            optional_families()
                .map(Family::name)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_from_the_environment_take_yes_no_1_0_true_false() {
        // SAFETY: no other test reads or writes this variable.
        for (value, want) in [
            ("1", true),
            ("yes", true),
            ("true", true),
            ("0", false),
            ("no", false),
            ("false", false),
        ] {
            unsafe { std::env::set_var("COPYSCOPE_ADVISE_ALL", value) };
            let c = Cli::try_parse_from(["copyscope", "snapshot", "--json"]).unwrap();
            let Command::Snapshot(a) = c.command else {
                panic!("not snapshot")
            };
            assert_eq!(a.advice.advise_all, want, "COPYSCOPE_ADVISE_ALL={value}");
        }
        unsafe { std::env::set_var("COPYSCOPE_ADVISE_ALL", "maybe") };
        let e = Cli::try_parse_from(["copyscope", "snapshot"])
            .unwrap_err()
            .to_string();
        unsafe { std::env::remove_var("COPYSCOPE_ADVISE_ALL") };
        assert!(e.contains("invalid value 'maybe'"), "{e}");
    }

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
        let th = a.advice.thresholds().unwrap();
        assert_eq!((th.min_cpu_saved, th.list_below), (0.001, false));
        let c = Cli::try_parse_from([
            "copyscope",
            "run",
            "--advise-min-saving",
            "0.05",
            "--advise-all",
        ])
        .unwrap();
        let Command::Run(a) = c.command else { panic!() };
        let th = a.advice.thresholds().unwrap();
        assert_eq!((th.min_cpu_saved, th.list_below), (0.05, true));
        for bad in [
            vec!["--listen", "localhost"],
            vec!["--listen", "1.2.3.4:99999"],
            vec!["--interval", "0"],
            vec!["--interval", "0.01"],
            vec!["--advise-min-ratio", "2"],
            vec!["--advise-min-rate", "-5"],
            vec!["--advise-directio-hit-ratio", "x"],
            vec!["--advise-min-saving", "-0.1"],
            vec!["--advise-min-saving", "NaN"],
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
