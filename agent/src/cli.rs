//! Command line: the commands, each with its arguments (those of `bench`, `bench-send` and
//! `top` live with the command).

use std::collections::BTreeSet;

use clap::{CommandFactory as _, Parser, Subcommand};

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
    #[cfg(feature = "tui")]
    Top(crate::tui::TopArgs),
    /// The live view (not in this build: built without the tui feature).
    #[cfg(not(feature = "tui"))]
    #[command(disable_help_flag = true)]
    Top(LeftOut),
    /// Transfer a file with each copy method (read+write, mmap+write, sendfile, splice,
    /// O_DIRECT with io_uring, copy_file_range) and compare throughput, CPU time and
    /// copyscope's own counts of copies and switches.
    #[cfg(feature = "bench")]
    Bench(crate::bench::BenchArgs),
    /// Compare the copy methods (not in this build: built without the bench feature).
    #[cfg(not(feature = "bench"))]
    #[command(disable_help_flag = true)]
    Bench(LeftOut),
    /// Remove what `copyscope run` pinned under bpffs: its programs detach and its maps
    /// and totals are freed (once no agent holds them).
    Unpin {
        /// The pin directory.
        #[arg(long, env = "COPYSCOPE_PIN_PATH", value_name = "DIR", default_value = crate::pin::DEFAULT_PATH)]
        pin_path: std::path::PathBuf,
    },
    /// Print a shell completion script: `copyscope completions bash >
    /// /etc/bash_completion.d/copyscope` (zsh: a file `_copyscope` on $fpath; fish:
    /// ~/.config/fish/completions/copyscope.fish).
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print the manual page (roff): `copyscope man > /usr/local/share/man/man1/copyscope.1`
    /// or `copyscope man | man -l -`.
    Man,
    /// One transfer of `copyscope bench`, in its own process so that its counts are its own.
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    BenchSend(crate::bench::send::BenchSendArgs),
    /// Measure memory-copy bandwidth and one system call's cost, as JSON (what `run`
    /// starts in a child process of its own).
    #[command(hide = true)]
    Calibrate,
}

/// The arguments of a command this build left out (`top` without the tui feature, `bench`
/// without bench): any, so that the command says what is missing instead of clap.
#[derive(Debug, clap::Args)]
pub struct LeftOut {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub args: Vec<std::ffi::OsString>,
}

/// What a command this build left out does: says so, and how to get it; exit code 2.
pub fn left_out(feature: &str, instead: &str) -> i32 {
    eprintln!(
        "copyscope: this copyscope was built without the {feature} feature (the container \
         image is): {instead}"
    );
    2
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

    #[command(flatten)]
    pub scope: ScopeArgs,

    /// For --pod: pod names from the Kubernetes API (see `copyscope run`).
    #[command(flatten)]
    pub kube: KubeArgs,

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

/// The shells `copyscope completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// The completion script for `shell`, generated from these definitions.
pub fn completions(shell: CompletionShell, out: &mut dyn std::io::Write) {
    use clap_complete::Shell;
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "copyscope", out);
}

/// The manual page, copyscope(1), in roff: the commands and every option of each.
pub fn man(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    // One section per visible command, with its own options.
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = sub.get_name();
        writeln!(out, ".SH \"COPYSCOPE {}\"", name.to_uppercase())?;
        let sub = sub.clone().bin_name(format!("copyscope {name}"));
        let page = clap_mangen::Man::new(sub);
        let mut buf = Vec::new();
        page.render_synopsis_section(&mut buf)?;
        page.render_description_section(&mut buf)?;
        page.render_options_section(&mut buf)?;
        // The command's sections are subsections of the page's section for it.
        for line in String::from_utf8_lossy(&buf).lines() {
            match line.strip_prefix(".SH ") {
                Some(title) => writeln!(out, ".SS {title}")?,
                None => writeln!(out, "{line}")?,
            }
        }
    }
    man.render_version_section(out)?;
    Ok(())
}

/// `--container` and `--pod`: the processes of one container or one pod.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ScopeArgs {
    /// Only the processes of this container: its id (from /proc/PID/cgroup), or the
    /// start of it (the 12 characters `docker ps` and `crictl ps` show); a
    /// `containerd://` or `docker://` prefix is allowed.
    #[arg(long, value_name = "ID", value_parser = parse_container)]
    pub container: Option<String>,

    /// Only the processes of this pod: NAME, or NAMESPACE/NAME. Pod names come from the
    /// Kubernetes API (--kube-node), or from an agent started with it.
    #[arg(long, value_name = "NAME", value_parser = parse_pod)]
    pub pod: Option<String>,
}

impl ScopeArgs {
    pub fn is_set(&self) -> bool {
        self.container.is_some() || self.pod.is_some()
    }

    /// What is shown, for a header: "container ID", "pod NAME", or both.
    pub fn describe(&self) -> Option<String> {
        let mut what = Vec::new();
        if let Some(c) = &self.container {
            what.push(format!("container {c}"));
        }
        if let Some(p) = &self.pod {
            what.push(format!("pod {p}"));
        }
        (!what.is_empty()).then(|| what.join(", "))
    }

    /// Whether `p` is in the container and the pod asked for.
    pub fn keeps(&self, p: &crate::model::ProcessRow) -> bool {
        let container = self.container.as_ref().is_none_or(|want| {
            p.container_id
                .as_deref()
                .is_some_and(|id| id.starts_with(want.as_str()))
        });
        let pod = self.pod.as_ref().is_none_or(|want| {
            p.pod.as_ref().is_some_and(|r| match want.split_once('/') {
                Some((ns, name)) => r.namespace == ns && r.pod == name,
                None => r.pod == *want,
            })
        });
        container && pod
    }

    /// Keep only the processes in scope, and the advice about them.
    pub fn apply(&self, s: &mut crate::model::Snapshot) {
        if !self.is_set() {
            return;
        }
        s.processes.retain(|p| self.keeps(p));
        let pids: BTreeSet<u32> = s.processes.iter().map(|p| p.pid).collect();
        let containers: BTreeSet<&str> = s
            .processes
            .iter()
            .filter_map(|p| p.container_id.as_deref())
            .collect();
        s.advice.retain(|a| match a.pid {
            Some(pid) => pids.contains(&pid),
            None => a
                .container_id
                .as_deref()
                .is_some_and(|c| containers.contains(c)),
        });
    }
}

fn parse_container(s: &str) -> Result<String, String> {
    let id = s
        .trim()
        .split_once("://")
        .map_or(s.trim(), |(_, id)| id)
        .to_ascii_lowercase();
    if id.is_empty() || id.contains('/') || id.contains(char::is_whitespace) {
        return Err(format!(
            "{s:?} is not a container id: give the id or its start, e.g. 3f2a9c1e4b7d"
        ));
    }
    Ok(id)
}

fn parse_pod(s: &str) -> Result<String, String> {
    let ok = |part: &str| !part.is_empty() && !part.contains(char::is_whitespace);
    match s.split_once('/') {
        Some((ns, name)) if ok(ns) && ok(name) && !name.contains('/') => Ok(s.to_string()),
        None if ok(s) => Ok(s.to_string()),
        _ => Err(format!(
            "{s:?} is not a pod: give NAME or NAMESPACE/NAME, e.g. default/nginx-0"
        )),
    }
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

    fn scope(args: &[&str]) -> ScopeArgs {
        let mut argv = vec!["copyscope", "snapshot"];
        argv.extend(args);
        let Command::Snapshot(a) = Cli::try_parse_from(argv).unwrap().command else {
            panic!()
        };
        a.scope
    }

    #[test]
    fn container_and_pod_keep_their_processes_and_the_advice_about_them() {
        let pids = |args: &[&str]| {
            let mut s = crate::tui::fixtures::snapshot();
            scope(args).apply(&mut s);
            let advised: Vec<u32> = s.advice.iter().filter_map(|a| a.pid).collect();
            (
                s.processes.iter().map(|p| p.pid).collect::<Vec<_>>(),
                advised,
            )
        };
        let all = crate::tui::fixtures::snapshot();
        assert_eq!(pids(&[]).0.len(), all.processes.len());
        // The nginx container, by the start of its id and by a runtime's URL.
        let (nginx, advised) = pids(&["--container", "3f2a9c"]);
        assert_eq!(nginx, vec![4211, 4212]);
        assert!(advised.iter().all(|p| nginx.contains(p)), "{advised:?}");
        assert!(!advised.is_empty(), "the fixture advises nginx");
        assert_eq!(pids(&["--container", "containerd://3F2A9C1E4B7D"]).0, nginx);
        assert_eq!(pids(&["--container", "ffff"]), (vec![], vec![]));
        // The proxy's pod, by name and by namespace/name; another namespace is not it.
        assert_eq!(pids(&["--pod", "edge-7d9f"]).0, vec![2301]);
        assert_eq!(pids(&["--pod", "ingress/edge-7d9f"]).0, vec![2301]);
        assert!(pids(&["--pod", "default/edge-7d9f"]).0.is_empty());
        // Both: the processes in both.
        assert_eq!(
            pids(&["--pod", "edge-7d9f", "--container", "a81c"]).0,
            vec![2301]
        );
        assert!(
            pids(&["--pod", "edge-7d9f", "--container", "3f2a"])
                .0
                .is_empty()
        );
        assert_eq!(
            scope(&["--pod", "ingress/edge-7d9f", "--container", "a81c"]).describe(),
            Some("container a81c, pod ingress/edge-7d9f".into())
        );
        for bad in [
            vec!["--container", ""],
            vec!["--container", "a/b"],
            vec!["--pod", ""],
            vec!["--pod", "a/b/c"],
            vec!["--pod", "/x"],
        ] {
            let mut argv = vec!["copyscope", "top"];
            argv.extend(&bad);
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
