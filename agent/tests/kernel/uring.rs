//! uring family on the running kernel, checked against a program no one here wrote: fio
//! (Debian) with `ioengine=io_uring`. Its own report of operations and bytes must equal
//! copyscope's io_uring rows for the fio processes. Sends and receives on sockets, which
//! fio does not make through io_uring, are checked against the completions the kernel
//! gave the workload.

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

/// `copyscope-workload uring-socket`: io_uring SENDs and RECVs over loopback TCP, with the
/// ring's own SQPOLL thread (`sqpoll`) or without. The operations and bytes the kernel's
/// completions reported are copyscope's send and receive rows, on sockets.
fn uring_socket(sqpoll: bool) {
    const COUNT: u64 = 50;
    const SIZE: u64 = 65536;
    let d = scratch(if sqpoll {
        "uring-socket-sqpoll"
    } else {
        "uring-socket"
    });
    let mut args = vec![
        "uring-socket".to_string(),
        COUNT.to_string(),
        SIZE.to_string(),
    ];
    if sqpoll {
        args.push("sqpoll".into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (snap, res) = run_workload(&d, &args);
    let p = process(&snap, res["pid"].as_u64().unwrap());
    let s = slack(&snap);
    let n = |k: &str| res[k].as_u64().unwrap_or_else(|| panic!("{k} in {res}"));
    assert_eq!((n("recvs"), n("received")), (COUNT, COUNT * SIZE), "{res}");
    assert_eq!(n("sent"), COUNT * SIZE, "{res}");
    assert_counted(
        s,
        row(p, "io_uring_send", "socket"),
        Row::ok(n("sends"), n("sent")),
        SIZE,
    );
    assert_counted(
        s,
        row(p, "io_uring_recv", "socket"),
        Row::ok(n("recvs"), n("received")),
        SIZE,
    );
    // Nothing of it counted as another operation, nor as a socket system call.
    for op in ["io_uring_read", "io_uring_write", "io_uring_send_zc"] {
        assert_eq!(row(p, op, "socket"), Row::default(), "{op}: {p}");
    }
    for call in ["sendto", "recvfrom", "sendmsg", "recvmsg", "read", "write"] {
        assert_eq!(row(p, call, "socket"), Row::default(), "{call}: {p}");
    }
    // A send from user memory and a receive into it: CPU copies both ways.
    assert!(
        num(p, &["cpu_copy_bytes", "from_user"]) >= n("sent"),
        "io_uring sends copy from user memory: {p}"
    );
    assert!(
        num(p, &["cpu_copy_bytes", "to_user"]) >= n("received"),
        "io_uring receives copy to user memory: {p}"
    );
    let enters = row(p, "io_uring_enter", "other").calls;
    if sqpoll {
        // Each submit waits for its completion: an io_uring_enter to wait, but none
        // needed to submit.
        assert!(enters <= n("submits"), "{enters} io_uring_enter calls: {p}");
    } else {
        assert_near(s, enters, n("submits"), 1, "io_uring_enter calls");
    }
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn uring_socket_sends_and_receives_match_the_completions() {
    require_kernel!();
    if let Some(why) = uring_missing() {
        skip!(why);
    }
    uring_socket(false);
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn uring_socket_sends_and_receives_through_sqpoll_belong_to_the_process() {
    require_kernel!();
    if let Some(why) = uring_missing() {
        skip!(why);
    }
    uring_socket(true);
}
