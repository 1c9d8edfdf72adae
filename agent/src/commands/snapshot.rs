//! `copyscope snapshot`: count for a duration, or while a command runs, then report.

use std::{
    io::Write as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{
    calibrate,
    cli::SnapshotArgs,
    collect::{
        follow,
        syscalls::Collector,
        window::{advice, window_snapshot},
    },
    loader::{self, LoadOptions},
    model::CommandRun,
    signals, snapshot_table,
};

pub fn run(args: &SnapshotArgs) -> Result<i32> {
    let watch = !args.command.is_empty();
    let thresholds = args.advice.thresholds()?;
    // Pod names for --pod: the node's pods, listed while counting.
    let pods = match args.kube.config()? {
        Some(cfg) => Some(crate::pods::Pods::watch(cfg)?),
        None if args.scope.pod.is_some() => anyhow::bail!(
            "--pod needs the pods of this node from the Kubernetes API: give --kube-node \
             NODE (and --kube-api URL outside a pod)"
        ),
        None => None,
    };
    // Before the probes attach: the costs an application pays without copyscope.
    let calibration = calibrate::calibrate();
    let mut loaded = loader::load(&LoadOptions {
        watch_only: watch,
        debug_log: args.debug_bpf,
        pin: None,
        disabled_families: args.families.disable_families.clone(),
    })?;
    loader::require_all(&loaded.probes)?;
    let mut logger = if args.debug_bpf {
        Some(
            aya_log::EbpfLogger::init(&mut loaded.ebpf)
                .context("starting the kernel-side logger")?,
        )
    } else {
        None
    };
    let mut collector = Collector::new(&mut loaded)?;
    signals::install();

    let _stats_fd = if args.bpf_stats {
        Some(loader::enable_bpf_stats()?)
    } else {
        None
    };
    let stats_before = loader::program_stats(&loaded);
    let before = collector.harvest()?;
    let started = Instant::now();
    let mut command = None;
    let code = if watch {
        let exit = follow::run_held(Some(&mut collector), &args.command, None)?;
        let (pid, code) = (exit.pid, exit.code);
        command = Some(CommandRun {
            pid,
            exit_code: code,
        });
        code
    } else {
        eprintln!(
            "copyscope: counting for {} s (Ctrl-C ends early)",
            args.duration
        );
        let end = started + Duration::from_secs_f64(args.duration);
        let mut last_harvest = Instant::now();
        while Instant::now() < end && !signals::stop_requested() {
            std::thread::sleep(
                Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())),
            );
            if let Some(l) = logger.as_mut() {
                l.flush();
            }
            // Retire exited processes regularly so the kernel map stays small.
            if last_harvest.elapsed() >= Duration::from_secs(1) {
                collector.harvest()?;
                last_harvest = Instant::now();
            }
        }
        0
    };
    let after = collector.harvest()?;
    let elapsed = started.elapsed().as_secs_f64();
    let stats = loader::program_stats_since(&stats_before, loader::program_stats(&loaded));
    let missed_runs: u64 = stats.iter().map(|s| s.missed_runs).sum();
    let bpf_stats = if args.bpf_stats { stats } else { Vec::new() };
    if let Some(l) = logger.as_mut() {
        l.flush();
    }

    let watched = collector.watched();
    let keep =
        |tgid: u32| (!watch || watched.contains(&tgid)) && args.pid.is_none_or(|p| p == tgid);
    let mut snapshot = window_snapshot(
        &loaded,
        &before,
        &after,
        elapsed,
        &keep,
        watch || args.pid.is_some(),
        missed_runs,
    );
    crate::collect::window::assign_containers(
        &mut snapshot,
        &after,
        &mut crate::cgroups::Containers::new(),
    );
    if let Some(pods) = &pods {
        let known = pods.containers();
        if args.scope.pod.is_some() && !pods.up() {
            eprintln!("copyscope: the Kubernetes API did not answer: no pod is known");
        }
        for p in &mut snapshot.processes {
            p.pod = p.container_id.as_ref().and_then(|c| known.get(c).cloned());
        }
    }
    args.scope.apply(&mut snapshot);
    snapshot.bpf_stats = bpf_stats;
    snapshot.command = command;
    snapshot.calibration = Some(calibration);
    snapshot.advice = advice(&snapshot, &calibration, &thresholds);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &snapshot)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", snapshot_table::table(&snapshot))?;
    }
    Ok(code)
}
