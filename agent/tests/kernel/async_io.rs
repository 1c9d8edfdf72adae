//! Linux AIO and batched socket calls on the running kernel, checked against programs no
//! one here wrote: fio (Debian) with `ioengine=libaio`, whose own report of operations
//! and bytes must equal copyscope's aio and io_getevents rows for the fio processes, and
//! sendmmsg/recvmmsg made through libc from Python, with known answers. The per-call
//! programs these rows come from need bpf_task_pt_regs (5.15+).

use crate::common;

use std::process::Command;

use common::{agent::require_tool, *};
use serde_json::Value;

/// Why one of the per-call programs is not attached on this kernel, if it is not.
fn batch_missing(hooks: &[&str]) -> Option<String> {
    hooks.iter().find_map(|h| probe_missing("syscalls", h))
}

/// The fio processes (the command and the job it forks).
fn fios(snap: &Value) -> impl Iterator<Item = &Value> {
    snap["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["comm"] == "fio")
}

/// Operations and bytes of one row, summed over every fio process.
fn fio_rows(snap: &Value, op: &str, fd_kind: &str) -> (u64, u64) {
    fios(snap)
        .map(|p| row(p, op, fd_kind))
        .fold((0, 0), |(o, b), r| (o + r.calls, b + r.bytes))
}

/// fio's own count of operations and bytes in one direction.
fn reported(fio: &Value, dir: &str) -> (u64, u64) {
    let j = &fio["jobs"][0][dir];
    (
        j["total_ios"].as_u64().expect("total_ios"),
        j["io_bytes"].as_u64().expect("io_bytes"),
    )
}

/// The fio process that did the I/O (the job), by its rows of `op`.
fn job<'a>(snap: &'a Value, op: &str) -> &'a Value {
    fios(snap)
        .max_by_key(|p| {
            rows(p)
                .iter()
                .filter(|((s, _), _)| s == op)
                .map(|(_, r)| r.bytes)
                .sum::<u64>()
        })
        .expect("a fio process")
}

/// Bytes the fio processes' io_getevents calls returned as completed.
fn fio_completed(snap: &Value) -> u64 {
    fios(snap)
        .map(|p| row(p, "io_getevents", "other").bytes)
        .sum()
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn fio_libaio_direct_reads_match_fios_report() {
    require_kernel!();
    if !require_tool("fio", "fio") {
        return;
    }
    if let Some(why) = batch_missing(&["sys_exit_io_submit", "sys_exit_io_getevents"]) {
        skip!(why);
    }
    let d = scratch("aio-direct");
    // A batch of 8 iocbs per io_submit: each is read from the call's array.
    let (snap, fio) = fio_snapshot(
        "libaio",
        &d,
        "aio",
        &["--rw=read", "--direct=1", "--iodepth_batch_submit=8"],
    );
    let (ops, bytes) = reported(&fio, "read");
    assert_eq!(bytes, 32 << 20, "fio read the whole file");
    assert_eq!(fio_rows(&snap, "aio_read", "file_direct"), (ops, bytes));
    assert_eq!(fio_rows(&snap, "aio_read", "file"), (0, 0));
    assert_eq!(fio_completed(&snap), bytes, "io_getevents' completed bytes");
    let p = job(&snap, "aio_read");
    assert!(num(p, &["direct_io_bytes"]) >= bytes, "{p}");
    // The iocbs are no mode switches of their own; io_submit and io_getevents are.
    assert_eq!(num(p, &["mode_switches"]), 2 * num(p, &["calls"]), "{p}");
    assert!(row(p, "io_submit", "other").calls > 0, "{p}");
    assert_eq!(snap["dropped"]["aio_entries_unread"], 0);
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn fio_libaio_buffered_writes_match_fios_report() {
    require_kernel!();
    if !require_tool("fio", "fio") {
        return;
    }
    if let Some(why) = batch_missing(&["sys_exit_io_submit", "sys_exit_io_getevents"]) {
        skip!(why);
    }
    let d = scratch("aio-buffered");
    let (snap, fio) = fio_snapshot("libaio", &d, "aiow", &["--rw=write"]);
    let (ops, bytes) = reported(&fio, "write");
    assert_eq!(bytes, 32 << 20);
    assert_eq!(fio_rows(&snap, "aio_write", "file"), (ops, bytes));
    assert_eq!(fio_completed(&snap), bytes);
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn python_sendmmsg_and_recvmmsg_count_calls_messages_and_bytes() {
    require_kernel!();
    if !require_tool("python3", "python3") {
        return;
    }
    if let Some(why) = batch_missing(&["sys_exit_sendmmsg", "sys_exit_recvmmsg"]) {
        skip!(why);
    }
    let d = scratch("mmsg-python");
    let out_file = d.join("sent");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mmsg.py");
    let out = Command::new(COPYSCOPE)
        .args(["snapshot", "--json", "--", "python3", script])
        .env("MMSG_OUT", &out_file)
        .env("N", "10")
        .env("ROUNDS", "7")
        .output()
        .expect("running copyscope snapshot -- python3");
    assert_ok(&out, "copyscope snapshot -- python3 mmsg.py");
    let snap: Value = serde_json::from_slice(&out.stdout).expect("snapshot JSON");
    let said = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(said.trim(), "70000 70000", "the script's own count");
    let p = command_process(&snap);
    let call = Row::ok;
    assert_eq!(row(p, "sendmmsg", "socket"), call(7, 70_000), "{p}");
    assert_eq!(row(p, "recvmmsg", "socket"), call(7, 70_000), "{p}");
    assert_eq!(row(p, "sendmmsg_messages", "socket"), call(70, 0), "{p}");
    assert_eq!(row(p, "recvmmsg_messages", "socket"), call(70, 0), "{p}");
}
