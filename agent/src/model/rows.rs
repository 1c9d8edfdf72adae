//! Per-process rows built from a window of counts: the syscalls, the copies derived
//! from them or measured at their source, scheduling and the page cache.

use std::borrow::Cow;

use copyscope_common::{
    CopyStats, FdKind, PagecacheStats, SchedStats, SyscallKey, SyscallStats,
    syscalls::{Flow, SYSCALLS},
};
use foldhash::HashMap;

use super::{CpuCopy, PagecacheRow, ProcessRow, SchedRow, SyscallRow};

/// The fd-kind label of a row: `IN` or `IN->OUT`, built once per pair of kinds.
pub fn fd_label(key: &SyscallKey) -> Cow<'static, str> {
    static PAIRS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        (0..FdKind::COUNT * FdKind::COUNT)
            .map(|i| {
                let fin = FdKind::from_u8((i / FdKind::COUNT) as u8);
                let fout = FdKind::from_u8((i % FdKind::COUNT) as u8);
                format!("{}->{}", fin.name(), fout.name())
            })
            .collect()
    });
    let fin = FdKind::from_u8(key.fd_in);
    let fout = FdKind::from_u8(key.fd_out);
    if fout == FdKind::None {
        Cow::Borrowed(fin.name())
    } else {
        Cow::Borrowed(&PAIRS[fin as usize * FdKind::COUNT + fout as usize])
    }
}

/// Which copy figures are measured where the copy happens (the copies family attached);
/// the others are derived from the syscalls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopySources {
    pub file_read: bool,
    pub socket_recv: bool,
    pub socket_send: bool,
    pub pipe_read: bool,
    pub pipe_write: bool,
}

/// Everything counted in one window, per process: tables sorted by key, each key once.
#[derive(Debug, Clone, Copy)]
pub struct Window<'a> {
    pub rows: &'a [(SyscallKey, SyscallStats)],
    pub sched: &'a [(u32, SchedStats)],
    pub pagecache: &'a [(u32, PagecacheStats)],
    pub copy: &'a [(u32, CopyStats)],
    pub exited: &'a HashMap<u32, String>,
    pub sources: CopySources,
    /// Also list processes that only switched context (for a command or one pid).
    pub include_sched_only: bool,
}

/// Bytes copied by the CPU, derived from the syscalls, by the fd kind they went through.
#[derive(Debug, Default, Clone, Copy)]
struct SyscallCopies {
    to_user: [u64; FdKind::COUNT],
    from_user: [u64; FdKind::COUNT],
}

/// Fold one row into a process's derived figures.
fn derive(p: &mut ProcessRow, c: &mut SyscallCopies, key: &SyscallKey, v: &SyscallStats) {
    let Some(spec) = SYSCALLS.get(key.syscall as usize) else {
        return;
    };
    if spec.is_syscall() {
        p.calls += v.calls;
        p.mode_switches += 2 * v.calls;
        p.syscall_seconds += v.nanos as f64 / 1e9;
    }
    let kind = FdKind::from_u8(key.fd_in);
    let k = kind as usize;
    match spec.flow {
        Flow::ToUser | Flow::FromUser if kind == FdKind::FileDirect => p.direct_io_bytes += v.bytes,
        // /dev/null and /dev/zero: a write is discarded, a read fills the buffer with
        // zeros; no byte is copied between the kernel and the user.
        Flow::ToUser | Flow::FromUser if kind == FdKind::Null => {}
        Flow::ToUser => c.to_user[k] += v.bytes,
        Flow::FromUser => c.from_user[k] += v.bytes,
        Flow::ZeroCopy => p.zero_copy_bytes += v.bytes,
        Flow::Control => {}
    }
}

/// Combine the syscall-derived copies with the ones measured at their source.
fn copies(c: &SyscallCopies, src: &CopyStats, s: CopySources) -> (CpuCopy, CpuCopy) {
    let (f, so, pi) = (
        FdKind::File as usize,
        FdKind::Socket as usize,
        FdKind::Pipe as usize,
    );
    let sys = CpuCopy {
        to_user: c.to_user.iter().sum(),
        from_user: c.from_user.iter().sum(),
    };
    let pick = |on: bool, measured: u64, derived: u64| if on { measured } else { derived };
    let best = CpuCopy {
        to_user: sys.to_user - c.to_user[f] - c.to_user[so] - c.to_user[pi]
            + pick(s.file_read, src.file_to_user, c.to_user[f])
            + pick(s.socket_recv, src.socket_to_user, c.to_user[so])
            + pick(s.pipe_read, src.pipe_to_user, c.to_user[pi]),
        from_user: sys.from_user - c.from_user[so] - c.from_user[pi]
            + pick(s.socket_send, src.socket_from_user, c.from_user[so])
            + pick(s.pipe_write, src.pipe_from_user, c.from_user[pi]),
    };
    (best, sys)
}

fn new_row(pid: u32, w: &Window, comm_of: &dyn Fn(u32) -> Option<String>) -> ProcessRow {
    let gone = w.exited.get(&pid);
    ProcessRow::empty(
        pid,
        gone.cloned()
            .or_else(|| comm_of(pid))
            .unwrap_or_else(|| "?".into()),
        gone.is_some(),
    )
}
/// Pass each row of `rows` (sorted by pid) with the entry of its pid in `table` (sorted
/// by pid), in one pass over both.
fn join<V>(rows: &mut [ProcessRow], table: &[(u32, V)], mut f: impl FnMut(&mut ProcessRow, &V)) {
    let mut t = table.iter().peekable();
    for p in rows {
        while t.next_if(|(pid, _)| *pid < p.pid).is_some() {}
        if let Some((_, v)) = t.next_if(|(pid, _)| *pid == p.pid) {
            f(p, v);
        }
    }
}

/// Build per-process rows from a window, busiest (most bytes through the CPU) first.
pub fn processes(w: &Window, comm_of: &dyn Fn(u32) -> Option<String>) -> Vec<ProcessRow> {
    // Rows sorted by key are grouped by process (the tgid leads the key), each process's
    // syscalls in key order.
    let keys = w.rows;
    let pids = keys
        .windows(2)
        .filter(|p| p[0].0.tgid != p[1].0.tgid)
        .count()
        + usize::from(!keys.is_empty());
    // Processes with no syscall rows but other counts, each once, in pid order (the
    // syscall rows are in pid order too).
    let mut extra: Vec<u32> = Vec::new();
    let sched: &[(u32, SchedStats)] = if w.include_sched_only { w.sched } else { &[] };
    for table in [
        &mut w.pagecache.iter().map(|(t, _)| *t) as &mut dyn Iterator<Item = u32>,
        &mut w.copy.iter().map(|(t, _)| *t),
        &mut sched.iter().map(|(t, _)| *t),
    ] {
        let mut r = keys.iter().map(|(k, _)| k.tgid).peekable();
        for pid in table {
            while r.next_if(|&q| q < pid).is_some() {}
            if r.peek() != Some(&pid) {
                extra.push(pid);
            }
        }
    }
    extra.sort_unstable();
    extra.dedup();
    let mut rows: Vec<ProcessRow> = Vec::with_capacity(pids + extra.len());
    let mut derived: Vec<SyscallCopies> = Vec::with_capacity(rows.capacity());
    let mut i = 0;
    while i < keys.len() {
        let tgid = keys[i].0.tgid;
        let n = keys[i..].iter().take_while(|(k, _)| k.tgid == tgid).count();
        let mut p = new_row(tgid, w, comm_of);
        let mut c = SyscallCopies::default();
        p.syscalls.reserve_exact(n);
        for (key, v) in &keys[i..i + n] {
            derive(&mut p, &mut c, key, v);
            p.syscalls.push(SyscallRow {
                syscall: Cow::Borrowed(SYSCALLS.get(key.syscall as usize).map_or("?", |s| s.name)),
                fd_kind: fd_label(key),
                calls: v.calls,
                bytes: v.bytes,
                errors: v.errors,
                seconds: v.nanos as f64 / 1e9,
            });
        }
        rows.push(p);
        derived.push(c);
        i += n;
    }
    let with_syscalls = rows.len();
    for pid in extra {
        rows.push(new_row(pid, w, comm_of));
        derived.push(SyscallCopies::default());
    }
    // Two runs each in pid order: those with syscall rows, then the others.
    let (with, without) = rows.split_at_mut(with_syscalls);
    for part in [with, without] {
        join(part, w.copy, |p, v| p.cpu_copy_at_source = *v);
        join(part, w.sched, |p, s| {
            p.context_switches = SchedRow {
                voluntary: s.voluntary,
                involuntary: s.involuntary,
                in_io: s.in_io,
            }
        });
        join(part, w.pagecache, |p, k| {
            p.pagecache = PagecacheRow::from_stats(k)
        });
    }
    for (p, c) in rows.iter_mut().zip(&derived) {
        (p.cpu_copy_bytes, p.cpu_copy_bytes_syscalls) = copies(c, &p.cpu_copy_at_source, w.sources);
    }
    // Sorted by a key computed once, then the rows moved once each (they are large).
    rows.sort_by_cached_key(|p| {
        (
            std::cmp::Reverse(p.cpu_copy_bytes.to_user + p.cpu_copy_bytes.from_user),
            std::cmp::Reverse(p.calls),
            p.pid,
        )
    });
    rows
}
