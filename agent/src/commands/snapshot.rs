//! `copyscope snapshot`: count for a duration, or while a command runs, then report.

use std::{
    ffi::CString,
    io::Write as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    calibrate,
    cli::SnapshotArgs,
    collect::{
        syscalls::Collector,
        window::{advice, window_snapshot},
    },
    loader::{self, LoadOptions},
    model::CommandRun,
    report, signals,
};

pub fn run(args: &SnapshotArgs) -> Result<i32> {
    let watch = !args.command.is_empty();
    let thresholds = args.advice.thresholds()?;
    // Before the probes attach: the costs an application pays without copyscope.
    let calibration = calibrate::calibrate();
    let mut loaded = loader::load(&LoadOptions {
        watch_only: watch,
        debug_log: args.debug_bpf,
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
    let stats_before = loader::program_stats(&loaded.ebpf);
    let before = collector.harvest()?;
    let started = Instant::now();
    let mut command = None;
    let code = if watch {
        let (pid, code) = run_command(&mut collector, &args.command)?;
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
    let stats = loader::program_stats_since(&stats_before, loader::program_stats(&loaded.ebpf));
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
    snapshot.bpf_stats = bpf_stats;
    snapshot.command = command;
    snapshot.calibration = Some(calibration);
    snapshot.advice = advice(&snapshot, &calibration, &thresholds);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &snapshot)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report::table(&snapshot))?;
    }
    Ok(code)
}

/// Start the command stopped until its pid is watched, so that not one of its syscalls is
/// missed and none of copyscope's own are counted; wait for it and return its exit code
/// (128 + signal if killed).
///
/// fork + SIGSTOP + execvp by hand: `std::process::Command::spawn` waits for the exec,
/// which the held child cannot reach until it is watched.
fn run_command(collector: &mut Collector, argv: &[String]) -> Result<(u32, i32)> {
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| {
            CString::new(a.as_bytes())
                .with_context(|| format!("argument {a:?} contains a NUL byte"))
        })
        .collect::<Result<_>>()?;
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: the child only calls async-signal-safe functions (raise, execvp, write, _exit).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if pid == 0 {
        unsafe {
            libc::raise(libc::SIGSTOP);
            libc::execvp(ptrs[0], ptrs.as_ptr());
            let msg = b"copyscope: cannot run the command\n";
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(127);
        }
    }
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
    if r != pid || !libc::WIFSTOPPED(status) {
        bail!("the command did not start (status {status:#x})");
    }
    let watched = collector.watch(pid as u32);
    // SAFETY: signalling our own stopped child.
    unsafe {
        libc::kill(
            pid,
            if watched.is_ok() {
                libc::SIGCONT
            } else {
                libc::SIGKILL
            },
        )
    };
    watched?;
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("waiting for the command");
        }
    }
    if libc::WIFEXITED(status) {
        Ok((pid as u32, libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Ok((pid as u32, 128 + libc::WTERMSIG(status)))
    } else {
        bail!("the command ended in an unknown way (status {status:#x})")
    }
}
