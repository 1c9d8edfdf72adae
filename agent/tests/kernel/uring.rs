//! uring family on the running kernel, checked against a program no one here wrote: fio
//! (Debian) with `ioengine=io_uring`. Its own report of operations and bytes must equal
//! copyscope's io_uring rows for the fio processes.

use crate::common;

use common::{agent::require_tool, *};
use serde_json::Value;

/// The uring family's probe, or why this kernel lacks it.
fn uring_missing() -> Option<String> {
    probe_missing("uring", "io_uring_complete")
}

/// Operations and bytes of one io_uring row, summed over every fio process (the command
/// and the job it forks).
fn fio_rows(snap: &Value, op: &str, fd_kind: &str) -> (u64, u64) {
    let mut ops = 0;
    let mut bytes = 0;
    for p in snap["processes"].as_array().unwrap() {
        if p["comm"] != "fio" {
            continue;
        }
        let r = row(p, op, fd_kind);
        ops += r.calls;
        bytes += r.bytes;
    }
    (ops, bytes)
}

/// fio's own count of operations and bytes in one direction.
fn reported(fio: &Value, dir: &str) -> (u64, u64) {
    let j = &fio["jobs"][0][dir];
    (
        j["total_ios"].as_u64().expect("total_ios"),
        j["io_bytes"].as_u64().expect("io_bytes"),
    )
}

/// The fio process that did the I/O (the job), by its io_uring rows.
fn job<'a>(snap: &'a Value, op: &str) -> &'a Value {
    snap["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["comm"] == "fio")
        .max_by_key(|p| {
            rows(p)
                .iter()
                .filter(|((s, _), _)| s == op)
                .map(|(_, r)| r.bytes)
                .sum::<u64>()
        })
        .expect("a fio process")
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn fio_io_uring_direct_reads_match_fios_report() {
    require_kernel!();
    if !require_tool("fio", "fio") {
        return;
    }
    if let Some(why) = uring_missing() {
        skip!(why);
    }
    let d = scratch("uring-direct");
    let (snap, fio) = fio_snapshot("io_uring", &d, "direct", &["--rw=read", "--direct=1"]);
    let (ops, bytes) = reported(&fio, "read");
    assert_eq!(bytes, 32 << 20, "fio read the whole file");
    assert_eq!(
        fio_rows(&snap, "io_uring_read", "file_direct"),
        (ops, bytes)
    );
    assert_eq!(fio_rows(&snap, "io_uring_read", "file"), (0, 0));
    let p = job(&snap, "io_uring_read");
    // O_DIRECT: DMA into fio's buffers, no CPU copy; the operations are no mode switches
    // of their own (their io_uring_enter calls are).
    assert!(num(p, &["direct_io_bytes"]) >= bytes, "{p}");
    assert_eq!(num(p, &["mode_switches"]), 2 * num(p, &["calls"]), "{p}");
    assert!(row(p, "io_uring_enter", "other").calls > 0, "{p}");
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn fio_io_uring_buffered_reads_and_writes_match_fios_report() {
    require_kernel!();
    if !require_tool("fio", "fio") {
        return;
    }
    if let Some(why) = uring_missing() {
        skip!(why);
    }
    let d = scratch("uring-buffered");
    let (snap, fio) = fio_snapshot("io_uring", &d, "read", &["--rw=read"]);
    let read = reported(&fio, "read");
    assert_eq!(read.1, 32 << 20);
    assert_eq!(fio_rows(&snap, "io_uring_read", "file"), read);
    let p = job(&snap, "io_uring_read");
    assert!(
        num(p, &["cpu_copy_bytes", "to_user"]) >= read.1,
        "buffered io_uring reads are CPU copies: {p}"
    );

    let (snap, fio) = fio_snapshot("io_uring", &d, "write", &["--rw=write"]);
    let written = reported(&fio, "write");
    assert_eq!(written.1, 32 << 20);
    assert_eq!(fio_rows(&snap, "io_uring_write", "file"), written);
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn fio_io_uring_sqpoll_reads_belong_to_fio_with_few_submissions() {
    require_kernel!();
    if !require_tool("fio", "fio") {
        return;
    }
    if let Some(why) = uring_missing() {
        skip!(why);
    }
    let d = scratch("uring-sqpoll");
    let (snap, fio) = fio_snapshot(
        "io_uring",
        &d,
        "sqpoll",
        &["--rw=read", "--direct=1", "--sqthread_poll=1"],
    );
    let (ops, bytes) = reported(&fio, "read");
    // The SQPOLL thread submits and completes: a thread of fio's job process.
    assert_eq!(
        fio_rows(&snap, "io_uring_read", "file_direct"),
        (ops, bytes)
    );
    let enters: u64 = snap["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["comm"] == "fio")
        .map(|p| row(p, "io_uring_enter", "other").calls)
        .sum();
    assert!(
        enters * 10 < ops,
        "with SQPOLL, far fewer io_uring_enter calls ({enters}) than operations ({ops})"
    );
}
