//! A fixed two-second window of a busy host, for the drawing and key tests.

use std::collections::BTreeMap;

use crate::{
    advisor::{Calibration, Evidence, Finding},
    model::{PagecacheRow, ProbeRow, ProcessAdvice, ProcessRow, SchedRow, Snapshot},
    testing::RowBuilder,
};

/// When the fixture window ended (Unix seconds); drawing tests use it as "now" too.
pub const END: f64 = 1_795_000_000.0;

struct P {
    pid: u32,
    comm: &'static str,
    container: Option<&'static str>,
    /// (syscall, fd kind, calls, bytes)
    rows: Vec<(&'static str, &'static str, u64, u64)>,
    sched: (u64, u64, u64),
    cache: (u64, u64),
}

fn process(p: P) -> ProcessRow {
    let mut b = RowBuilder::new(p.pid, p.comm).seconds_per_call(2e-6);
    for (syscall, fd_kind, calls, bytes) in p.rows {
        b = b.syscall(syscall, fd_kind, calls, bytes);
    }
    let mut r = b.build();
    r.container_id = p.container.map(str::to_string);
    r.context_switches = SchedRow {
        voluntary: p.sched.0,
        involuntary: p.sched.1,
        in_io: p.sched.2,
    };
    let (lookups, misses) = p.cache;
    r.pagecache = PagecacheRow::from_stats(&copyscope_common::PagecacheStats {
        lookups,
        added: misses,
        write_added: 0,
        mmap_faults: 0,
        dirtied: 0,
    });
    r
}

fn advice(pid: u32, comm: &str, pattern: &str, saved: f64, summary: &str) -> ProcessAdvice {
    ProcessAdvice {
        pid: Some(pid),
        comm: comm.into(),
        container_id: None,
        finding: Finding {
            pattern: pattern.into(),
            recommendation: match pattern {
                "sendfile" => "serve files with sendfile() (nginx: sendfile on)".into(),
                "direct_io" => "read huge streamed files with O_DIRECT and async I/O".into(),
                "copy_file_range" => "copy files with copy_file_range()".into(),
                _ => "keep it: the bytes move zero-copy".into(),
            },
            evidence: Evidence {
                window_seconds: 2.0,
                summary: summary.into(),
                figures: BTreeMap::from([("file_read_bytes_per_second".into(), 2.0e8)]),
            },
            estimated_cpu_seconds_saved_per_second: saved,
            below_threshold: false,
        },
    }
}

pub fn snapshot() -> Snapshot {
    const MB: u64 = 1_000_000;
    let processes = vec![
        process(P {
            pid: 4211,
            comm: "nginx",
            container: Some("3f2a9c1e4b7d"),
            rows: vec![
                ("read", "file", 6400, 400 * MB),
                ("write", "socket", 6400, 400 * MB),
                ("recvfrom", "socket", 900, 900_000),
            ],
            sched: (1200, 40, 300),
            cache: (97_000, 1_000),
        }),
        process(P {
            pid: 4212,
            comm: "nginx",
            container: Some("3f2a9c1e4b7d"),
            rows: vec![
                ("read", "file", 1600, 100 * MB),
                ("write", "socket", 1600, 100 * MB),
            ],
            sched: (300, 10, 80),
            cache: (24_000, 500),
        }),
        process(P {
            pid: 1880,
            comm: "postgres",
            container: None,
            rows: vec![("pread64", "file", 30_000, 240 * MB)],
            sched: (9000, 120, 8800),
            cache: (58_000, 52_000),
        }),
        process(P {
            pid: 2301,
            comm: "haproxy",
            container: Some("a81c55d0e912"),
            rows: vec![
                ("splice", "socket->pipe", 5000, 300 * MB),
                ("splice", "pipe->socket", 5000, 300 * MB),
            ],
            sched: (2500, 5, 2400),
            cache: (0, 0),
        }),
        process(P {
            pid: 3310,
            comm: "rsync",
            container: None,
            rows: vec![
                ("read", "file", 2000, 130 * MB),
                ("write", "file", 2000, 130 * MB),
            ],
            sched: (40, 300, 20),
            cache: (32_000, 31_500),
        }),
        process(P {
            pid: 990,
            comm: "sshd",
            container: None,
            rows: vec![("read", "other", 120, 9000), ("write", "socket", 120, 9500)],
            sched: (240, 0, 120),
            cache: (0, 0),
        }),
    ];
    let mut exited = process(P {
        pid: 5120,
        comm: "python3",
        container: None,
        rows: vec![("read", "file", 10, 40_960)],
        sched: (3, 1, 0),
        cache: (10, 10),
    });
    exited.exited = true;
    let mut processes = processes;
    processes.push(exited);
    // The agent knows the proxy's pod (run --kube-node).
    for p in processes.iter_mut().filter(|p| p.comm == "haproxy") {
        p.pod = Some(crate::model::PodRef {
            pod: "edge-7d9f".into(),
            namespace: "ingress".into(),
            container: "haproxy".into(),
        });
    }
    Snapshot {
        duration_seconds: 2.0,
        end_unix_seconds: END,
        host: "node-a".into(),
        kernel: "6.18.44-cloud-amd64".into(),
        probes: [
            ("syscalls", "sys_enter", Some("tp_btf")),
            ("syscalls", "sys_exit", Some("raw_tracepoint")),
            ("sched", "sched_switch", Some("tracepoint")),
            ("pagecache", "lookup", Some("tracepoint")),
            ("copies", "file_read", None),
        ]
        .into_iter()
        .map(|(family, hook, method)| ProbeRow {
            name: format!("{family}_{hook}"),
            family: family.into(),
            hook: hook.into(),
            method: method.map(str::to_string),
            attached: method.is_some(),
        })
        .collect(),
        processes,
        dropped: BTreeMap::from([
            ("program_runs_missed".into(), 0),
            ("syscall_stats_full".into(), 0),
            ("inflight_spilled".into(), 3),
        ]),
        cpu_copy_method: BTreeMap::from([
            ("file_read".into(), "syscalls".into()),
            ("socket_send".into(), "tracepoint".into()),
        ]),
        bpf_stats: vec![],
        command: None,
        calibration: Some(Calibration {
            memcpy_bytes_per_second: 8.0e9,
            syscall_seconds: 1.5e-7,
        }),
        advice: vec![
            advice(
                4211,
                "nginx",
                "sendfile",
                0.112,
                "reads 200.0 MB/s from files and writes 200.0 MB/s to sockets",
            ),
            advice(
                1880,
                "postgres",
                "direct_io",
                0.031,
                "reads 120.0 MB/s of files with a 10% page-cache hit ratio",
            ),
            advice(
                4212,
                "nginx",
                "sendfile",
                0.028,
                "reads 50.0 MB/s from files and writes 50.0 MB/s to sockets",
            ),
            advice(
                3310,
                "rsync",
                "copy_file_range",
                0.017,
                "reads 65.0 MB/s from files and writes 65.0 MB/s to files",
            ),
            advice(
                2301,
                "haproxy",
                "zero_copy",
                0.0,
                "moves 300.0 MB/s with splice, 100% of its bytes",
            ),
        ],
    }
}
