//! `cargo xtask bench overhead`: what copyscope's probes add to a syscall, against the
//! floor any tracer pays and against bpftrace doing the same counting. One run, all
//! configurations interleaved per round, medians and ratios printed as a Markdown table.
//!
//! `cargo xtask bench soak`: `copyscope run` beside a steady workload (one process and a
//! steady churn of short-lived ones) for minutes: the agent's resident memory, its maps'
//! kernel memory, counted against expected syscalls, and the collection time per window,
//! early against late.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;

use crate::util::{is_root, output, root};

#[derive(Subcommand)]
pub enum Which {
    /// Syscall overhead: baseline, empty tracepoint program, copyscope, bpftrace.
    Overhead {
        /// pread calls per measurement.
        #[arg(long, default_value_t = 1_000_000)]
        calls: u64,
        /// Rounds; each round measures every configuration once.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
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
    },
}

pub fn run(which: Which, bin_dir: &Path) -> Result<()> {
    match which {
        Which::Overhead { calls, rounds } => overhead(bin_dir, calls, rounds),
        Which::Soak { minutes, interval } => soak(bin_dir, minutes, interval),
    }
}

/// A tracer running in the background while the workload is measured.
enum Tracer {
    None,
    Bpftrace(&'static str),
    Copyscope,
}

const FLOOR_TP: &str = "tracepoint:syscalls:sys_enter_pread64 { }";
/// What copyscope does for pread, said in bpftrace: time, calls and bytes per pid.
const BPFTRACE_COUNT: &str = "tracepoint:syscalls:sys_enter_pread64 { @start[tid] = nsecs; } \
tracepoint:syscalls:sys_exit_pread64 /@start[tid]/ { @calls[pid] = count(); \
@bytes[pid] = sum(args->ret); @ns[pid] = sum(nsecs - @start[tid]); delete(@start[tid]); }";

struct Config {
    name: &'static str,
    tracer: Tracer,
}

fn start(tracer: &Tracer, bin_dir: &Path) -> Result<Option<Child>> {
    let (mut child, ready) = match tracer {
        Tracer::None => return Ok(None),
        Tracer::Bpftrace(prog) => (
            Command::new("bpftrace")
                .args(["-B", "line", "-e", prog])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting bpftrace (apt-get install bpftrace)")?,
            "Attaching",
        ),
        Tracer::Copyscope => (
            Command::new(bin_dir.join("copyscope"))
                .args(["snapshot", "--duration", "3600", "--json"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting copyscope")?,
            "counting",
        ),
    };
    let stream: Box<dyn std::io::Read + Send> = match (child.stdout.take(), child.stderr.take()) {
        (Some(o), _) => Box::new(o),
        (_, Some(e)) => Box::new(e),
        _ => bail!("no output to wait on"),
    };
    let mut lines = BufReader::new(stream).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains(ready) => break,
            Some(Ok(_)) => {}
            _ => bail!("tracer exited before it was ready"),
        }
        if Instant::now() > deadline {
            bail!("tracer not ready after 60 s");
        }
    }
    // Keep draining so the tracer never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    // bpftrace prints "Attaching" just before it attaches.
    std::thread::sleep(Duration::from_millis(500));
    Ok(Some(child))
}

fn stop(child: Option<Child>) -> Result<()> {
    if let Some(mut c) = child {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
        c.wait()?;
    }
    Ok(())
}

fn measure(bin_dir: &Path, file: &Path, calls: u64, size: u64) -> Result<f64> {
    let out = output(Command::new(bin_dir.join("copyscope-workload")).args([
        "pread-timed",
        file.to_str().unwrap(),
        &calls.to_string(),
        &size.to_string(),
    ]))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v["ns_per_call"]
        .as_f64()
        .context("workload printed no ns_per_call")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn overhead(bin_dir: &Path, calls: u64, rounds: usize) -> Result<()> {
    if !is_root() {
        bail!("the overhead benchmark attaches eBPF programs: run it as root");
    }
    let dir = root().join("target/xtask/bench");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("pread-data");
    std::fs::write(&file, vec![1u8; 8192])?;
    let configs = [
        Config {
            name: "baseline (no tracer)",
            tracer: Tracer::None,
        },
        Config {
            name: "floor: empty tracepoint program (sys_enter_pread64)",
            tracer: Tracer::Bpftrace(FLOOR_TP),
        },
        Config {
            name: "copyscope (all probes, system-wide)",
            tracer: Tracer::Copyscope,
        },
        Config {
            name: "bpftrace: calls, bytes, time per pid (enter+exit)",
            tracer: Tracer::Bpftrace(BPFTRACE_COUNT),
        },
    ];
    let sizes = [1u64, 4096];
    // results[config][size] = samples
    let mut results = vec![vec![Vec::new(); sizes.len()]; configs.len()];
    for round in 0..rounds {
        eprintln!("xtask: overhead round {}/{rounds}", round + 1);
        for (ci, c) in configs.iter().enumerate() {
            let child = start(&c.tracer, bin_dir)?;
            let r: Result<()> = (|| {
                for (si, &size) in sizes.iter().enumerate() {
                    results[ci][si].push(measure(bin_dir, &file, calls, size)?);
                }
                Ok(())
            })();
            stop(child)?;
            r?;
        }
    }
    let med: Vec<Vec<f64>> = results
        .iter_mut()
        .map(|per| per.iter_mut().map(|s| median(s)).collect())
        .collect();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "Kernel {}, {} x {calls} pread calls per figure, medians.\n",
        kernel.trim(),
        rounds
    );
    println!("| configuration | pread(1 B) ns | added | pread(4 KiB) ns | added |");
    println!("|---|---:|---:|---:|---:|");
    for (ci, c) in configs.iter().enumerate() {
        let add = |si: usize| med[ci][si] - med[0][si];
        println!(
            "| {} | {:.1} | {:+.1} | {:.1} | {:+.1} |",
            c.name,
            med[ci][0],
            add(0),
            med[ci][1],
            add(1)
        );
    }
    println!();
    for (si, size) in sizes.iter().enumerate() {
        let added = |ci: usize| med[ci][si] - med[0][si];
        let (floor, cs, bt) = (added(1), added(2), added(3));
        println!(
            "pread({}): copyscope adds {cs:.1} ns = {:.2} x bpftrace's {bt:.1} ns (goal <= 0.20) and {:.2} x the tracepoint floor's {floor:.1} ns (goal <= 2.00)",
            if *size == 1 {
                "1 B".to_string()
            } else {
                "4 KiB".to_string()
            },
            cs / bt,
            cs / floor
        );
        println!(
            "  (the floor alone is {:.2} x bpftrace here: no syscall-tracepoint tracer can add less than the floor)",
            floor / bt
        );
    }
    Ok(())
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

/// VmRSS of a process, in bytes.
fn resident(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .context("no VmRSS")?;
    Ok(kib * 1024.0)
}

/// The value at quantile `q` (0..=1) of sorted values, nearest rank.
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
    let mut agent = Command::new(bin_dir.join("copyscope"))
        .args(["run", "--no-pin", "--listen", "127.0.0.1:0", "--interval"])
        .arg(interval.to_string())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting copyscope run")?;
    let agent_pid = agent.id();
    let r = (|| {
        let mut lines = BufReader::new(agent.stderr.take().context("no stderr")?).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(rest) = l.strip_prefix("copyscope: serving http://") {
                        break rest.split('/').next().unwrap_or("").to_string();
                    }
                }
                _ => bail!("copyscope run exited before serving"),
            }
        };
        std::thread::spawn(move || for _ in lines {});
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
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent_pid as i32, libc::SIGTERM) };
    agent.wait()?;
    r
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
