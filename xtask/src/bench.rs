//! `cargo xtask bench overhead`: copyscope's always-on cost, mostly from the kernel's own
//! BPF run-time statistics (run_cnt, run_time_ns per program) read around each timed
//! workload, beside the floor any syscall tracer pays, an empty sched_switch program and
//! bpftrace doing the same counting. One run, all configurations interleaved per round
//! (the order rotating), results printed as Markdown tables.
//!
//! `cargo xtask bench soak`: `copyscope run` beside a steady workload (one process and a
//! steady churn of short-lived ones) for minutes: the agent's resident memory, its maps'
//! kernel memory, counted against expected syscalls, and the collection time per window,
//! early against late.
//!
//! `cargo xtask bench scrape-under-attack`: `/metrics` latency while one address holds
//! idle and slowloris connections (in bench_attack.rs).

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader, Read, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;

use crate::util::{is_root, output, root, show, succeeds};

mod attack;
mod scale;

#[derive(Subcommand)]
pub enum Which {
    /// copyscope's always-on cost: per-program run time from the kernel's BPF statistics,
    /// wall-clock cost per call, map memory; against an empty program and bpftrace.
    Overhead {
        /// pread and getppid calls per measurement.
        #[arg(long, default_value_t = 200_000)]
        calls: u64,
        /// Ping-pong rounds per context-switch measurement.
        #[arg(long, default_value_t = 20_000)]
        switch_rounds: u64,
        /// Rounds; each round measures every configuration and workload once.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// More arguments for `copyscope run`, split on whitespace (e.g.
        /// "--families syscalls,sched" to measure some probe families only).
        #[arg(long, default_value = "", allow_hyphen_values = true)]
        copyscope_args: String,
    },
    /// A bounded soak: the agent and a steady workload for minutes; memory, drift and
    /// collection time, early against late.
    Soak {
        /// Minutes the workload runs.
        #[arg(long, default_value_t = 5.0)]
        minutes: f64,
        /// The agent's collection interval, seconds.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Then, with an agent of its own collecting every --burst-interval seconds, this
        /// many short-lived processes at once, within one window (0: no burst).
        #[arg(long, default_value_t = 20_000)]
        burst: u64,
        /// The burst agent's collection interval, seconds: long enough that the whole
        /// burst exits within one window.
        #[arg(long, default_value_t = 60.0)]
        burst_interval: f64,
    },
    /// `/metrics` latency and the agent's memory while one address holds idle and
    /// slowloris connections: plain HTTP, TLS, basic auth, TLS with basic auth.
    ScrapeUnderAttack {
        /// Idle connections held (connected, nothing sent).
        #[arg(long, default_value_t = 10_000)]
        idle: usize,
        /// Slowloris connections held (a request head a byte at a time, never finished).
        #[arg(long, default_value_t = 1_000)]
        slow: usize,
        /// Scrapes per mode, one after another.
        #[arg(long, default_value_t = 300)]
        scrapes: usize,
        /// Pause between two scrapes, milliseconds.
        #[arg(long, default_value_t = 100)]
        gap_ms: u64,
        /// At most this many seconds of scrapes per mode.
        #[arg(long, default_value_t = 90)]
        limit_seconds: u64,
        /// Seconds between the attacker's first round and the first scrape.
        #[arg(long, default_value_t = 5)]
        warmup_seconds: u64,
        /// A slow connection sends a byte every this many milliseconds.
        #[arg(long, default_value_t = 1000)]
        slow_byte_ms: u64,
        /// The attacker opens again the connections the agent closed every this many
        /// milliseconds.
        #[arg(long, default_value_t = 1000)]
        round_ms: u64,
        /// Modes, comma-separated: plain, tls, auth, tls+auth.
        #[arg(long, default_value = "plain,tls,auth,tls+auth")]
        modes: String,
        /// The attacker's source address (a loopback one); the scraper's is 127.0.0.1.
        #[arg(long, default_value = "127.0.0.1")]
        from: std::net::Ipv4Addr,
    },
    /// copyscope run's user-space cost beside many live processes, one pread a second
    /// each: collection time, CPU share, resident memory, /metrics fetch time.
    Scale {
        /// Live processes.
        #[arg(long, default_value_t = 10_000)]
        processes: u64,
        /// Seconds measured per configuration.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        /// Fetches of /metrics timed per configuration.
        #[arg(long, default_value_t = 30)]
        fetches: usize,
    },
}

pub fn run(which: Which, bin_dir: &Path) -> Result<()> {
    match which {
        Which::Overhead {
            calls,
            switch_rounds,
            rounds,
            copyscope_args,
        } => overhead(&Settings {
            bin_dir: bin_dir.to_path_buf(),
            calls,
            switch_rounds,
            rounds,
            copyscope_args: copyscope_args
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        }),
        Which::Soak {
            minutes,
            interval,
            burst: procs,
            burst_interval,
        } => {
            soak(bin_dir, minutes, interval)?;
            if procs > 0 {
                burst(bin_dir, procs, burst_interval)?;
            }
            Ok(())
        }
        Which::ScrapeUnderAttack {
            idle,
            slow,
            scrapes,
            gap_ms,
            limit_seconds,
            warmup_seconds,
            slow_byte_ms,
            round_ms,
            modes,
            from,
        } => attack::run(&attack::Settings {
            bin_dir: bin_dir.to_path_buf(),
            idle,
            slow,
            scrapes,
            gap: Duration::from_millis(gap_ms),
            limit: Duration::from_secs(limit_seconds),
            warmup: Duration::from_secs(warmup_seconds),
            slow_byte: Duration::from_millis(slow_byte_ms),
            round: Duration::from_millis(round_ms),
            modes: modes
                .split(',')
                .map(|m| attack::Mode::parse(m.trim()))
                .collect::<Result<_>>()?,
            from,
        }),
        Which::Scale {
            processes,
            seconds,
            fetches,
        } => scale::scale(
            bin_dir,
            &scale::Settings {
                processes,
                seconds,
                fetches,
            },
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Processes: every one started is stopped by its pid and waited for, on every path.

/// A process the benchmarks started. Dropping it (errors included) sends it `signal` unless
/// it has exited, and waits for it; SIGKILL if it is still there 30 s later.
struct Proc {
    child: Child,
    signal: i32,
    what: String,
}

impl Proc {
    fn spawn(cmd: &mut Command, signal: i32) -> Result<Proc> {
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", show(cmd)))?;
        let what = cmd.get_program().to_string_lossy().into_owned();
        Ok(Proc {
            child,
            signal,
            what,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Signal it (unless it has exited) and wait for it: its exit status.
    fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.child.try_wait()? {
            return Ok(s);
        }
        // SAFETY: kill(2) on our own child, not yet reaped, so the pid is still its.
        unsafe { libc::kill(self.pid() as i32, self.signal) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                eprintln!(
                    "xtask: {} (pid {}) still running 30 s after signal {}: killing it",
                    self.what,
                    self.pid(),
                    self.signal
                );
                self.child.kill()?;
                return Ok(self.child.wait()?);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("xtask: stopping {} (pid {}): {e:#}", self.what, self.pid());
        }
    }
}

/// The lines of `stream`, read by a thread of their own until the end (so the writer never
/// blocks on a full pipe, whether or not anyone still listens).
fn lines_of(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// Wait for the first line for which `ready` answers; the lines before it go into the error.
fn wait_for_line<T>(
    lines: &mpsc::Receiver<String>,
    what: &str,
    timeout: Duration,
    ready: impl Fn(&str) -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => {
                if let Some(t) = ready(&l) {
                    return Ok(t);
                }
                seen.push(l);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("{what} exited before it was ready: {}", seen.join("\n"))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!(
                    "{what} not ready after {} s: {}",
                    timeout.as_secs(),
                    seen.join("\n")
                )
            }
        }
    }
}

/// `copyscope run --no-pin --listen 127.0.0.1:0 --interval INTERVAL ARGS...`, once it
/// serves (HTTP or, with a web configuration, HTTPS): the process and the address it
/// serves on.
fn start_copyscope_run(bin_dir: &Path, interval: f64, args: &[String]) -> Result<(Proc, String)> {
    let mut agent = Proc::spawn(
        Command::new(bin_dir.join("copyscope"))
            .args(["run", "--no-pin", "--listen", "127.0.0.1:0", "--interval"])
            .arg(interval.to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        libc::SIGTERM,
    )?;
    let lines = lines_of(agent.child.stderr.take().context("no stderr")?);
    let addr = wait_for_line(&lines, "copyscope run", Duration::from_secs(60), |l| {
        let rest = l
            .strip_prefix("copyscope: serving http://")
            .or_else(|| l.strip_prefix("copyscope: serving https://"))?;
        Some(rest.split('/').next().unwrap_or("").to_string())
    })?;
    Ok((agent, addr))
}

// ---------------------------------------------------------------------------------------
// The kernel's view of a process's BPF objects: /proc/PID/fdinfo.

/// A program's run-time statistics from its fdinfo (`prog_id:`, `run_cnt:`,
/// `run_time_ns:`); None for anything else, links (which name a `prog_id:` too) included.
#[derive(Clone, Copy, Debug, PartialEq)]
struct ProgStat {
    id: u32,
    runs: u64,
    ns: u64,
}

/// A map's kernel memory from its fdinfo (`map_id:`, `map_type:`, `max_entries:`,
/// `memlock:`).
#[derive(Clone, Copy, Debug, PartialEq)]
struct MapStat {
    id: u32,
    map_type: u32,
    max_entries: u64,
    memlock: u64,
}

/// The value of `key:` in an fdinfo text, parsed.
fn fdinfo_field<T: std::str::FromStr>(text: &str, key: &str) -> Option<T> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().parse().ok())?
    })
}

fn parse_prog_fdinfo(text: &str) -> Option<ProgStat> {
    Some(ProgStat {
        id: fdinfo_field(text, "prog_id")?,
        runs: fdinfo_field(text, "run_cnt")?,
        ns: fdinfo_field(text, "run_time_ns")?,
    })
}

fn parse_map_fdinfo(text: &str) -> Option<MapStat> {
    Some(MapStat {
        id: fdinfo_field(text, "map_id")?,
        map_type: fdinfo_field(text, "map_type")?,
        max_entries: fdinfo_field(text, "max_entries")?,
        memlock: fdinfo_field(text, "memlock")?,
    })
}

/// The fdinfo text of every fd of `pid` (fds that close meanwhile are passed over).
fn fdinfos(pid: u32) -> Result<Vec<String>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let entries = std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))?;
    Ok(entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect())
}

/// The programs `pid` holds, by id.
fn prog_stats(pid: u32) -> Result<BTreeMap<u32, ProgStat>> {
    Ok(fdinfos(pid)?
        .iter()
        .filter_map(|t| parse_prog_fdinfo(t))
        .map(|p| (p.id, p))
        .collect())
}

/// The maps `pid` holds, by id (a map open on several fds counted once).
fn map_stats(pid: u32) -> Result<BTreeMap<u32, MapStat>> {
    Ok(fdinfos(pid)?
        .iter()
        .filter_map(|t| parse_map_fdinfo(t))
        .map(|m| (m.id, m))
        .collect())
}

/// The `name` bpftool gives program or map `id` (`kind`: "prog" or "map").
fn bpftool_name(kind: &str, id: u32) -> Result<String> {
    let out = output(Command::new("bpftool").args([kind, "show", "id", &id.to_string(), "-j"]))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v["name"].as_str().unwrap_or("").to_string())
}

/// The tracing programs loaded on the machine (`bpftool prog show`), by id: "name (type)".
fn tracing_programs() -> Result<BTreeMap<u32, String>> {
    let out = output(Command::new("bpftool").args(["prog", "show", "-j"]))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let kind = p["type"].as_str()?;
            let tracing = [
                "tracepoint",
                "raw_tracepoint",
                "raw_tracepoint_writable",
                "tracing",
                "kprobe",
                "perf_event",
            ]
            .contains(&kind);
            let name = p["name"].as_str().unwrap_or("");
            tracing.then(|| Some((p["id"].as_u64()? as u32, format!("{name} ({kind})"))))?
        })
        .collect())
}

/// The number of CPUs in a kernel CPU list such as "0-1,4-7".
fn cpu_count(list: &str) -> Result<usize> {
    let mut n = 0;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (
            a.trim()
                .parse()
                .with_context(|| format!("CPU list {list:?}"))?,
            b.trim()
                .parse()
                .with_context(|| format!("CPU list {list:?}"))?,
        );
        if b < a {
            bail!("CPU list {list:?}: {part} runs backwards");
        }
        n += b - a + 1;
    }
    if n == 0 {
        bail!("empty CPU list {list:?}");
    }
    Ok(n)
}

/// Whether a map type holds a value (or an entry) per possible CPU.
fn per_cpu_map(map_type: u32) -> bool {
    // PERF_EVENT_ARRAY (one entry per CPU), PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH,
    // PERCPU_CGROUP_STORAGE.
    matches!(map_type, 4 | 5 | 6 | 10 | 21)
}

/// A map's memory on a machine with `target` possible CPUs, from `memlock` on this one
/// with `possible`: per-CPU maps scaled whole (an upper bound: their shared part is
/// scaled too), the others as they are.
fn projected(memlock: u64, map_type: u32, possible: usize, target: usize) -> f64 {
    if per_cpu_map(map_type) {
        memlock as f64 * target as f64 / possible as f64
    } else {
        memlock as f64
    }
}

fn map_type_name(t: u32) -> String {
    let name = match t {
        1 => "hash",
        2 => "array",
        3 => "prog_array",
        4 => "perf_event_array",
        5 => "percpu_hash",
        6 => "percpu_array",
        7 => "stack_trace",
        9 => "lru_hash",
        10 => "lru_percpu_hash",
        11 => "lpm_trie",
        12 => "array_of_maps",
        13 => "hash_of_maps",
        27 => "ringbuf",
        30 => "bloom_filter",
        _ => return format!("type {t}"),
    };
    name.to_string()
}

// ---------------------------------------------------------------------------------------
// Figures.

/// The median of some values (the mean of the middle two for an even count); NaN if none.
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => s[n / 2],
        _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Median and spread of some values.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Spread {
    min: f64,
    p10: f64,
    median: f64,
    p90: f64,
    max: f64,
}

impl Spread {
    fn of(v: &[f64]) -> Spread {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        Spread {
            min: quantile(&s, 0.0),
            p10: quantile(&s, 0.1),
            median: median(&s),
            p90: quantile(&s, 0.9),
            max: quantile(&s, 1.0),
        }
    }
}

/// `a / b` where that means something: NaN unless `b` is above zero (an added cost the
/// noise left at or below zero measures nothing).
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

/// `value` against an upper bound.
fn verdict(value: f64, goal: f64) -> &'static str {
    if value.is_nan() {
        "n/a"
    } else if value <= goal {
        "PASS"
    } else {
        "FAIL"
    }
}

/// A number for the tables with `places` decimals, a dash for none.
fn fixed(x: f64, places: usize) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.places$}")
    }
}

/// The family of a copyscope program: its name up to the first `_`.
fn family(program: &str) -> &str {
    program.split('_').next().unwrap_or(program)
}

// ---------------------------------------------------------------------------------------
// The overhead benchmark.

struct Settings {
    bin_dir: PathBuf,
    calls: u64,
    switch_rounds: u64,
    rounds: usize,
    copyscope_args: Vec<String>,
}

/// What runs beside the workload.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Config {
    Baseline,
    /// An empty program on sys_enter_pread64: the syscall tracepoint slow path for every
    /// syscall, and one program run per pread.
    Floor,
    Copyscope,
    /// bpftrace counting what copyscope counts for pread.
    Bpftrace,
    /// An empty program on sched_switch.
    SwitchFloor,
}

const CONFIGS: [Config; 5] = [
    Config::Baseline,
    Config::Floor,
    Config::Copyscope,
    Config::Bpftrace,
    Config::SwitchFloor,
];

const FLOOR_TP: &str = "tracepoint:syscalls:sys_enter_pread64 { }";
const SWITCH_FLOOR_TP: &str = "tracepoint:sched:sched_switch { }";
/// What copyscope does for pread, said in bpftrace: time, calls and bytes per pid.
const BPFTRACE_COUNT: &str = "tracepoint:syscalls:sys_enter_pread64 { @start[tid] = nsecs; } \
tracepoint:syscalls:sys_exit_pread64 /@start[tid]/ { @calls[pid] = count(); \
@bytes[pid] = sum(args->ret); @ns[pid] = sum(nsecs - @start[tid]); delete(@start[tid]); }";

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Floor => "floor",
            Config::Copyscope => "copyscope",
            Config::Bpftrace => "bpftrace count",
            Config::SwitchFloor => "empty sched_switch",
        }
    }

    fn index(self) -> usize {
        CONFIGS.iter().position(|&c| c == self).unwrap_or(0)
    }
}

/// The timed workloads (copyscope-workload).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Workload {
    Pread1,
    Pread4k,
    Getppid,
    Switch,
}

const WORKLOADS: [Workload; 4] = [
    Workload::Pread1,
    Workload::Pread4k,
    Workload::Getppid,
    Workload::Switch,
];

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Pread1 => "pread 1 B",
            Workload::Pread4k => "pread 4 KiB",
            Workload::Getppid => "getppid",
            Workload::Switch => "ping-pong",
        }
    }

    /// What one unit of the workload is.
    fn unit(self) -> &'static str {
        match self {
            Workload::Switch => "round",
            _ => "call",
        }
    }

    fn index(self) -> usize {
        WORKLOADS.iter().position(|&w| w == self).unwrap_or(0)
    }

    fn args(self, s: &Settings, file: &Path, cpu: usize) -> Vec<String> {
        let file = file.to_string_lossy().into_owned();
        let calls = s.calls.to_string();
        match self {
            Workload::Pread1 => vec!["pread-timed".into(), file, calls, "1".into()],
            Workload::Pread4k => vec!["pread-timed".into(), file, calls, "4096".into()],
            Workload::Getppid => vec!["getppid-timed".into(), calls],
            // Both threads on one CPU: each round switches from one to the other and back.
            Workload::Switch => vec![
                "--cpu".into(),
                cpu.to_string(),
                "switch-timed".into(),
                s.switch_rounds.to_string(),
            ],
        }
    }
}

/// One timed workload under one configuration.
#[derive(Clone, Debug, Default)]
struct Sample {
    /// Wall-clock ns per call (per round).
    ns: f64,
    /// Calls (rounds) timed.
    n: u64,
    /// The tracer's programs, by name: (runs, run time in ns) during the timed loop.
    progs: BTreeMap<String, (u64, u64)>,
}

impl Sample {
    fn runs_per(&self, prog: &str) -> f64 {
        self.progs.get(prog).map_or(0.0, |&(r, _)| r as f64) / self.n as f64
    }

    /// NaN when the program did not run.
    fn ns_per_run(&self, prog: &str) -> f64 {
        match self.progs.get(prog) {
            Some(&(r, ns)) if r > 0 => ns as f64 / r as f64,
            _ => f64::NAN,
        }
    }

    fn ns_per(&self, prog: &str) -> f64 {
        self.progs.get(prog).map_or(0.0, |&(_, ns)| ns as f64) / self.n as f64
    }

    /// All programs for which `keep` holds: (runs, ns) per call (per round).
    fn sum_per(&self, keep: impl Fn(&str) -> bool) -> (f64, f64) {
        let (r, ns) = self
            .progs
            .iter()
            .filter(|(p, _)| keep(p))
            .fold((0u64, 0u64), |(r, ns), (_, &(pr, pns))| (r + pr, ns + pns));
        (r as f64 / self.n as f64, ns as f64 / self.n as f64)
    }
}

/// A tracer running: its process and its programs' names by id.
struct Tracer {
    proc: Proc,
    names: BTreeMap<u32, String>,
}

impl Tracer {
    /// Its programs' counters now, by name.
    fn read(&self) -> Result<BTreeMap<String, ProgStat>> {
        Ok(prog_stats(self.proc.pid())?
            .into_values()
            .map(|p| {
                let name = self
                    .names
                    .get(&p.id)
                    .cloned()
                    .unwrap_or_else(|| format!("prog {}", p.id));
                (name, p)
            })
            .collect())
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM end the benchmark between two steps, through its error path (which
/// stops every process and restores the sysctl), instead of killing it in the middle.
fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// kernel.bpf_stats_enabled=1 while it lives; the old value back when dropped.
struct BpfStatsOn {
    old: String,
}

impl BpfStatsOn {
    fn new() -> Result<BpfStatsOn> {
        let old = std::fs::read_to_string(BPF_STATS)
            .with_context(|| format!("reading {BPF_STATS}"))?
            .trim()
            .to_string();
        std::fs::write(BPF_STATS, "1").with_context(|| format!("writing 1 to {BPF_STATS}"))?;
        Ok(BpfStatsOn { old })
    }
}

impl Drop for BpfStatsOn {
    fn drop(&mut self) {
        if self.old != "1"
            && let Err(e) = std::fs::write(BPF_STATS, &self.old)
        {
            eprintln!("xtask: restoring {BPF_STATS} to {}: {e}", self.old);
        }
    }
}

/// Start the tracer of `config` and wait until its programs run: None for the baseline.
fn start_tracer(config: Config, s: &Settings, file: &Path) -> Result<Option<Tracer>> {
    let script = match config {
        Config::Baseline => return Ok(None),
        Config::Copyscope => None,
        Config::Floor => Some(FLOOR_TP),
        Config::Bpftrace => Some(BPFTRACE_COUNT),
        Config::SwitchFloor => Some(SWITCH_FLOOR_TP),
    };
    let proc = match script {
        None => start_copyscope_run(&s.bin_dir, 5.0, &s.copyscope_args)?.0,
        Some(script) => {
            let mut p = Proc::spawn(
                Command::new("bpftrace")
                    .args(["-B", "line", "-e", script])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null()),
                libc::SIGINT,
            )?;
            let lines = lines_of(p.child.stdout.take().context("no stdout")?);
            wait_for_line(&lines, "bpftrace", Duration::from_secs(60), |l| {
                l.starts_with("Attaching").then_some(())
            })?;
            p
        }
    };
    // Attached once its programs run: for bpftrace every one (it attaches them one by one
    // after "Attaching"), for copyscope (attached before it serves) any. A pread and a
    // sleep set them off.
    let every = script.is_some();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 1];
    let f = std::fs::File::open(file)?;
    loop {
        let stats = prog_stats(proc.pid())?;
        let ran = stats.values().filter(|p| p.runs > 0).count();
        if !stats.is_empty() && (if every { ran == stats.len() } else { ran > 0 }) {
            let mut names = BTreeMap::new();
            let mut taken = BTreeSet::new();
            for id in stats.keys() {
                let base = bpftool_name("prog", *id)?;
                let mut name = base.clone();
                let mut k = 2;
                while !taken.insert(name.clone()) {
                    name = format!("{base}#{k}");
                    k += 1;
                }
                names.insert(*id, name);
            }
            return Ok(Some(Tracer { proc, names }));
        }
        if Instant::now() > deadline {
            bail!(
                "{}: its programs did not run within 30 s of starting",
                config.name()
            );
        }
        std::os::unix::fs::FileExt::read_at(&f, &mut buf, 0)?;
        std::thread::sleep(Duration::from_millis(20));
        check_interrupted()?;
    }
}

/// Run one timed workload, reading the tracer's program counters right around its timed
/// loop (the workload waits at its gate until told to go).
fn measure(s: &Settings, args: &[String], tracer: Option<&Tracer>) -> Result<Sample> {
    let mut cmd = Command::new(s.bin_dir.join("copyscope-workload"));
    cmd.args(args)
        .env("COPYSCOPE_WORKLOAD_GATE", "1")
        .env_remove("COPYSCOPE_WORKLOAD_OUT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = show(&cmd);
    let mut p = Proc::spawn(&mut cmd, libc::SIGKILL)?;
    let err = lines_of(p.child.stderr.take().context("no stderr")?);
    let mut out = p.child.stdout.take().context("no stdout")?;
    wait_for_line(&err, &shown, Duration::from_secs(60), |l| {
        (l == "ready").then_some(())
    })?;
    let before = tracer.map(Tracer::read).transpose()?;
    p.child.stdin.take().context("no stdin")?.write_all(b"g")?;
    let mut text = String::new();
    out.read_to_string(&mut text)?;
    let after = tracer.map(Tracer::read).transpose()?;
    let status = p.stop()?;
    if !status.success() {
        let why: Vec<String> = err.try_iter().collect();
        bail!("{shown} failed ({status}): {}", why.join("\n"));
    }
    let v: serde_json::Value =
        serde_json::from_str(text.trim()).with_context(|| format!("{shown} printed {text:?}"))?;
    let (ns, n) = match (&v["ns_per_call"], &v["ns_per_round"]) {
        (serde_json::Value::Number(x), _) => (x.as_f64(), v["calls"].as_u64()),
        (_, serde_json::Value::Number(x)) => (x.as_f64(), v["rounds"].as_u64()),
        _ => (None, None),
    };
    let (Some(ns), Some(n)) = (ns, n) else {
        bail!("{shown} printed no time per call: {text}");
    };
    let mut progs = BTreeMap::new();
    if let (Some(before), Some(after)) = (before, after) {
        for (name, a) in after {
            let b = before.get(&name).copied().unwrap_or(ProgStat {
                id: a.id,
                runs: 0,
                ns: 0,
            });
            progs.insert(
                name,
                (a.runs.saturating_sub(b.runs), a.ns.saturating_sub(b.ns)),
            );
        }
    }
    Ok(Sample {
        ns,
        n: n.max(1),
        progs,
    })
}

/// The first line of `cmd`'s output, or "?" when it cannot run.
fn first_line(cmd: &mut Command) -> String {
    output(cmd)
        .ok()
        .and_then(|o| o.lines().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn overhead(s: &Settings) -> Result<()> {
    if !is_root() {
        bail!(
            "the overhead benchmark loads eBPF programs and sets kernel.bpf_stats_enabled: \
             run it as root"
        );
    }
    if !succeeds(Command::new("bpftrace").arg("--version")) {
        bail!("bpftrace is missing (apt-get install bpftrace)");
    }
    if !succeeds(Command::new("bpftool").arg("version")) {
        bail!("bpftool is missing (apt-get install bpftool)");
    }
    if s.rounds == 0 || s.calls == 0 || s.switch_rounds == 0 {
        bail!("--rounds, --calls and --switch-rounds must be positive");
    }
    let dir = root().join("target/xtask/bench");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("pread-data");
    std::fs::write(&file, vec![1u8; 8192])?;
    let possible_list = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let possible = cpu_count(&possible_list)?;
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    // The ping-pong's CPU: the last one online.
    let switch_cpu = online
        .trim()
        .rsplit([',', '-'])
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);

    catch_signals();
    let load_start = loadavg();
    // Other tracers' programs run in every configuration, the baseline's too.
    let mut others = tracing_programs()?;
    let stats_on = BpfStatsOn::new()?;
    let mut samples: Vec<Vec<Vec<Sample>>> =
        vec![vec![Vec::with_capacity(s.rounds); WORKLOADS.len()]; CONFIGS.len()];
    let mut maps: Vec<(String, MapStat)> = Vec::new();
    let mut prog_ids = BTreeSet::new();
    let t0 = Instant::now();
    for round in 0..s.rounds {
        eprintln!(
            "xtask: overhead round {}/{} ({:.0} s)",
            round + 1,
            s.rounds,
            t0.elapsed().as_secs_f64()
        );
        // Rotate the order each round, so no configuration always follows the same one.
        for k in 0..CONFIGS.len() {
            let config = CONFIGS[(round + k) % CONFIGS.len()];
            check_interrupted()?;
            let tracer = start_tracer(config, s, &file)?;
            if let Some(t) = &tracer {
                prog_ids.extend(t.names.keys().copied());
            }
            for w in WORKLOADS {
                check_interrupted()?;
                let sample = measure(s, &w.args(s, &file, switch_cpu), tracer.as_ref())?;
                samples[config.index()][w.index()].push(sample);
            }
            if let (Config::Copyscope, Some(t)) = (config, &tracer) {
                maps = map_stats(t.proc.pid())?
                    .into_values()
                    .map(|m| Ok((bpftool_name("map", m.id)?, m)))
                    .collect::<Result<_>>()?;
            }
            if let Some(mut t) = tracer {
                let status = t.proc.stop()?;
                if !status.success() && config == Config::Copyscope {
                    eprintln!("xtask: copyscope run ended with {status} on SIGTERM");
                }
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    others.extend(
        tracing_programs()?
            .into_iter()
            .filter(|(id, _)| !prog_ids.contains(id)),
    );
    let old_stats = stats_on.old.clone();
    drop(stats_on);
    // Every program gone once its tracer is (freed after an RCU grace period).
    let deadline = Instant::now() + Duration::from_secs(10);
    let left = loop {
        let left: Vec<u32> = prog_ids
            .iter()
            .copied()
            .filter(|id| {
                succeeds(Command::new("bpftool").args(["prog", "show", "id", &id.to_string()]))
            })
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    report(
        s,
        &samples,
        &maps,
        &Header {
            possible,
            possible_list: possible_list.trim().to_string(),
            switch_cpu,
            elapsed,
            old_stats,
            load: (load_start, loadavg()),
            others: others.into_values().collect(),
        },
    );
    if !left.is_empty() {
        bail!("programs still loaded after their tracers stopped: ids {left:?}");
    }
    Ok(())
}

struct Header {
    possible: usize,
    possible_list: String,
    switch_cpu: usize,
    elapsed: f64,
    old_stats: String,
    /// The 1-minute load average at the start and at the end.
    load: (String, String),
    /// Tracing programs of others loaded during the run.
    others: Vec<String>,
}

/// The 1-minute load average.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Per round, `f` of the sample of `config` under `w`.
fn per_round(
    samples: &[Vec<Vec<Sample>>],
    config: Config,
    w: Workload,
    f: impl Fn(&Sample) -> f64,
) -> Vec<f64> {
    samples[config.index()][w.index()]
        .iter()
        .map(f)
        .filter(|x| !x.is_nan())
        .collect()
}

/// Every program name of `config` under `w`, ordered by family, then name.
fn programs(samples: &[Vec<Vec<Sample>>], config: Config, w: Workload) -> Vec<String> {
    let mut names: Vec<String> = samples[config.index()][w.index()]
        .iter()
        .flat_map(|s| s.progs.keys().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    names.sort_by(|a, b| (family(a), a).cmp(&(family(b), b)));
    names
}

/// Median runs per call, ns per run and ns per call of one program.
fn prog_figures(
    samples: &[Vec<Vec<Sample>>],
    config: Config,
    w: Workload,
    prog: &str,
) -> (f64, f64, f64) {
    (
        median(&per_round(samples, config, w, |s| s.runs_per(prog))),
        median(&per_round(samples, config, w, |s| s.ns_per_run(prog))),
        median(&per_round(samples, config, w, |s| s.ns_per(prog))),
    )
}

const TARGET_CPUS: usize = 192;

fn report(s: &Settings, samples: &[Vec<Vec<Sample>>], maps: &[(String, MapStat)], h: &Header) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let git = |args: &[&str]| first_line(Command::new("git").arg("-C").arg(root()).args(args));
    let dirty = output(Command::new("git").arg("-C").arg(root()).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]))
    .is_ok_and(|o| !o.is_empty());
    let bpftrace = first_line(Command::new("bpftrace").arg("--version"));
    let mut cs_cmd = "copyscope run --no-pin --listen 127.0.0.1:0 --interval 5".to_string();
    for a in &s.copyscope_args {
        cs_cmd.push(' ');
        cs_cmd.push_str(a);
    }

    println!("## copyscope overhead\n");
    println!(
        "Kernel {}, {cpus} CPUs online (possible {}), commit {}{}, {bpftrace}.  ",
        kernel.trim(),
        h.possible_list,
        git(&["rev-parse", "--short", "HEAD"]),
        if dirty { " with local changes" } else { "" }
    );
    println!(
        "{} rounds in {:.0} s (load average {} at the start, {} at the end); each round runs \
         every configuration once (order rotating) and under each every workload once: {} \
         pread or getppid calls, {} ping-pong rounds (two threads on CPU {}).  ",
        s.rounds, h.elapsed, h.load.0, h.load.1, s.calls, s.switch_rounds, h.switch_cpu
    );
    println!(
        "Program figures: the kernel's run_cnt and run_time_ns (kernel.bpf_stats_enabled=1 \
         for the run, {} before) read right before and after each timed loop; run time \
         includes the kernel's own clock reads around each run, and so do the wall-clock \
         figures. Medians over rounds.\n",
        h.old_stats
    );
    if !h.others.is_empty() {
        println!(
            "Other tracing programs were loaded during the run, in every configuration (the \
             baseline included; with one on a syscall tracepoint, the syscall slow path is on \
             everywhere and the floor adds little to getppid): {}.\n",
            h.others.join(", ")
        );
    }
    println!("Configurations:\n");
    println!("- baseline: no tracer");
    println!(
        "- floor: bpftrace `{FLOOR_TP}` (turns on the syscall tracepoint slow path for every \
         syscall, runs an empty program per pread)"
    );
    println!("- copyscope: `{cs_cmd}`");
    println!(
        "- bpftrace count: bpftrace counting calls, bytes and time per pid for pread (enter + exit)"
    );
    println!("- empty sched_switch: bpftrace `{SWITCH_FLOOR_TP}`\n");

    // Per program, pread 4 KiB.
    let w = Workload::Pread4k;
    println!("### Program time per instrumented call (pread 4 KiB, cached)\n");
    println!("| tracer | program | runs / call | ns / run | ns / call |");
    println!("|---|---|---:|---:|---:|");
    let mut idle = Vec::new();
    for config in [Config::Copyscope, Config::Bpftrace, Config::Floor] {
        for p in programs(samples, config, w) {
            let (rpc, npr, npc) = prog_figures(samples, config, w, &p);
            if rpc == 0.0 && npr.is_nan() {
                idle.push(format!("{} {p}", config.name()));
                continue;
            }
            println!(
                "| {} | {p} | {} | {} | {} |",
                config.name(),
                fixed(rpc, 3),
                fixed(npr, 1),
                fixed(npc, 1)
            );
        }
        let runs = median(&per_round(samples, config, w, |s| s.sum_per(|_| true).0));
        let ns = median(&per_round(samples, config, w, |s| s.sum_per(|_| true).1));
        println!(
            "| {} | **total** | {} | | **{}** |",
            config.name(),
            fixed(runs, 3),
            fixed(ns, 1)
        );
    }
    if !idle.is_empty() {
        println!(
            "\nLoaded, not run during the workload: {}.",
            idle.join(", ")
        );
    }
    println!("\ncopyscope by family (medians of per-round sums):\n");
    println!("| family | runs / call | ns / call | share |");
    println!("|---|---:|---:|---:|");
    let cs_total = median(&per_round(samples, Config::Copyscope, w, |s| {
        s.sum_per(|_| true).1
    }));
    let families: BTreeSet<String> = programs(samples, Config::Copyscope, w)
        .iter()
        .map(|p| family(p).to_string())
        .collect();
    for fam in &families {
        let of = |p: &str| family(p) == fam;
        let runs = median(&per_round(samples, Config::Copyscope, w, |s| {
            s.sum_per(of).0
        }));
        let ns = median(&per_round(samples, Config::Copyscope, w, |s| {
            s.sum_per(of).1
        }));
        println!(
            "| {fam} | {} | {} | {:.0} % |",
            fixed(runs, 3),
            fixed(ns, 1),
            100.0 * ns / cs_total
        );
    }
    println!("| **total** | | **{}** | |", fixed(cs_total, 1));

    // Net of the per-run cost the empty program shows (the measurement's own share): per
    // round, each run of copyscope and of bpftrace less the floor program's ns per run.
    let floor_per_run: Vec<f64> = samples[Config::Floor.index()][w.index()]
        .iter()
        .map(|x| {
            let (r, ns) = x.sum_per(|_| true);
            ns / r
        })
        .collect();
    let net = |config: Config| {
        let v: Vec<f64> = samples[config.index()][w.index()]
            .iter()
            .zip(&floor_per_run)
            .map(|(x, fpr)| {
                let (r, ns) = x.sum_per(|_| true);
                ns - r * fpr
            })
            .filter(|x| !x.is_nan())
            .collect();
        median(&v)
    };
    let bt_total = median(&per_round(samples, Config::Bpftrace, w, |s| {
        s.sum_per(|_| true).1
    }));
    let (cs_net, bt_net) = (net(Config::Copyscope), net(Config::Bpftrace));
    let floor_run = median(&floor_per_run);
    println!(
        "\nThe empty program costs {} ns per run here; net of that per run, copyscope spends \
         {} ns per call, bpftrace {} ns.\n",
        fixed(floor_run, 1),
        fixed(cs_net, 1),
        fixed(bt_net, 1)
    );

    // sched_switch.
    let sw = Workload::Switch;
    println!("### sched_switch (ping-pong, two threads on one CPU)\n");
    println!("| program | runs / round | ns / run (median) | ns / run p10–p90 |");
    println!("|---|---:|---:|---:|");
    // The sched family's programs: `sched_switchbtf` or `sched_switch` (copyscope, by
    // method), `sched_switch` (bpftrace's empty program).
    let sched = |s: &Sample| s.sum_per(|p| family(p) == "sched");
    let sched_row = |label: &str, config: Config| {
        let runs = median(&per_round(samples, config, sw, |s| sched(s).0));
        let per_run = Spread::of(&per_round(samples, config, sw, |s| {
            let (runs, ns) = sched(s);
            ratio(ns, runs)
        }));
        println!(
            "| {label} | {} | {} | {}–{} |",
            fixed(runs, 2),
            fixed(per_run.median, 1),
            fixed(per_run.p10, 1),
            fixed(per_run.p90, 1)
        );
        per_run.median
    };
    let cs_switch = sched_row("copyscope sched_switch", Config::Copyscope);
    let empty_switch = sched_row("empty program (bpftrace)", Config::SwitchFloor);
    let cs_round = median(&per_round(samples, Config::Copyscope, sw, |s| {
        s.sum_per(|_| true).1
    }));
    println!(
        "\ncopyscope's programs in all: {} ns per ping-pong round.\n",
        fixed(cs_round, 1)
    );

    // The uncounted syscall.
    let gw = Workload::Getppid;
    let added = |config: Config, w: Workload| -> Vec<f64> {
        let base = &samples[Config::Baseline.index()][w.index()];
        samples[config.index()][w.index()]
            .iter()
            .zip(base)
            .map(|(x, b)| x.ns - b.ns)
            .collect()
    };
    println!("### A system call copyscope does not count (getppid)\n");
    println!("| configuration | ns / call | added ns (paired, median) | added p10–p90 |");
    println!("|---|---:|---:|---:|");
    for config in [Config::Baseline, Config::Floor, Config::Copyscope] {
        let ns = Spread::of(&per_round(samples, config, gw, |s| s.ns));
        if config == Config::Baseline {
            println!("| {} | {} | | |", config.name(), fixed(ns.median, 1));
            continue;
        }
        let a = Spread::of(&added(config, gw));
        println!(
            "| {} | {} | {:+.1} | {:+.1}–{:+.1} |",
            config.name(),
            fixed(ns.median, 1),
            a.median,
            a.p10,
            a.p90
        );
    }
    let getppid_cs = median(&added(Config::Copyscope, gw));
    let getppid_floor = median(&added(Config::Floor, gw));
    println!("\ncopyscope's syscall programs during getppid:\n");
    println!("| program | runs / call | ns / run | ns / call |");
    println!("|---|---:|---:|---:|");
    for p in programs(samples, Config::Copyscope, gw) {
        if family(&p) != "syscalls" {
            continue;
        }
        let (rpc, npr, npc) = prog_figures(samples, Config::Copyscope, gw, &p);
        if rpc == 0.0 && npr.is_nan() {
            continue;
        }
        println!(
            "| {p} | {} | {} | {} |",
            fixed(rpc, 3),
            fixed(npr, 1),
            fixed(npc, 1)
        );
    }
    println!();

    // Wall clock.
    println!("### Wall clock, every configuration and workload\n");
    println!(
        "added: the difference to the baseline measured in the same round, median and spread \
         over rounds.\n"
    );
    println!("| workload | configuration | median | min–max | p10–p90 | added | added p10–p90 |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for w in WORKLOADS {
        for config in CONFIGS {
            let ns = Spread::of(&per_round(samples, config, w, |s| s.ns));
            let (add, spread) = if config == Config::Baseline {
                (String::new(), String::new())
            } else {
                let a = Spread::of(&added(config, w));
                (
                    format!("{:+.1}", a.median),
                    format!("{:+.1}–{:+.1}", a.p10, a.p90),
                )
            };
            println!(
                "| {} (ns / {}) | {} | {} | {}–{} | {}–{} | {add} | {spread} |",
                w.name(),
                w.unit(),
                config.name(),
                fixed(ns.median, 1),
                fixed(ns.min, 1),
                fixed(ns.max, 1),
                fixed(ns.p10, 1),
                fixed(ns.p90, 1)
            );
        }
    }
    let pread_cs = median(&added(Config::Copyscope, Workload::Pread4k));
    let pread_bt = median(&added(Config::Bpftrace, Workload::Pread4k));
    let pread_floor = median(&added(Config::Floor, Workload::Pread4k));
    println!(
        "\npread 4 KiB, wall clock added: copyscope {pread_cs:+.1} ns = {} x bpftrace's \
         {pread_bt:+.1} ns and {} x the floor's {pread_floor:+.1} ns (no goal).\n",
        fixed(ratio(pread_cs, pread_bt), 2),
        fixed(ratio(pread_cs, pread_floor), 2)
    );

    // Map memory.
    println!("### copyscope's map memory\n");
    println!(
        "memlock of each map (/proc/PID/fdinfo) now, with {} possible CPUs, and at \
         {TARGET_CPUS}: per-CPU maps scaled whole (an upper bound), the others as they are.\n",
        h.possible
    );
    println!("| map | type | max entries | now (KiB) | at {TARGET_CPUS} CPUs (KiB) |");
    println!("|---|---|---:|---:|---:|");
    let (mut now, mut at) = (0.0, 0.0);
    let mut maps = maps.to_vec();
    maps.sort_by(|(an, a), (bn, b)| {
        let at = |m: &MapStat| projected(m.memlock, m.map_type, h.possible, TARGET_CPUS);
        at(b).total_cmp(&at(a)).then(an.cmp(bn))
    });
    for (name, m) in &maps {
        let p = projected(m.memlock, m.map_type, h.possible, TARGET_CPUS);
        now += m.memlock as f64;
        at += p;
        println!(
            "| {name} | {} | {} | {:.0} | {:.0} |",
            map_type_name(m.map_type),
            m.max_entries,
            m.memlock as f64 / 1024.0,
            p / 1024.0
        );
    }
    println!(
        "| **total** | | | **{:.1} MiB** | **{:.1} MiB** |\n",
        now / MIB,
        at / MIB
    );

    // Goals.
    let prog_ratio = ratio(cs_total, bt_total);
    let ratio_net = ratio(cs_net, bt_net);
    let switch_ratio = ratio(cs_switch, empty_switch);
    let getppid_ratio = ratio(getppid_cs, getppid_floor);
    println!("### Goals\n");
    println!("| figure | value | goal | |");
    println!("|---|---:|---:|---|");
    println!(
        "| program time per pread 4 KiB, copyscope / bpftrace ({} / {} ns) | {} | ≤ 0.30 | {} |",
        fixed(cs_total, 1),
        fixed(bt_total, 1),
        fixed(prog_ratio, 2),
        verdict(prog_ratio, 0.30)
    );
    println!(
        "| the same net of the empty program's {} ns per run ({} / {} ns) | {} | ≤ 0.30 | {} |",
        fixed(floor_run, 1),
        fixed(cs_net, 1),
        fixed(bt_net, 1),
        fixed(ratio_net, 2),
        verdict(ratio_net, 0.30)
    );
    println!(
        "| sched_switch ns per run, copyscope / empty program ({} / {} ns) | {} | ≤ 3.0 | {} |",
        fixed(cs_switch, 1),
        fixed(empty_switch, 1),
        fixed(switch_ratio, 2),
        verdict(switch_ratio, 3.0)
    );
    println!(
        "| getppid added ns, copyscope / floor ({getppid_cs:+.1} / {getppid_floor:+.1} ns) | {} | ≤ 2.0 | {} |",
        fixed(getppid_ratio, 2),
        verdict(getppid_ratio, 2.0)
    );
    println!(
        "| map memory at {TARGET_CPUS} CPUs | {:.1} MiB | ≤ 32 MiB | {} |",
        at / MIB,
        verdict(at / MIB, 32.0)
    );
}

/// The sum of every series of `name` in an exposition whose labels include all of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (l, v) = match rest.strip_prefix('{') {
                Some(r) => r.rsplit_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            labels
                .iter()
                .all(|(k, want)| l.contains(&format!("{k}=\"{want}\"")))
                .then(|| v.parse::<f64>().ok())?
        })
        .sum()
}

/// A plain HTTP/1.0 GET of `path`: the body of a 200 answer.
fn http_get(addr: &str, path: &str) -> Result<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// A size field of /proc/PID/status (`VmRSS`, `VmHWM`, ...), in bytes.
fn status_bytes(pid: u32, key: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
    Ok(kib * 1024.0)
}

/// VmRSS of a process, in bytes.
fn resident(pid: u32) -> Result<f64> {
    status_bytes(pid, "VmRSS")
}

/// Peak RSS, through start-up and through `procs` exits in one window, and the RSS a
/// few windows later against the steady state before the burst.
fn burst(bin_dir: &Path, procs: u64, interval: f64) -> Result<()> {
    const PEAK_GOAL: f64 = 64.0;
    const BACK_GOAL: f64 = 8.0;
    let dir = root().join("target/xtask/bench");
    let file = dir.join("burst.bin");
    std::fs::write(&file, vec![0u8; 4096])?;
    let comm = format!("burst{}", std::process::id() % 100_000);
    let (mut agent, addr) = start_copyscope_run(bin_dir, interval, &[])?;
    let pid = agent.pid();
    let r = (|| -> Result<()> {
        let collections = || -> Result<f64> {
            Ok(metric(
                &http_get(&addr, "/metrics")?,
                "copyscope_collections_total",
                &[],
            ))
        };
        // Right after a collection, so that the whole burst falls in the next window.
        let wait_for = |n: f64| -> Result<f64> {
            let deadline = Instant::now() + Duration::from_secs_f64(interval * (n + 2.0) + 60.0);
            loop {
                if let Ok(c) = collections()
                    && c >= n
                {
                    return Ok(c);
                }
                if Instant::now() > deadline {
                    bail!("the agent stopped collecting");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        let first = wait_for(1.0)?;
        let steady = resident(pid)?;
        let start_peak = status_bytes(pid, "VmHWM")?;
        eprintln!("xtask: burst of {procs} short-lived processes (10 pwrite each)");
        let t = Instant::now();
        output(
            Command::new(bin_dir.join("copyscope-workload"))
                .args(["spawn", &procs.to_string(), "16", "--comm", &comm, "pwrite"])
                .arg(&file)
                .args(["10", "1"]),
        )?;
        let took = t.elapsed().as_secs_f64();
        let in_one_window = collections()? == first;
        // The window with the burst, then two more.
        let after = wait_for(first + 3.0)?;
        let m = http_get(&addr, "/metrics")?;
        let counted = metric(
            &m,
            "copyscope_syscalls_total",
            &[
                ("comm", &comm),
                ("syscall", "pwrite64"),
                ("fd_kind", "file"),
            ],
        );
        let (rss, peak) = (resident(pid)?, status_bytes(pid, "VmHWM")?);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        println!(
            "\n### A burst of exits\n\nKernel {}, {procs} processes of 10 pwrite each, spawned 16 at \
             a time in {took:.1} s ({}), the agent collecting every {interval} s; {} \
             collections later.\n",
            kernel.trim(),
            if in_one_window {
                "all within one window"
            } else {
                "over more than one window"
            },
            after - first
        );
        println!("| figure | value | goal | |");
        println!("|---|---:|---:|---|");
        println!(
            "| peak RSS through start-up | {:.1} MiB | ≤ {PEAK_GOAL} MiB | {} |",
            start_peak / MIB,
            verdict(start_peak / MIB, PEAK_GOAL)
        );
        println!(
            "| peak RSS through the burst | {:.1} MiB | ≤ {PEAK_GOAL} MiB | {} |",
            peak / MIB,
            verdict(peak / MIB, PEAK_GOAL)
        );
        println!("| RSS before the burst | {:.1} MiB | | |", steady / MIB);
        println!(
            "| RSS after, over before | {:+.1} MiB | ≤ +{BACK_GOAL} MiB | {} |",
            (rss - steady) / MIB,
            verdict((rss - steady) / MIB, BACK_GOAL)
        );
        println!(
            "| pwrite64 counted / made | {counted:.0} / {} | equal | {} |",
            procs * 10,
            if counted == (procs * 10) as f64 {
                "PASS"
            } else {
                "FAIL"
            }
        );
        Ok(())
    })();
    let stopped = agent.stop();
    r?;
    stopped?;
    Ok(())
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// One collection window, as the agent exported it.
struct Window {
    at: f64,
    collection_seconds: f64,
    rss: f64,
    map_memory: f64,
}

const MIB: f64 = 1024.0 * 1024.0;

fn soak(bin_dir: &Path, minutes: f64, interval: f64) -> Result<()> {
    if !is_root() {
        bail!("the soak runs copyscope's eBPF programs: run it as root");
    }
    if !(minutes > 0.0 && interval > 0.0) {
        bail!("--minutes and --interval must be positive");
    }
    let dir = root().join("target/xtask/bench");
    std::fs::create_dir_all(&dir)?;
    let seconds = (minutes * 60.0).round().max(1.0) as u64;
    let tag = std::process::id() % 100_000;
    let (steady_comm, churn_comm) = (format!("soak-st{tag}"), format!("soak-ch{tag}"));

    // The agent, unpinned, on a port of its own.
    let (mut agent, addr) = start_copyscope_run(bin_dir, interval, &[])?;
    let agent_pid = agent.pid();
    let r = (|| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(&addr, "/metrics").is_err() {
            if Instant::now() > deadline {
                bail!("copyscope run not ready after 60 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        soak_with(
            bin_dir,
            &dir,
            &addr,
            agent_pid,
            seconds,
            interval,
            &steady_comm,
            &churn_comm,
        )
    })();
    let stopped = agent.stop();
    r?;
    stopped?;
    Ok(())
}

#[expect(clippy::too_many_arguments, reason = "one call, the soak's settings")]
fn soak_with(
    bin_dir: &Path,
    dir: &Path,
    addr: &str,
    agent_pid: u32,
    seconds: u64,
    interval: f64,
    steady_comm: &str,
    churn_comm: &str,
) -> Result<()> {
    let workload = bin_dir.join("copyscope-workload");
    let start_rss = resident(agent_pid)?;
    eprintln!(
        "xtask: soak of {seconds} s, collecting every {interval} s: a steady process (2,000 pwrite/s) \
         and 20 short-lived processes a second (10 pwrite each)"
    );
    // The steady process, and the churn beside it, for the whole soak.
    let steady = Command::new(&workload)
        .args(["--comm", steady_comm, "steady"])
        .arg(dir.join("soak-steady.bin"))
        .args([&seconds.to_string(), "2000"])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the steady workload")?;
    let churn = {
        let (workload, file, comm) = (
            workload.clone(),
            dir.join("soak-churn.bin"),
            churn_comm.to_string(),
        );
        let end = Instant::now() + Duration::from_secs(seconds);
        std::thread::spawn(move || -> Result<u64> {
            let mut spawned = 0u64;
            while Instant::now() < end {
                let t = Instant::now();
                let out = output(
                    Command::new(&workload)
                        .args(["spawn", "20", "2", "--comm", &comm, "pwrite"])
                        .arg(&file)
                        .args(["10", "1"]),
                )?;
                let v: serde_json::Value = serde_json::from_str(&out)?;
                spawned += v["processes"].as_u64().context("spawn printed no count")?;
                std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
            }
            Ok(spawned)
        })
    };

    // Every window the agent completes: its collection time, its memory.
    let t0 = Instant::now();
    let poll = Duration::from_secs_f64((interval / 5.0).clamp(0.05, 1.0));
    let mut windows: Vec<Window> = Vec::new();
    let mut seen = 0.0;
    let mut last_report = Instant::now();
    while !churn.is_finished() {
        std::thread::sleep(poll);
        let Ok(m) = http_get(addr, "/metrics") else {
            continue;
        };
        let n = metric(&m, "copyscope_collections_total", &[]);
        if n > seen {
            seen = n;
            windows.push(Window {
                at: t0.elapsed().as_secs_f64(),
                collection_seconds: metric(&m, "copyscope_collection_duration_seconds", &[]),
                rss: resident(agent_pid)?,
                map_memory: metric(&m, "copyscope_map_memory_bytes", &[]),
            });
        }
        if last_report.elapsed() >= Duration::from_secs(60) {
            last_report = Instant::now();
            eprintln!(
                "xtask: {:.0} s, {} windows, agent RSS {:.1} MiB",
                t0.elapsed().as_secs_f64(),
                windows.len(),
                windows.last().map_or(0.0, |w| w.rss) / MIB
            );
        }
    }
    let spawned = churn
        .join()
        .map_err(|_| anyhow::anyhow!("the churn thread panicked"))??;
    let out = steady.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "the steady workload failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tally: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let steady_calls = tally["calls"].as_f64().context("steady printed no calls")?;
    // Two more windows: every exit harvested.
    let deadline = Instant::now() + Duration::from_secs_f64(10.0 * interval + 30.0);
    let m = loop {
        let m = http_get(addr, "/metrics")?;
        if metric(&m, "copyscope_collections_total", &[]) >= seen + 2.0 {
            break m;
        }
        if Instant::now() > deadline {
            bail!("the agent stopped collecting");
        }
        std::thread::sleep(poll);
    };
    let counted = |comm: &str| {
        metric(
            &m,
            "copyscope_syscalls_total",
            &[("comm", comm), ("syscall", "pwrite64"), ("fd_kind", "file")],
        )
    };
    let drops = |reason: &str| metric(&m, "copyscope_kernel_drops_total", &[("reason", reason)]);

    // The report.
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let warm_up = (seconds as f64 / 4.0).min(60.0);
    let rss_at = |t: f64| {
        windows
            .iter()
            .find(|w| w.at >= t)
            .map_or(f64::NAN, |w| w.rss)
    };
    let max_of = |f: &dyn Fn(&Window) -> f64| windows.iter().map(f).fold(f64::NAN, f64::max);
    let min_of = |f: &dyn Fn(&Window) -> f64| windows.iter().map(f).fold(f64::NAN, f64::min);
    let end_rss = resident(agent_pid)?;
    println!(
        "Kernel {}, {cpus} CPUs, {seconds} s soak, collecting every {interval} s, {} windows.\n",
        kernel.trim(),
        windows.len()
    );
    println!("| figure | value |");
    println!("|---|---:|");
    println!("| agent RSS at start | {:.1} MiB |", start_rss / MIB);
    println!(
        "| agent RSS after warm-up ({warm_up:.0} s) | {:.1} MiB |",
        rss_at(warm_up) / MIB
    );
    println!("| agent RSS at end | {:.1} MiB |", end_rss / MIB);
    println!("| agent RSS max | {:.1} MiB |", max_of(&|w| w.rss) / MIB);
    println!(
        "| agent RSS growth after warm-up | {:+.1} MiB |",
        (end_rss - rss_at(warm_up)) / MIB
    );
    println!(
        "| kernel map memory min / max | {:.2} / {:.2} MiB |",
        min_of(&|w| w.map_memory) / MIB,
        max_of(&|w| w.map_memory) / MIB
    );
    for (what, comm, want) in [
        ("steady process", steady_comm, steady_calls),
        ("churn", churn_comm, spawned as f64 * 10.0),
    ] {
        let got = counted(comm);
        println!(
            "| {what}: counted / expected pwrite64 | {got:.0} / {want:.0} (drift {:+.0}) |",
            got - want
        );
    }
    println!("| short-lived processes | {spawned} |");
    let lossy: f64 = [
        "syscall_stats_full",
        "inflight_lost",
        "exited_full",
        "process_stats_full",
    ]
    .iter()
    .map(|r| drops(r))
    .sum();
    println!("| kernel drops (maps full, in-flight lost) | {lossy:.0} |");
    println!(
        "| program runs the kernel skipped | {:.0} |",
        drops("program_runs_missed")
    );
    println!();
    println!("| collection time (ms) | windows | min | median | p99 | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    let half = windows.len() / 2;
    for (what, part) in [
        ("all", &windows[..]),
        ("early half", &windows[..half]),
        ("late half", &windows[half..]),
    ] {
        let mut v: Vec<f64> = part.iter().map(|w| w.collection_seconds * 1e3).collect();
        v.sort_by(f64::total_cmp);
        println!(
            "| {what} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            v.len(),
            quantile(&v, 0.0),
            quantile(&v, 0.5),
            quantile(&v, 0.99),
            quantile(&v, 1.0)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROG: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\nprog_type:\t5\n\
        prog_jited:\t1\nprog_tag:\t70ec59ab8792a92a\nmemlock:\t4096\nprog_id:\t26540\n\
        run_time_ns:\t25557\nrun_cnt:\t66\nrecursion_misses:\t0\nverified_insns:\t21\n";
    const LINK: &str = "pos:\t0\nflags:\t02000000\nmnt_id:\t16\nino:\t1057\nlink_type:\traw_tracepoint\n\
        link_id:\t812\nprog_tag:\t70ec59ab8792a92a\nprog_id:\t26540\ntp_name:\tsys_enter\n";
    const MAP: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\nmap_type:\t5\n\
        key_size:\t8\nvalue_size:\t64\nmax_entries:\t32768\nmap_flags:\t0x0\nmap_extra:\t0x0\n\
        memlock:\t4719552\nmap_id:\t29062\nfrozen:\t0\n";

    #[test]
    fn fdinfo_of_programs_maps_and_links() {
        assert_eq!(
            parse_prog_fdinfo(PROG),
            Some(ProgStat {
                id: 26540,
                runs: 66,
                ns: 25557
            })
        );
        // A link names its program but has no counters; a map is no program.
        assert_eq!(parse_prog_fdinfo(LINK), None);
        assert_eq!(parse_prog_fdinfo(MAP), None);
        assert_eq!(
            parse_map_fdinfo(MAP),
            Some(MapStat {
                id: 29062,
                map_type: 5,
                max_entries: 32768,
                memlock: 4_719_552
            })
        );
        assert_eq!(parse_map_fdinfo(PROG), None);
        assert_eq!(parse_map_fdinfo(LINK), None);
        assert_eq!(
            parse_prog_fdinfo("prog_id:\tx\nrun_cnt:\t1\nrun_time_ns:\t1\n"),
            None
        );
        assert_eq!(parse_prog_fdinfo(""), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_count("0-1\n").unwrap(), 2);
        assert_eq!(cpu_count("0").unwrap(), 1);
        assert_eq!(cpu_count("0-1,4-7").unwrap(), 6);
        assert_eq!(cpu_count("0,2,4-5").unwrap(), 4);
        assert_eq!(cpu_count("0-191").unwrap(), 192);
        for bad in ["", "\n", "a", "3-1", "0-", "1,,x"] {
            assert!(cpu_count(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn medians_and_spreads() {
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        let v: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        let s = Spread::of(&v);
        assert_eq!(
            s,
            Spread {
                min: 1.0,
                p10: 2.0,
                median: 10.5,
                p90: 18.0,
                max: 20.0
            }
        );
        let one = Spread::of(&[7.0]);
        assert_eq!(
            (one.min, one.p10, one.median, one.p90, one.max),
            (7.0, 7.0, 7.0, 7.0, 7.0)
        );
        assert!(Spread::of(&[]).median.is_nan());
        assert_eq!(verdict(0.3, 0.3), "PASS");
        assert_eq!(verdict(0.31, 0.3), "FAIL");
        assert_eq!(verdict(f64::NAN, 0.3), "n/a");
        assert_eq!(ratio(1.0, 4.0), 0.25);
        assert_eq!(ratio(-1.0, 4.0), -0.25);
        assert!(ratio(-1.0, -4.0).is_nan());
        assert!(ratio(1.0, 0.0).is_nan());
        assert!(ratio(f64::NAN, 1.0).is_nan());
    }

    #[test]
    fn projection_to_more_cpus() {
        // Per-CPU maps grow with the CPUs: 2 possible here, 192 there.
        for per_cpu in [4, 5, 6, 10] {
            assert_eq!(projected(1000, per_cpu, 2, 192), 96_000.0);
        }
        for shared in [1, 2, 9, 27] {
            assert_eq!(projected(1000, shared, 2, 192), 1000.0);
        }
        assert_eq!(projected(1000, 6, 192, 192), 1000.0);
    }

    #[test]
    fn families_and_sample_sums() {
        assert_eq!(family("syscalls_enter"), "syscalls");
        assert_eq!(family("sched_switch"), "sched");
        assert_eq!(family("pagecache_get"), "pagecache");
        assert_eq!(family("plain"), "plain");
        let s = Sample {
            ns: 100.0,
            n: 10,
            progs: [
                ("syscalls_enter".to_string(), (10, 300)),
                ("syscalls_exit".to_string(), (10, 200)),
                ("sched_switch".to_string(), (0, 0)),
            ]
            .into(),
        };
        assert_eq!(s.runs_per("syscalls_enter"), 1.0);
        assert_eq!(s.ns_per_run("syscalls_enter"), 30.0);
        assert!(s.ns_per_run("sched_switch").is_nan());
        assert!(s.ns_per_run("absent").is_nan());
        assert_eq!(s.ns_per("syscalls_exit"), 20.0);
        assert_eq!(s.sum_per(|p| family(p) == "syscalls"), (2.0, 50.0));
        assert_eq!(s.sum_per(|_| true), (2.0, 50.0));
    }
}
