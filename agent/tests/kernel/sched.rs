//! sched family on the running kernel.

use crate::common;

use common::*;

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn sleeping_in_read_counts_voluntary_switches_in_io() {
    require_kernel!();
    if let Some(why) = probe_missing("sched", "sched_switch") {
        skip!(format!("no sched:sched_switch: {why}"));
    }
    let d = scratch("sched-sleep");
    let (snap, _) = run_workload(&d, &["pipe-sleep", "60"]);
    let p = command_process(&snap);
    let in_io = num(p, &["context_switches", "in_io"]);
    let vol = num(p, &["context_switches", "voluntary"]);
    // Each of the 60 reads finds the pipe empty and sleeps at least once.
    assert!(in_io >= 60, "{in_io} switches in I/O: {p:#}");
    // The writer's 60 sleeps are voluntary too, but not in a counted syscall.
    assert!(vol >= 120, "{vol} voluntary switches");
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn competing_for_one_cpu_counts_involuntary_switches() {
    require_kernel!();
    if let Some(why) = probe_missing("sched", "sched_switch") {
        skip!(format!("no sched:sched_switch: {why}"));
    }
    let d = scratch("sched-spin");
    let (snap, _) = run_workload(&d, &["spin", "400"]);
    let p = command_process(&snap);
    let invol = num(p, &["context_switches", "involuntary"]);
    // Two runnable threads on one CPU for 400 ms: the scheduler preempts them every few ms.
    assert!(invol >= 10, "{invol} involuntary switches: {p:#}");
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn a_family_turned_off_is_not_attached_and_the_rest_still_counts() {
    require_kernel!();
    let d = scratch("sched-off");
    let (snap, result) = run_workload_with(
        &d,
        &["pipe-sleep", "20"],
        &[("COPYSCOPE_DISABLE_FAMILIES", "sched,copies")],
    );
    let probes = snap["probes"].as_array().expect("probes");
    for p in probes
        .iter()
        .filter(|p| p["family"] == "sched" || p["family"] == "copies")
    {
        assert_eq!(p["attached"], false, "{p}");
    }
    assert!(
        probes
            .iter()
            .any(|p| p["family"] == "syscalls" && p["attached"] == true),
        "the syscalls family stays on"
    );
    let p = command_process(&snap);
    assert_eq!(num(p, &["context_switches", "voluntary"]), 0, "{p:#}");
    let reads = row(p, "read", "pipe");
    assert_eq!(reads.calls, result["reads"].as_u64().unwrap(), "{p:#}");
}
