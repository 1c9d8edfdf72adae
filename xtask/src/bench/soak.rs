//! `cargo xtask bench soak`: the agent beside a steady workload for minutes, then a
//! burst of short-lived processes within one window.

use super::*;

/// Peak RSS, through start-up and through `procs` exits in one window, and the RSS a
/// few windows later against the steady state before the burst.
pub(super) fn burst(bin_dir: &Path, procs: u64, interval: f64) -> Result<()> {
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

/// One collection window, as the agent exported it.
pub(super) struct Window {
    pub(super) at: f64,
    pub(super) collection_seconds: f64,
    pub(super) rss: f64,
    pub(super) map_memory: f64,
}

pub(super) fn soak(bin_dir: &Path, minutes: f64, interval: f64) -> Result<()> {
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
pub(super) fn soak_with(
    bin_dir: &Path,
    dir: &Path,
    addr: &str,
    agent_pid: u32,
    seconds: u64,
    interval: f64,
    steady_comm: &str,
    churn_comm: &str,
) -> Result<()> {
    let start_rss = resident(agent_pid)?;
    let watched = watch(
        bin_dir,
        addr,
        agent_pid,
        &Workloads {
            dir,
            seconds,
            steady_comm,
            churn_comm,
        },
        interval,
    )?;
    report(
        &watched,
        agent_pid,
        start_rss,
        seconds,
        interval,
        steady_comm,
        churn_comm,
    )
}

/// What the soak ran, as it says it.
struct Workloads<'a> {
    dir: &'a Path,
    seconds: u64,
    steady_comm: &'a str,
    churn_comm: &'a str,
}

/// What the soak saw: every window, the workloads' own counts, and the agent's metrics
/// once every exit was harvested.
struct Watched {
    windows: Vec<Window>,
    spawned: u64,
    steady_calls: f64,
    metrics: String,
}

/// Run the workloads beside the agent, and record every window it completes.
fn watch(
    bin_dir: &Path,
    addr: &str,
    agent_pid: u32,
    w: &Workloads<'_>,
    interval: f64,
) -> Result<Watched> {
    let Workloads {
        dir,
        seconds,
        steady_comm,
        churn_comm,
    } = *w;
    let workload = bin_dir.join("copyscope-workload");
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
    Ok(Watched {
        windows,
        spawned,
        steady_calls,
        metrics: m,
    })
}

/// The soak's tables: memory, counts against the workloads', collection times.
fn report(
    w: &Watched,
    agent_pid: u32,
    start_rss: f64,
    seconds: u64,
    interval: f64,
    steady_comm: &str,
    churn_comm: &str,
) -> Result<()> {
    let Watched {
        windows,
        spawned,
        steady_calls,
        metrics: m,
    } = w;
    let (spawned, steady_calls) = (*spawned, *steady_calls);
    let counted = |comm: &str| {
        metric(
            m,
            "copyscope_syscalls_total",
            &[("comm", comm), ("syscall", "pwrite64"), ("fd_kind", "file")],
        )
    };
    let drops = |reason: &str| metric(m, "copyscope_kernel_drops_total", &[("reason", reason)]);

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
