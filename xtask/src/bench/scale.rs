//! `cargo xtask bench scale`: copyscope run's user-space cost beside many live processes
//! (by default 10,000, each making one pread a second under a name of its own): the time
//! each collection takes, the agent's CPU share and resident memory, and the time to fetch
//! `/metrics`. Three configurations: the defaults, `--max-workloads 550` (about 10,000
//! series), and `--max-workloads N` so that every process has series of its own.

use std::{
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    MIB, Proc, catch_signals, check_interrupted, fixed, http_get, lines_of, median, metric,
    quantile, start_copyscope_run, status_bytes, verdict, wait_for_line,
};
use crate::util::{is_root, root};

/// What the run was asked for.
pub struct Settings {
    pub processes: u64,
    pub seconds: f64,
    pub fetches: usize,
}

/// The live processes, all in one process group of their own: dropping this kills the
/// whole group by its id (errors and Ctrl-C included) and waits until none is left.
struct Ticks {
    leader: Proc,
}

impl Ticks {
    fn start(bin_dir: &Path, file: &Path, processes: u64, prefix: &str) -> Result<Ticks> {
        let mut cmd = Command::new(bin_dir.join("copyscope-workload"));
        cmd.arg("tick")
            .arg(file)
            .arg(processes.to_string())
            // Longer than any run: the group is killed at the end.
            .arg("86400")
            .arg(prefix)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut leader = Proc::spawn(&mut cmd, libc::SIGKILL)?;
        let stderr = leader.child.stderr.take().context("no stderr")?;
        let ticks = Ticks { leader };
        let lines = lines_of(stderr);
        wait_for_line(
            &lines,
            "copyscope-workload tick",
            Duration::from_secs(300),
            |l| (l == "ready").then_some(()),
        )?;
        Ok(ticks)
    }

    fn pgid(&self) -> i32 {
        self.leader.pid() as i32
    }
}

impl Drop for Ticks {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the group our own child leads; its leader is not reaped yet
        // (Proc's drop reaps it after this), so the group id is still this group's.
        unsafe { libc::kill(-self.pgid(), libc::SIGKILL) };
        if let Err(e) = self.leader.stop() {
            eprintln!("xtask: stopping the tick processes: {e:#}");
        }
        // The children, orphaned, are reaped by init: wait until none is left.
        let deadline = Instant::now() + Duration::from_secs(60);
        // SAFETY: signal 0 only asks whether any process of the group is left.
        while unsafe { libc::kill(-self.pgid(), 0) } == 0 {
            if Instant::now() > deadline {
                eprintln!(
                    "xtask: processes of group {} still there 60 s after SIGKILL",
                    self.pgid()
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// CPU seconds a process has used (utime + stime of /proc/PID/stat).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("no ')' in stat")?.1;
    // Fields 3 onwards: utime and stime are fields 14 and 15.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |n: usize| -> Result<f64> {
        f.get(n - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("field {n} of /proc/{pid}/stat"))
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(14)? + ticks(15)?) / hz)
}

/// One configuration's figures.
struct Figures {
    name: String,
    interval: f64,
    /// Seconds of each collection measured.
    collections: Vec<f64>,
    /// Collections that ended between two readings and so were not seen.
    unseen: u64,
    cpu_percent: f64,
    rss: f64,
    hwm: f64,
    /// pread64 calls counted per second over the span (the processes are live).
    preads_per_second: f64,
    workloads: f64,
    metrics_bytes: usize,
    lines: usize,
    series: usize,
    /// Seconds of each fetch of /metrics.
    fetches: Vec<f64>,
}

/// The agent's collection count and last collection's seconds, from an exposition.
fn collection(text: &str) -> (f64, f64) {
    (
        metric(text, "copyscope_collections_total", &[]),
        metric(text, "copyscope_collection_duration_seconds", &[]),
    )
}

fn measure(
    bin_dir: &Path,
    s: &Settings,
    name: &str,
    interval: f64,
    args: &[&str],
) -> Result<Figures> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    eprintln!(
        "xtask: {name}: copyscope run --interval {interval} {}",
        args.join(" ")
    );
    let (agent, addr) = start_copyscope_run(bin_dir, interval, &args)?;
    let pid = agent.pid();
    // Two collections of warm-up: the first window covers the agent's start.
    let get = || http_get(&addr, "/metrics");
    let deadline = Instant::now() + Duration::from_secs_f64(interval * 4.0 + 60.0);
    let mut text = loop {
        check_interrupted()?;
        if let Ok(t) = get()
            && collection(&t).0 >= 2.0
        {
            break t;
        }
        if Instant::now() > deadline {
            bail!("{name}: copyscope made no two collections in time");
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    // The span: one reading of /metrics per collection, as a scraper would make, just
    // after each (a reading that finds none new tries again 5% of an interval later).
    let (mut seen, _) = collection(&text);
    let preads = |t: &str| metric(t, "copyscope_syscalls_total", &[("syscall", "pread64")]);
    let preads0 = preads(&text);
    let (cpu0, t0) = (cpu_seconds(pid)?, Instant::now());
    let mut collections = Vec::new();
    let mut unseen = 0;
    let mut last_new = Instant::now();
    while t0.elapsed().as_secs_f64() < s.seconds {
        check_interrupted()?;
        let wake = last_new + Duration::from_secs_f64(interval * 1.02);
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
        text = get()?;
        let (n, secs) = collection(&text);
        if n > seen {
            collections.push(secs);
            unseen += (n - seen) as u64 - 1;
            seen = n;
            last_new = Instant::now();
        } else {
            last_new += Duration::from_secs_f64(interval * 0.05);
        }
    }
    let span = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu0;
    let preads_per_second = (preads(&text) - preads0) / span;
    let (rss, hwm) = (status_bytes(pid, "VmRSS")?, status_bytes(pid, "VmHWM")?);
    let workloads = metric(&text, "copyscope_workloads", &[]);

    // Fetches of /metrics, one after another.
    let mut fetches = Vec::new();
    let mut body = String::new();
    for _ in 0..s.fetches {
        check_interrupted()?;
        let t = Instant::now();
        body = get()?;
        fetches.push(t.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(agent);
    Ok(Figures {
        name: name.to_string(),
        interval,
        collections,
        unseen,
        cpu_percent: 100.0 * cpu / span,
        rss,
        hwm,
        preads_per_second,
        workloads,
        metrics_bytes: body.len(),
        lines: body.lines().count(),
        series: body
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count(),
        fetches,
    })
}

pub fn scale(bin_dir: &Path, s: &Settings) -> Result<()> {
    if !is_root() {
        bail!("the scale benchmark runs copyscope's eBPF programs: run it as root");
    }
    if s.processes == 0 || s.seconds.is_nan() || s.seconds <= 0.0 || s.fetches == 0 {
        bail!("--processes, --seconds and --fetches must be positive");
    }
    catch_signals();
    let dir = root().join("target/xtask/bench");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("scale-file");
    std::fs::write(&file, vec![7u8; 4096])?;
    let started = Instant::now();
    eprintln!("xtask: starting {} processes", s.processes);
    let ticks = Ticks::start(bin_dir, &file, s.processes, "scale")?;
    eprintln!(
        "xtask: {} processes live after {:.1} s",
        s.processes,
        started.elapsed().as_secs_f64()
    );
    let max = s.processes.to_string();
    let configs = [
        measure(bin_dir, s, "defaults", 5.0, &[])?,
        // About 18 series per workload: some 10,000 series in all.
        measure(
            bin_dir,
            s,
            "550 workloads",
            5.0,
            &["--max-workloads", "550"],
        )?,
        measure(
            bin_dir,
            s,
            "every process a workload",
            2.0,
            &["--max-workloads", &max],
        )?,
    ];
    drop(ticks);
    report(s, &configs);
    Ok(())
}

fn ms(x: f64) -> String {
    fixed(x * 1e3, 1)
}

fn report(s: &Settings, configs: &[Figures]) {
    println!(
        "## copyscope run beside {} live processes, one pread a second each\n",
        s.processes
    );
    println!(
        "{} s measured per configuration; /metrics read once per collection meanwhile, \
         then fetched {} times in a row.\n",
        fixed(s.seconds, 0),
        s.fetches
    );
    println!(
        "| configuration | collections (unseen) | collection ms median / max | CPU % of one core | \
         VmRSS / VmHWM MiB | pread64/s counted | workloads | /metrics MiB, lines, series | \
         fetch ms median / max |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in configs {
        let mut fetches = c.fetches.clone();
        fetches.sort_by(f64::total_cmp);
        println!(
            "| {} (`--interval {}`) | {} ({}) | {} / {} | {} | {} / {} | {} | {} | {}, {}, {} | {} / {} |",
            c.name,
            c.interval,
            c.collections.len(),
            c.unseen,
            ms(median(&c.collections)),
            ms(max(&c.collections)),
            fixed(c.cpu_percent, 2),
            fixed(c.rss / MIB, 1),
            fixed(c.hwm / MIB, 1),
            fixed(c.preads_per_second, 0),
            c.workloads,
            fixed(c.metrics_bytes as f64 / MIB, 1),
            c.lines,
            c.series,
            ms(median(&fetches)),
            ms(quantile(&fetches, 1.0)),
        );
    }
    println!();
    for c in configs {
        if c.preads_per_second < 0.9 * s.processes as f64 {
            println!(
                "Warning: {}: {} pread64 calls a second counted, fewer than the {} processes \
                 make.\n",
                c.name,
                fixed(c.preads_per_second, 0),
                s.processes
            );
        }
    }
    let (d, ten, all) = (&configs[0], &configs[1], &configs[2]);
    let ten_fetch = max(&ten.fetches);
    let max_fetch = max(&all.fetches);
    println!("### Goals\n");
    println!("| figure | value | goal | |");
    println!("|---|---:|---:|---|");
    println!(
        "| defaults: longest collection | {} ms | ≤ 20 ms | {} |",
        ms(max(&d.collections)),
        verdict(max(&d.collections) * 1e3, 20.0)
    );
    println!(
        "| defaults: CPU | {} % of one core | ≤ 0.5 % | {} |",
        fixed(d.cpu_percent, 2),
        verdict(d.cpu_percent, 0.5)
    );
    println!(
        "| defaults: VmRSS (VmHWM {} MiB) | {} MiB | ≤ 64 MiB | {} |",
        fixed(d.hwm / MIB, 1),
        fixed(d.rss / MIB, 1),
        verdict(d.rss / MIB, 64.0)
    );
    println!(
        "| defaults: peak RSS (VmHWM) | {} MiB | ≤ 64 MiB | {} |",
        fixed(d.hwm / MIB, 1),
        verdict(d.hwm / MIB, 64.0)
    );
    println!(
        "| `--max-workloads 550`: longest /metrics fetch ({} series) | {} ms | ≤ 50 ms | {} |",
        ten.series,
        ms(ten_fetch),
        verdict(ten_fetch * 1e3, 50.0)
    );
    println!(
        "| `--max-workloads {}`: longest /metrics fetch ({} series) | {} ms | (no goal) | |",
        s.processes,
        all.series,
        ms(max_fetch),
    );
    println!();
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}
