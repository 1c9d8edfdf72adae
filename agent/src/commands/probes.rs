//! `copyscope probes`: one line per probe, after checking that each required probe runs.

use anyhow::Result;

use crate::{
    loader::{self, LoadOptions, Loaded, ProbeStatus, Reason},
    reason,
};

pub fn run(json: bool) -> Result<i32> {
    let loaded = match loader::load(&LoadOptions::default()) {
        Ok(l) => l,
        // The JSON document says why nothing is attached, as a kind and a sentence, so
        // that a program (the kernel test tier) need not match words.
        Err(e) if json => {
            let doc = serde_json::json!({
                "kernel": loader::kernel_release(),
                "error": { "reason": reason::of_load_error(&e), "message": format!("{e:#}") },
                "probes": [],
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
            eprintln!("copyscope: {e:#}");
            return Ok(1);
        }
        Err(e) => return Err(e),
    };
    let mut probes = loaded.probes.clone();
    check_fired(&loaded, &mut probes);
    if json {
        let doc = serde_json::json!({ "kernel": loaded.kernel, "probes": probes });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("kernel {}", loaded.kernel);
        println!(
            "{:<10} {:<20} {:<16} {:<10} DETAIL",
            "FAMILY", "HOOK", "METHOD", "STATUS"
        );
        for p in &probes {
            let status = match (p.attached, p.required, p.fired) {
                (true, true, Some(false)) => "NO RUNS",
                (true, _, _) => "attached",
                (false, true, _) => "FAILED",
                (false, false, _) => "skipped",
            };
            println!(
                "{:<10} {:<20} {:<16} {:<10} {}",
                p.family,
                p.hook,
                p.method.unwrap_or("-"),
                status,
                p.detail
            );
        }
    }
    let failed = probes.iter().any(|p| p.required && p.reason.is_some());
    Ok(if failed { 1 } else { 0 })
}

/// Make the events the required probes hook (a counted system call, a process that
/// exits) and see, by the kernel's BPF run counts, that each of their programs ran. A
/// program that attached but never runs counts nothing: it is a failure like any other.
/// Without BPF stats (kernels before 5.8) nothing is checked and `fired` stays unset.
fn check_fired(loaded: &Loaded, probes: &mut [ProbeStatus]) {
    let Ok(_stats) = loader::enable_bpf_stats() else {
        log::info!("BPF run-time stats unavailable: not checking that the probes run");
        return;
    };
    let before = loader::program_stats(loaded);
    make_events();
    let after = loader::program_stats_since(&before, loader::program_stats(loaded));
    for p in probes.iter_mut().filter(|p| p.required && p.attached) {
        let runs: u64 = after
            .iter()
            .filter(|s| s.name == p.name)
            .map(|s| s.run_count)
            .sum();
        p.fired = Some(runs > 0);
        if runs == 0 {
            p.reason = Some(Reason::NeverFired);
            p.detail = format!(
                "{} (attached, but {} did not run on the events made for it)",
                p.detail, p.name
            );
        }
    }
}

/// A counted read on a file and a child process that exits.
fn make_events() {
    use std::io::Read as _;
    if let Ok(mut f) = std::fs::File::open("/proc/self/stat") {
        let mut buf = [0u8; 512];
        let _ = f.read(&mut buf);
    }
    // SAFETY: the child only calls _exit, which is async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: leaving the child at once, without running any destructor.
        unsafe { libc::_exit(0) };
    }
    if pid > 0 {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
}
