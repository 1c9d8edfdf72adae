//! Tests of the rules against workloads made up row by row.

use super::{
    flows::{READS, WRITES},
    *,
};
use crate::model::{PagecacheRow, SyscallRow};

const CAL: Calibration = Calibration {
    memcpy_bytes_per_second: 10e9,
    syscall_seconds: 100e-9,
};
const W: f64 = 10.0;
const M: u64 = 1 << 20;

/// A workload from (syscall, fd kind, calls, bytes) rows over a 10 s window.
fn workload(rows: &[(&str, &str, u64, u64)]) -> ProcessRow {
    let mut p = ProcessRow::empty(1, "app".into(), false);
    for (s, k, calls, bytes) in rows {
        p.syscalls.push(SyscallRow {
            syscall: s.to_string().into(),
            fd_kind: k.to_string().into(),
            calls: *calls,
            bytes: *bytes,
            errors: 0,
            seconds: 0.0,
        });
        p.calls += calls;
        if READS.contains(s) {
            p.cpu_copy_bytes.to_user += bytes;
        } else if WRITES.contains(s) {
            p.cpu_copy_bytes.from_user += bytes;
        } else {
            p.zero_copy_bytes += bytes;
        }
    }
    p
}

fn patterns(p: &ProcessRow) -> Vec<String> {
    advise(p, W, &[], &CAL, &Thresholds::default())
        .iter()
        .map(|f| f.pattern.clone())
        .collect()
}

#[test]
fn file_to_socket_through_user_memory_wants_sendfile() {
    // A static file server: 100 MiB read from files in 64 KiB reads, written to sockets.
    let p = workload(&[
        ("read", "file", 1600, 100 * M),
        ("write", "socket", 1600, 100 * M),
    ]);
    let f = advise(&p, W, &[], &CAL, &Thresholds::default());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].pattern, "sendfile");
    // Two copies of 100 MiB at 10 GB/s plus 1600 read() calls at 100 ns, over 10 s.
    let want = (2.0 * 100.0 * M as f64 / 10e9 + 1600.0 * 100e-9) / W;
    assert!((f[0].estimated_cpu_seconds_saved_per_second - want).abs() < 1e-12);
    assert_eq!(
        f[0].evidence.figures["file_read_bytes_per_second"],
        10.0 * M as f64
    );
    assert!(f[0].evidence.summary.contains("10.0 MiB/s"));
    // sendto and sendmsg count as socket writes too.
    let p = workload(&[
        ("pread64", "file", 100, 50 * M),
        ("sendmsg", "socket", 100, 30 * M),
        ("sendto", "socket", 100, 20 * M),
    ]);
    assert_eq!(patterns(&p), ["sendfile"]);
}

#[test]
fn reading_files_and_writing_small_logs_is_not_flagged() {
    let p = workload(&[
        ("read", "file", 10_000, 500 * M),
        ("write", "file", 1000, M / 10),
        ("write", "socket", 100, M / 100),
    ]);
    assert!(patterns(&p).is_empty(), "{:?}", patterns(&p));
}

#[test]
fn small_flows_are_below_the_rate_threshold() {
    let p = workload(&[("read", "file", 10, M), ("write", "socket", 10, M)]);
    assert!(patterns(&p).is_empty());
    let th = Thresholds {
        min_bytes_per_second: 1000.0,
        ..Thresholds::default()
    };
    assert_eq!(advise(&p, W, &[], &CAL, &th).len(), 1);
}

#[test]
fn relays_want_splice() {
    let proxy = workload(&[
        ("recvfrom", "socket", 1000, 80 * M),
        ("sendto", "socket", 1000, 80 * M),
    ]);
    let f = advise(&proxy, W, &[], &CAL, &Thresholds::default());
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].pattern, "splice_socket_to_socket");
    let want = 2.0 * 80.0 * M as f64 / 10e9 / W;
    assert!((f[0].estimated_cpu_seconds_saved_per_second - want).abs() < 1e-12);
    let sink = workload(&[
        ("read", "socket", 1000, 80 * M),
        ("write", "file", 1000, 70 * M),
    ]);
    assert_eq!(patterns(&sink), ["splice_socket_to_file"]);
}

#[test]
fn a_proxy_already_using_splice_is_reported_as_zero_copy() {
    let p = workload(&[
        ("splice", "socket->pipe", 2000, 100 * M),
        ("splice", "pipe->socket", 2000, 100 * M),
        ("recvfrom", "socket", 100, M / 10),
        ("sendto", "socket", 100, M / 10),
    ]);
    let f = advise(&p, W, &[], &CAL, &Thresholds::default());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].pattern, "zero_copy");
    assert_eq!(f[0].estimated_cpu_seconds_saved_per_second, 0.0);
    assert!(f[0].evidence.figures["zero_copy_share"] > 0.99);
}

#[test]
fn file_to_file_wants_copy_file_range() {
    let p = workload(&[
        ("read", "file", 800, 50 * M),
        ("write", "file", 800, 50 * M),
    ]);
    assert_eq!(patterns(&p), ["copy_file_range"]);
}

#[test]
fn a_flow_is_claimed_by_one_pattern_only() {
    // Files to sockets and nothing else: one sendfile finding, no splice or
    // copy_file_range from the same bytes.
    let p = workload(&[
        ("read", "file", 800, 50 * M),
        ("write", "socket", 800, 50 * M),
        ("recvfrom", "socket", 10, M / 100),
    ]);
    assert_eq!(patterns(&p), ["sendfile"]);
    // A proxy that also reads a few files: the relay wins the socket writes.
    let p = workload(&[
        ("recvfrom", "socket", 800, 90 * M),
        ("sendto", "socket", 800, 90 * M),
        ("read", "file", 80, 9 * M),
    ]);
    assert_eq!(patterns(&p), ["splice_socket_to_socket"]);
}

#[test]
fn mmap_and_write_to_a_socket_wants_sendfile() {
    let mut p = workload(&[("write", "socket", 400, 40 * M)]);
    p.pagecache.mmap_faults = 40 * M / 4096;
    let f = advise(&p, W, &[], &CAL, &Thresholds::default());
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].pattern, "mmap_sendfile");
    assert!(f[0].estimated_cpu_seconds_saved_per_second > 0.0);
}

#[test]
fn streamed_large_files_with_a_poor_hit_ratio_want_direct_io() {
    let mut p = workload(&[("read", "file", 4000, 400 * M)]);
    p.pagecache = PagecacheRow::from_stats(&copyscope_common::PagecacheStats {
        lookups: 400 * M / 4096,
        added: 390 * M / 4096,
        write_added: 0,
        mmap_faults: 0,
        dirtied: 0,
    });
    let sizes = [2 * M, 3 * 1024 * M, 700 * M];
    let f = advise(&p, W, &sizes, &CAL, &Thresholds::default());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].pattern, "direct_io");
    // The smallest large open file is 700 MiB: directio 512m sends it and the 3 GiB one
    // direct and leaves the 2 MiB file cached.
    assert_eq!(
        f[0].evidence.figures["suggested_directio_bytes"],
        512.0 * M as f64
    );
    assert!(f[0].recommendation.contains("directio 512m"));
    // A well-cached workload is not flagged.
    p.pagecache = PagecacheRow::from_stats(&copyscope_common::PagecacheStats {
        lookups: 400 * M / 4096,
        added: 4 * M / 4096,
        mmap_faults: 0,
        dirtied: 0,
        write_added: 0,
    });
    assert!(patterns(&p).is_empty());
    // A writer whose pages were all added by its writes (dd of=FILE, cp of a cached
    // file) reads from the cache: not flagged, however many pages it added.
    p.pagecache = PagecacheRow::from_stats(&copyscope_common::PagecacheStats {
        lookups: 400 * M / 4096,
        added: 800 * M / 4096,
        write_added: 800 * M / 4096,
        mmap_faults: 0,
        dirtied: 800 * M / 4096,
    });
    assert!(patterns(&p).is_empty(), "{:?}", patterns(&p));
}

#[test]
fn findings_under_the_minimum_saving_are_marked_and_zero_copy_never_is() {
    // A cp of an 8 MiB file in 4 ms: read + write, file to file.
    let p = workload(&[("read", "file", 128, 8 * M), ("write", "file", 128, 8 * M)]);
    let f = advise(&p, 0.004, &[], &CAL, &Thresholds::default());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].pattern, "copy_file_range");
    assert!(
        !f[0].below_threshold,
        "4 GiB/s of copies save more than 0.1% of a CPU"
    );
    assert!(
        f[0].evidence.summary.ends_with("over 4.0 ms"),
        "{}",
        f[0].evidence.summary
    );
    let th = Thresholds {
        min_cpu_saved: 10.0,
        ..Thresholds::default()
    };
    let f = advise(&p, 0.004, &[], &CAL, &th);
    assert!(f[0].below_threshold, "{f:?}");
    let zero = workload(&[("sendfile64", "file->socket", 10, 400 * M)]);
    let f = advise(&zero, W, &[], &CAL, &th);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].pattern, "zero_copy");
    assert!(!f[0].below_threshold);
}

#[test]
fn large_sends_from_user_memory_want_msg_zerocopy() {
    // 200 MiB of computed data sent in 64 KiB sends: one copy each, into the socket.
    let p = workload(&[
        ("sendmsg", "socket", 1600, 100 * M),
        ("write", "socket", 1600, 100 * M),
    ]);
    let f = advise(&p, W, &[], &CAL, &Thresholds::default());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].pattern, "msg_zerocopy");
    assert_eq!(recommendation_id(&f[0].pattern), "msg_zerocopy");
    let want = 200.0 * M as f64 / 10e9 / W;
    assert!((f[0].estimated_cpu_seconds_saved_per_second - want).abs() < 1e-12);
    assert_eq!(
        f[0].evidence.figures["socket_write_bytes_per_call"],
        65536.0
    );
    assert!(f[0].evidence.summary.contains("64.0 KiB per call"), "{f:?}");
    // Small sends (a copy is cheaper than pinning and a completion): not flagged.
    let small = workload(&[("sendto", "socket", 100_000, 400 * M)]);
    assert!(patterns(&small).is_empty(), "{:?}", patterns(&small));
}

#[test]
fn msg_zerocopy_gives_way_to_sendfile_and_splice_and_skips_zero_copy_sends() {
    // Data read from files and sent: sendfile saves both copies, it alone is advised.
    let p = workload(&[
        ("read", "file", 1600, 100 * M),
        ("sendto", "socket", 1600, 100 * M),
    ]);
    assert_eq!(patterns(&p), ["sendfile"]);
    // A relay: splice.
    let p = workload(&[
        ("recvfrom", "socket", 1600, 100 * M),
        ("sendto", "socket", 1600, 100 * M),
    ]);
    assert_eq!(patterns(&p), ["splice_socket_to_socket"]);
    // Mapped files: sendfile.
    let mut p = workload(&[("write", "socket", 400, 40 * M)]);
    p.pagecache.mmap_faults = 40 * M / 4096;
    assert_eq!(patterns(&p), ["mmap_sendfile"]);
    // Twice the file data sent: sendfile for the matched half, MSG_ZEROCOPY for the rest.
    let p = workload(&[
        ("read", "file", 800, 50 * M),
        ("sendto", "socket", 1600, 100 * M),
    ]);
    let f = advise(&p, W, &[], &CAL, &Thresholds::default());
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(f[1].pattern, "msg_zerocopy");
    assert_eq!(
        f[1].evidence.figures["copied_bytes_avoidable_per_second"],
        5.0 * M as f64
    );
    // Sends made with MSG_ZEROCOPY already are zero-copy, not socket writes.
    let p = workload(&[
        ("sendmsg_zerocopy", "socket", 1600, 100 * M),
        ("sendto_zerocopy", "socket", 1600, 100 * M),
    ]);
    assert_eq!(patterns(&p), ["zero_copy"]);
}

#[test]
fn o_direct_reads_through_io_uring_or_aio_follow_the_advice_already() {
    for op in ["io_uring_read", "aio_read"] {
        let mut p = ProcessRow::empty(1, "db".into(), false);
        p.syscalls.push(SyscallRow {
            syscall: op.to_string().into(),
            fd_kind: "file_direct".to_string().into(),
            calls: 3200,
            bytes: 400 * M,
            errors: 0,
            seconds: 0.0,
        });
        p.direct_io_bytes = 400 * M;
        let th = Thresholds {
            min_cpu_saved: 10.0,
            ..Thresholds::default()
        };
        let f = advise(&p, W, &[], &CAL, &th);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].pattern, "direct_io_async");
        assert_eq!(recommendation_id(&f[0].pattern), "none");
        assert_eq!(f[0].estimated_cpu_seconds_saved_per_second, 0.0);
        assert!(!f[0].below_threshold);
        assert_eq!(
            f[0].evidence.figures["direct_io_bytes_per_second"],
            40.0 * M as f64
        );
        assert!(f[0].evidence.summary.contains("40.0 MiB/s"), "{f:?}");
    }
    // Buffered io_uring reads are not direct I/O.
    let mut p = ProcessRow::empty(1, "db".into(), false);
    p.syscalls.push(SyscallRow {
        syscall: "io_uring_read".to_string().into(),
        fd_kind: "file".to_string().into(),
        calls: 3200,
        bytes: 400 * M,
        errors: 0,
        seconds: 0.0,
    });
    assert!(patterns(&p).is_empty(), "{:?}", patterns(&p));
}

#[test]
fn the_rules_mirror_the_readme_table_with_stable_ids() {
    let readme = include_str!("../../../README.md");
    let table = &readme[readme.find("## The zero-copy advisor").unwrap()..];
    let table = &table[..table.find("\n\n\"Similar").unwrap()];
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| `")).collect();
    assert_eq!(rows.len(), RULES.len(), "{rows:?}");
    for (rule, row) in RULES.iter().zip(&rows) {
        assert!(
            row.starts_with(&format!("| `{}` | `{}` |", rule.pattern, rule.id)),
            "{row}"
        );
    }
    let patterns: std::collections::BTreeSet<_> = RULES.iter().map(|r| r.pattern).collect();
    assert_eq!(patterns.len(), RULES.len(), "one rule per pattern");
    // The rotation in `advise` moves these three.
    assert_eq!(
        RULES[..3].iter().map(|r| r.pattern).collect::<Vec<_>>(),
        [
            "sendfile",
            "splice_socket_to_socket",
            "splice_socket_to_file"
        ]
    );
    assert_eq!(recommendation_id("no_such_pattern"), "no_such_pattern");
}

#[test]
fn windows_under_a_second_are_said_in_milliseconds() {
    assert_eq!(span(0.0000004), "0.0 ms");
    assert_eq!(span(0.0035), "3.5 ms");
    assert_eq!(span(0.25), "250 ms");
    assert_eq!(span(1.0), "1.0 s");
    assert_eq!(span(12.34), "12.3 s");
}

#[test]
fn directio_threshold_defaults_to_4m() {
    assert_eq!(directio_threshold(&[]), 4 * M);
    assert_eq!(directio_threshold(&[100, M]), 4 * M);
    assert_eq!(directio_threshold(&[5 * M]), 4 * M);
    assert_eq!(directio_threshold(&[64 * M + 1, 1024 * M]), 64 * M);
}

#[test]
fn direct_io_and_zero_copy_calls_are_not_copies() {
    let p = workload(&[
        ("read", "file_direct", 100, 100 * M),
        ("write", "socket", 100, 100 * M),
    ]);
    assert!(!patterns(&p).iter().any(|x| x == "sendfile"));
}

#[test]
fn thresholds_are_checked() {
    assert!(Thresholds::default().check().is_ok());
    for bad in [
        Thresholds {
            min_ratio: 1.5,
            ..Thresholds::default()
        },
        Thresholds {
            min_ratio: 0.0,
            ..Thresholds::default()
        },
        Thresholds {
            min_bytes_per_second: -1.0,
            ..Thresholds::default()
        },
        Thresholds {
            zero_copy_share: f64::NAN,
            ..Thresholds::default()
        },
    ] {
        assert!(bad.check().is_err(), "{bad:?}");
    }
}
