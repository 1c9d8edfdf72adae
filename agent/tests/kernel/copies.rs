//! copies family on the running kernel: bytes measured where the CPU copies them, cross-
//! checked against the syscalls family on the same workload.

use crate::common;

use common::*;

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn socket_copies_at_the_source_match_the_syscalls() {
    require_kernel!();
    if let Some(why) =
        probe_missing("copies", "socket_recv").or_else(|| probe_missing("copies", "socket_send"))
    {
        skip!(format!(
            "no socket copy probe (sock_*_length tracepoints from 6.12, or fexit/kretprobe on \
             sock_recvmsg/sock_sendmsg): {why}"
        ));
    }
    let d = scratch("copies-tcp");
    let (snap, _) = run_workload(&d, &["tcp", "40", "7000"]);
    let (recv, send) = (
        probe_method(&snap, "copies", "socket_recv"),
        probe_method(&snap, "copies", "socket_send"),
    );
    assert!(
        recv.is_some() && send.is_some(),
        "copyscope probes attached the socket copy probes, the snapshot did not: {:#}",
        snap["probes"]
    );
    assert_eq!(
        snap["cpu_copy_method"]["socket_recv"],
        recv.unwrap().as_str()
    );
    let p = command_process(&snap);
    // Each method against the workload's figure; each skipped program run loses at most
    // one call's bytes (a receive may return the whole stream).
    let s = slack(&snap);
    for (figure, want, per_call) in [
        (
            num(p, &["cpu_copy_at_source", "socket_from_user"]),
            280_000,
            7000,
        ),
        (row(p, "sendto", "socket").bytes, 280_000, 7000),
        (
            num(p, &["cpu_copy_at_source", "socket_to_user"]),
            280_000,
            280_000,
        ),
        (row(p, "recvfrom", "socket").bytes, 280_000, 280_000),
    ] {
        assert_near(s, figure, want, per_call, "socket bytes");
    }
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn sendfile_is_not_counted_as_a_socket_copy() {
    require_kernel!();
    if let Some(why) = probe_missing("copies", "socket_send") {
        skip!(format!("no socket send copy probe on this kernel: {why}"));
    }
    let d = scratch("copies-sendfile");
    let f = d.join("data");
    write_file(&f, 2 << 20);
    let (snap, _) = run_workload(&d, &["sendfile", f.to_str().unwrap()]);
    assert!(
        probe_method(&snap, "copies", "socket_send").is_some(),
        "the snapshot did not attach the socket send probe: {:#}",
        snap["probes"]
    );
    let p = command_process(&snap);
    // sendfile hands page-cache pages to the socket (MSG_SPLICE_PAGES): no copy from user.
    assert_eq!(num(p, &["cpu_copy_at_source", "socket_from_user"]), 0);
    assert_near(
        slack(&snap),
        num(p, &["cpu_copy_at_source", "socket_to_user"]),
        2 << 20,
        2 << 20,
        "the receiver copies",
    );
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn file_read_copies_at_the_source_match_the_syscalls() {
    require_kernel!();
    if let Some(why) = probe_missing("copies", "file_read") {
        skip!(format!(
            "filemap_read cannot be traced here ({why}); file copies are derived from the syscalls"
        ));
    }
    let d = scratch("copies-file");
    let f = d.join("data");
    write_file(&f, 1 << 20);
    let empty = d.join("empty");
    write_file(&empty, 0);
    let (base, _) = run_workload(&d, &["read", empty.to_str().unwrap()]);
    let (snap, _) = run_workload(&d, &["read", f.to_str().unwrap()]);
    let (p, b) = (command_process(&snap), command_process(&base));
    let at_source = num(p, &["cpu_copy_at_source", "file_to_user"])
        - num(b, &["cpu_copy_at_source", "file_to_user"]);
    // The workload reads with a 64 KiB buffer.
    let s = slack_diff(&snap, &base);
    assert_near(s, at_source, 1 << 20, 64 << 10, "file bytes at the source");
    assert_near(
        s,
        diff(p, b, "read", "file").bytes,
        1 << 20,
        64 << 10,
        "file bytes by the syscalls",
    );
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn pipe_copies_at_the_source_match_the_syscalls() {
    require_kernel!();
    if let Some(why) =
        probe_missing("copies", "pipe_read").or_else(|| probe_missing("copies", "pipe_write"))
    {
        skip!(format!(
            "pipe_read/pipe_write cannot be traced here ({why}); pipe copies are derived from the syscalls"
        ));
    }
    let d = scratch("copies-pipe");
    let (snap, _) = run_workload(&d, &["pipe", "100", "3000"]);
    let p = command_process(&snap);
    let s = slack(&snap);
    // Writes are 3000 bytes each; a read returns at most a full pipe (64 KiB).
    for (figure, per_call, what) in [
        (
            num(p, &["cpu_copy_at_source", "pipe_from_user"]),
            3000,
            "pipe_write",
        ),
        (row(p, "write", "pipe").bytes, 3000, "write syscalls"),
        (
            num(p, &["cpu_copy_at_source", "pipe_to_user"]),
            65536,
            "pipe_read",
        ),
        (row(p, "read", "pipe").bytes, 65536, "read syscalls"),
    ] {
        assert_near(s, figure, 300_000, per_call, what);
    }
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn every_copy_figure_names_its_method() {
    require_kernel!();
    let d = scratch("copies-method");
    let (snap, _) = run_workload(&d, &["badfd", "1"]);
    let m = snap["cpu_copy_method"].as_object().unwrap();
    for hook in [
        "file_read",
        "socket_recv",
        "socket_send",
        "pipe_read",
        "pipe_write",
    ] {
        let method = m[hook].as_str().unwrap();
        let attached = probe_method(&snap, "copies", hook);
        assert_eq!(method, attached.as_deref().unwrap_or("syscalls"), "{hook}");
    }
}
