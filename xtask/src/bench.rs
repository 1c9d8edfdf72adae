//! `cargo xtask bench overhead`: what copyscope's probes add to a syscall, against the
//! floor any tracer pays and against bpftrace doing the same counting. One run, all
//! configurations interleaved per round, medians and ratios printed as a Markdown table.

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
}

pub fn run(which: Which, bin_dir: &Path) -> Result<()> {
    match which {
        Which::Overhead { calls, rounds } => overhead(bin_dir, calls, rounds),
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
