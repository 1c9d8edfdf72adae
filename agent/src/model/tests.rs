//! Tests of the deltas, the derived copies and the rows of a window.

use super::*;
use copyscope_common::{
    CopyStats, FdKind, PagecacheStats, SchedStats, SyscallKey, SyscallStats, syscalls::index_of,
};
use foldhash::{HashMap, HashMapExt as _};

fn key(tgid: u32, name: &str, fin: FdKind, fout: FdKind) -> SyscallKey {
    SyscallKey {
        tgid,
        syscall: index_of(name).unwrap(),
        fd_in: fin as u8,
        fd_out: fout as u8,
        _pad: 0,
    }
}

/// A table as a window holds it: sorted by key.
fn tbl<K: Ord + Copy, V: Tally>(m: &HashMap<K, V>) -> Vec<(K, V)> {
    sorted(m.iter().map(|(k, v)| (*k, *v)).collect())
}

fn win<'a>(rows: &'a [(SyscallKey, SyscallStats)], exited: &'a HashMap<u32, String>) -> Window<'a> {
    Window {
        rows,
        sched: &[],
        pagecache: &[],
        copy: &[],
        exited,
        sources: CopySources::default(),
        include_sched_only: false,
    }
}

fn st(calls: u64, bytes: u64) -> SyscallStats {
    SyscallStats {
        calls,
        bytes,
        errors: 0,
        nanos: calls * 100,
    }
}

#[test]
fn delta_subtracts_and_drops_idle_rows() {
    let k1 = key(1, "read", FdKind::File, FdKind::None);
    let k2 = key(1, "write", FdKind::Socket, FdKind::None);
    let k3 = key(2, "read", FdKind::Pipe, FdKind::None);
    let a = Counts {
        rows: sorted(vec![(k1, st(10, 100)), (k2, st(5, 50))]),
        ..Default::default()
    };
    let b = Counts {
        rows: sorted(vec![(k1, st(15, 160)), (k2, st(5, 50)), (k3, st(1, 1))]),
        ..Default::default()
    };
    let d: HashMap<_, _> = delta(&a, &b).into_iter().collect();
    assert_eq!(
        d[&k1],
        SyscallStats {
            calls: 5,
            bytes: 60,
            errors: 0,
            nanos: 500
        }
    );
    assert!(!d.contains_key(&k2), "unchanged rows are left out");
    assert_eq!(d[&k3].calls, 1);
}

#[test]
fn null_and_zero_devices_are_calls_but_not_copies() {
    // dd if=/dev/zero of=/dev/null: a read that fills memory with zeros and a write
    // that is discarded; neither copies a byte between kernel and user.
    let mut rows = HashMap::new();
    rows.insert(
        key(9, "read", FdKind::Null, FdKind::None),
        st(1000, 1 << 30),
    );
    rows.insert(
        key(9, "write", FdKind::Null, FdKind::None),
        st(1000, 1 << 30),
    );
    rows.insert(key(9, "read", FdKind::Other, FdKind::None), st(1, 32));
    let ps = processes(&win(&tbl(&rows), &HashMap::new()), &|_| Some("dd".into()));
    let p = &ps[0];
    assert_eq!(p.calls, 2001);
    assert_eq!(
        p.cpu_copy_bytes,
        CpuCopy {
            to_user: 32,
            from_user: 0
        }
    );
    assert!(
        p.syscalls
            .iter()
            .any(|r| r.fd_kind == "null" && r.bytes == 1 << 30)
    );
    // The device numbers: MKDEV(1, 3) null, (1, 5) zero, (1, 7) full; (1, 8) random
    // copies its bytes, and (4, 3) is a tty.
    let dev = |major: u32, minor: u32| FdKind::classify_device(major << 20 | minor);
    assert_eq!(
        [dev(1, 3), dev(1, 5), dev(1, 7), dev(1, 8), dev(4, 3)],
        [
            FdKind::Null,
            FdKind::Null,
            FdKind::Null,
            FdKind::Other,
            FdKind::Other
        ]
    );
    assert!(FdKind::is_char_device(0o020666));
    assert!(!FdKind::is_char_device(0o100644));
}

#[test]
fn derived_figures_follow_flow_and_fd_kind() {
    let mut rows = HashMap::new();
    rows.insert(key(7, "read", FdKind::File, FdKind::None), st(4, 4096));
    rows.insert(key(7, "sendto", FdKind::Socket, FdKind::None), st(2, 1000));
    rows.insert(
        key(7, "pread64", FdKind::FileDirect, FdKind::None),
        st(1, 512),
    );
    rows.insert(
        key(7, "sendfile64", FdKind::File, FdKind::Socket),
        st(1, 9000),
    );
    rows.insert(key(7, "splice", FdKind::Pipe, FdKind::Socket), st(3, 300));
    let ps = processes(&win(&tbl(&rows), &HashMap::new()), &|_| Some("app".into()));
    assert_eq!(ps.len(), 1);
    let p = &ps[0];
    assert_eq!(p.comm, "app");
    assert_eq!(p.calls, 11);
    assert_eq!(p.mode_switches, 22);
    assert_eq!(
        p.cpu_copy_bytes,
        CpuCopy {
            to_user: 4096,
            from_user: 1000
        }
    );
    assert_eq!(p.direct_io_bytes, 512);
    assert_eq!(p.zero_copy_bytes, 9300);
    let labels: Vec<_> = p
        .syscalls
        .iter()
        .map(|s| (&*s.syscall, &*s.fd_kind))
        .collect();
    assert!(labels.contains(&("sendfile64", "file->socket")));
    assert!(labels.contains(&("splice", "pipe->socket")));
    assert!(labels.contains(&("pread64", "file_direct")));
}

#[test]
fn exited_processes_keep_their_comm_and_are_marked() {
    let mut rows = HashMap::new();
    rows.insert(key(9, "write", FdKind::Pipe, FdKind::None), st(1, 1));
    let exited = HashMap::from_iter([(9, "short".to_string())]);
    let ps = processes(&win(&tbl(&rows), &exited), &|_| None);
    assert_eq!(ps[0].comm, "short");
    assert!(ps[0].exited);
    let ps = processes(&win(&tbl(&rows), &HashMap::new()), &|_| None);
    assert_eq!(ps[0].comm, "?");
}

#[test]
fn busiest_copier_sorts_first() {
    let mut rows = HashMap::new();
    rows.insert(key(1, "read", FdKind::File, FdKind::None), st(1, 10));
    rows.insert(key(2, "read", FdKind::File, FdKind::None), st(1, 1000));
    let ps = processes(&win(&tbl(&rows), &HashMap::new()), &|_| None);
    assert_eq!(ps.iter().map(|p| p.pid).collect::<Vec<_>>(), vec![2, 1]);
}

#[test]
fn copies_measured_at_the_source_replace_only_their_own_kind() {
    let mut rows = HashMap::new();
    rows.insert(key(3, "read", FdKind::File, FdKind::None), st(1, 1000));
    rows.insert(key(3, "recvfrom", FdKind::Socket, FdKind::None), st(1, 500));
    rows.insert(key(3, "read", FdKind::Other, FdKind::None), st(1, 7));
    rows.insert(key(3, "write", FdKind::Pipe, FdKind::None), st(1, 300));
    let copy = HashMap::from_iter([(
        3,
        CopyStats {
            socket_to_user: 499,
            pipe_from_user: 1,
            file_to_user: 123_456,
            ..Default::default()
        },
    )]);
    let none = HashMap::new();
    let rows = tbl(&rows);
    let copy = tbl(&copy);
    let mut w = win(&rows, &none);
    w.copy = &copy;
    w.sources = CopySources {
        socket_recv: true,
        ..Default::default()
    };
    let p = &processes(&w, &|_| None)[0];
    // Only the socket receive is measured at its source; file, pipe and other stay derived.
    assert_eq!(
        p.cpu_copy_bytes,
        CpuCopy {
            to_user: 1000 + 499 + 7,
            from_user: 300
        }
    );
    assert_eq!(
        p.cpu_copy_bytes_syscalls,
        CpuCopy {
            to_user: 1507,
            from_user: 300
        }
    );
    w.sources = CopySources {
        file_read: true,
        pipe_write: true,
        ..Default::default()
    };
    let p = &processes(&w, &|_| None)[0];
    assert_eq!(
        p.cpu_copy_bytes,
        CpuCopy {
            to_user: 123_456 + 500 + 7,
            from_user: 1
        }
    );
}

#[test]
fn page_cache_hits_are_lookups_minus_misses_never_negative() {
    let r = PagecacheRow::from_stats(&PagecacheStats {
        lookups: 100,
        added: 30,
        write_added: 0,
        mmap_faults: 2,
        dirtied: 1,
    });
    assert_eq!((r.hits, r.misses, r.hit_ratio), (70, 30, Some(0.7)));
    let r = PagecacheRow::from_stats(&PagecacheStats {
        lookups: 10,
        added: 30,
        ..Default::default()
    });
    assert_eq!((r.hits, r.hit_ratio), (0, Some(0.0)));
    assert_eq!(
        PagecacheRow::from_stats(&PagecacheStats::default()).hit_ratio,
        None
    );
}

#[test]
fn pages_added_by_writes_are_not_read_misses() {
    // dd of=FILE: 16,384 pages added, all of them by its writes, and nothing read.
    let r = PagecacheRow::from_stats(&PagecacheStats {
        added: 16_384,
        write_added: 16_384,
        dirtied: 16_384,
        ..Default::default()
    });
    assert_eq!(
        (r.misses, r.added_by_writes, r.hit_ratio),
        (0, 16_384, None)
    );
    // A copy of a cached file: every page of the source found, the copy's pages added
    // by writes.
    let r = PagecacheRow::from_stats(&PagecacheStats {
        lookups: 2048,
        added: 2048,
        write_added: 2048,
        dirtied: 2048,
        ..Default::default()
    });
    assert_eq!((r.hits, r.misses, r.hit_ratio), (2048, 0, Some(1.0)));
}

#[test]
fn sched_only_processes_are_listed_only_when_asked() {
    let sched = HashMap::from_iter([(
        5,
        SchedStats {
            voluntary: 1,
            involuntary: 2,
            in_io: 1,
        },
    )]);
    let none = HashMap::new();
    let sched = tbl(&sched);
    let mut w = win(&[], &none);
    w.sched = &sched;
    assert!(processes(&w, &|_| None).is_empty());
    w.include_sched_only = true;
    let p = &processes(&w, &|_| None)[0];
    assert_eq!(
        p.context_switches,
        SchedRow {
            voluntary: 1,
            involuntary: 2,
            in_io: 1
        }
    );
}

#[test]
fn per_pid_deltas_leave_idle_processes_out() {
    let a = HashMap::from_iter([(
        1,
        SchedStats {
            voluntary: 1,
            involuntary: 1,
            in_io: 0,
        },
    )]);
    let b = HashMap::from_iter([
        (
            1,
            SchedStats {
                voluntary: 1,
                involuntary: 1,
                in_io: 0,
            },
        ),
        (
            2,
            SchedStats {
                voluntary: 4,
                involuntary: 0,
                in_io: 4,
            },
        ),
    ]);
    let d = delta_by_pid(&tbl(&a), &tbl(&b));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0, 2);
    assert_eq!(d[0].1.in_io, 4);
}

#[test]
fn o_direct_is_this_architectures_flag() {
    // 0o40000 on x86-64, 0o200000 on arm64 (where 0o40000 is O_DIRECTORY): the kernel
    // programs classify with the value of the architecture they are built for.
    assert_eq!(copyscope_common::O_DIRECT, libc::O_DIRECT as u32);
    const S_IFREG: u16 = 0o100000;
    assert_eq!(
        FdKind::classify(S_IFREG, libc::O_DIRECT as u32),
        FdKind::FileDirect
    );
    assert_eq!(
        FdKind::classify(S_IFREG, libc::O_DIRECTORY as u32),
        FdKind::File
    );
}
