//! Asynchronous I/O on the running kernel, checked against a program no one here wrote:
//! fio (Debian) with `ioengine=io_uring` (the uring family) and `ioengine=libaio` (the
//! syscalls family's io_submit and io_getevents). Its own report of operations and bytes
//! must equal copyscope's rows for the fio processes. Batched socket calls (sendmmsg,
//! recvmmsg) are made through libc from Python, with known answers.

mod common;

use std::{path::Path, process::Command};

use common::{agent::require_tool, *};
use serde_json::Value;

/// The uring family's probe, or why this kernel lacks it.
fn uring_missing() -> Option<String> {
    probe_missing("uring", "io_uring_complete")
}

/// `copyscope snapshot --json -- fio ARGS` on a 32 MiB file with io_uring: the snapshot
/// and fio's own JSON report.
fn run_fio(dir: &Path, name: &str, args: &[&str]) -> (Value, Value) {
    run_fio_with(dir, name, "io_uring", args)
}

fn run_fio_with(dir: &Path, name: &str, engine: &str, args: &[&str]) -> (Value, Value) {
    let data = dir.join("data");
    if !data.exists() {
        write_file(&data, 32 << 20);
    }
    let report = dir.join(format!("{name}.json"));
    let out = Command::new(COPYSCOPE)
        .args(["snapshot", "--json", "--", "fio", "--name", name])
        .arg(format!("--filename={}", data.display()))
        .args(["--size=32M", "--bs=64k", "--iodepth=8"])
        .arg(format!("--ioengine={engine}"))
        .args(["--output-format=json"])
        .arg(format!("--output={}", report.display()))
        .args(args)
        .output()
        .expect("running copyscope snapshot -- fio");
    assert_ok(&out, "copyscope snapshot -- fio");
    let snap: Value = serde_json::from_slice(&out.stdout).expect("snapshot JSON");
    let fio: Value = serde_json::from_str(&std::fs::read_to_string(&report).expect("fio's report"))
        .expect("fio's JSON report");
    (snap, fio)
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
    let (snap, fio) = run_fio(&d, "direct", &["--rw=read", "--direct=1"]);
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
    let (snap, fio) = run_fio(&d, "read", &["--rw=read"]);
    let read = reported(&fio, "read");
    assert_eq!(read.1, 32 << 20);
    assert_eq!(fio_rows(&snap, "io_uring_read", "file"), read);
    let p = job(&snap, "io_uring_read");
    assert!(
        num(p, &["cpu_copy_bytes", "to_user"]) >= read.1,
        "buffered io_uring reads are CPU copies: {p}"
    );

    let (snap, fio) = run_fio(&d, "write", &["--rw=write"]);
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
    let (snap, fio) = run_fio(
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

/// Bytes the fio processes' io_getevents calls returned as completed.
fn fio_completed(snap: &Value) -> u64 {
    snap["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["comm"] == "fio")
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
    let d = scratch("aio-direct");
    // A batch of 8 iocbs per io_submit: each is read from the call's array.
    let (snap, fio) = run_fio_with(
        &d,
        "aio",
        "libaio",
        &["--rw=read", "--direct=1", "--iodepth_batch_submit=8"],
    );
    let (ops, bytes) = reported(&fio, "read");
    assert_eq!(bytes, 32 << 20, "fio read the whole file");
    assert_eq!(fio_rows(&snap, "aio_read", "file_direct"), (ops, bytes));
    assert_eq!(fio_completed(&snap), bytes, "io_getevents' completed bytes");
    let p = job(&snap, "aio_read");
    assert!(num(p, &["direct_io_bytes"]) >= bytes, "{p}");
    // The iocbs are no mode switches of their own; io_submit and io_getevents are.
    assert_eq!(num(p, &["mode_switches"]), 2 * num(p, &["calls"]), "{p}");
    assert!(row(p, "io_submit", "other").calls > 0, "{p}");
    assert_eq!(snap["dropped"]["aio_iocbs_unread"], 0);
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn fio_libaio_buffered_writes_match_fios_report() {
    require_kernel!();
    if !require_tool("fio", "fio") {
        return;
    }
    let d = scratch("aio-buffered");
    let (snap, fio) = run_fio_with(&d, "aiow", "libaio", &["--rw=write"]);
    let (ops, bytes) = reported(&fio, "write");
    assert_eq!(bytes, 32 << 20);
    assert_eq!(fio_rows(&snap, "aio_write", "file"), (ops, bytes));
    assert_eq!(fio_completed(&snap), bytes);
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn sendmmsg_and_recvmmsg_count_calls_messages_and_bytes() {
    require_kernel!();
    if !require_tool("python3", "python3") {
        return;
    }
    let d = scratch("mmsg");
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
    let call = |calls, bytes| Row {
        calls,
        bytes,
        errors: 0,
    };
    let messages = |calls| Row {
        calls,
        bytes: 0,
        errors: 0,
    };
    assert_eq!(row(p, "sendmmsg", "socket"), call(7, 70_000), "{p}");
    assert_eq!(row(p, "recvmmsg", "socket"), call(7, 70_000), "{p}");
    assert_eq!(row(p, "sendmmsg_messages", "socket"), messages(70), "{p}");
    assert_eq!(row(p, "recvmmsg_messages", "socket"), messages(70), "{p}");
}
