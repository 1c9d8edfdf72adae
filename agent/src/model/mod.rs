//! Plain data: cumulative counts from the kernel, and the `Snapshot` derived from two of
//! them. Pure: no maps, no I/O except the comm lookup passed in.

use std::collections::{BTreeMap, HashMap};

use copyscope_common::{
    Counter, FdKind, SyscallKey, SyscallStats,
    syscalls::{Flow, SYSCALLS},
};
use serde::Serialize;

/// Cumulative counts since the programs were loaded: live processes from the kernel maps
/// plus the final counts of processes that exited.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub rows: HashMap<SyscallKey, SyscallStats>,
    /// Processes known to have exited, with their last comm.
    pub exited: HashMap<u32, String>,
    /// Kernel-side drops, by [`Counter`].
    pub drops: [u64; Counter::COUNT as usize],
}

/// Sum one key's per-CPU values.
pub fn sum_percpu<'a>(values: impl IntoIterator<Item = &'a SyscallStats>) -> SyscallStats {
    values
        .into_iter()
        .fold(SyscallStats::default(), |a, v| SyscallStats {
            calls: a.calls + v.calls,
            bytes: a.bytes + v.bytes,
            errors: a.errors + v.errors,
            nanos: a.nanos + v.nanos,
        })
}

pub fn add(a: &mut SyscallStats, b: &SyscallStats) {
    a.calls += b.calls;
    a.bytes += b.bytes;
    a.errors += b.errors;
    a.nanos += b.nanos;
}

fn sub(a: &SyscallStats, b: &SyscallStats) -> SyscallStats {
    SyscallStats {
        calls: a.calls.saturating_sub(b.calls),
        bytes: a.bytes.saturating_sub(b.bytes),
        errors: a.errors.saturating_sub(b.errors),
        nanos: a.nanos.saturating_sub(b.nanos),
    }
}

/// Counts that happened between `before` and `after`, keyed by row.
pub fn delta(before: &Counts, after: &Counts) -> HashMap<SyscallKey, SyscallStats> {
    after
        .rows
        .iter()
        .map(|(k, v)| (*k, before.rows.get(k).map_or(*v, |b| sub(v, b))))
        .filter(|(_, v)| v.calls > 0)
        .collect()
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbeRow {
    pub name: String,
    pub family: String,
    pub hook: String,
    pub method: Option<String>,
    pub attached: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SyscallRow {
    pub syscall: String,
    /// `file`, `file_direct`, `socket`, `pipe`, `other`, or `IN->OUT` for two-fd calls.
    pub fd_kind: String,
    pub calls: u64,
    pub bytes: u64,
    pub errors: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct CpuCopy {
    pub to_user: u64,
    pub from_user: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProcessRow {
    pub pid: u32,
    pub comm: String,
    /// The process exited during the window; its counts are final.
    pub exited: bool,
    pub syscalls: Vec<SyscallRow>,
    pub calls: u64,
    /// User/kernel mode switches: two per syscall (entry and return).
    pub mode_switches: u64,
    pub cpu_copy_bytes: CpuCopy,
    pub zero_copy_bytes: u64,
    pub direct_io_bytes: u64,
    pub syscall_seconds: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Snapshot {
    pub duration_seconds: f64,
    pub kernel: String,
    pub probes: Vec<ProbeRow>,
    pub processes: Vec<ProcessRow>,
    /// What the kernel side could not count in this window, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Per-program run count and time in this window (`--bpf-stats`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bpf_stats: Vec<crate::loader::ProgramStat>,
    /// `snapshot -- COMMAND`: the command's pid and exit code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandRun>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CommandRun {
    pub pid: u32,
    pub exit_code: i32,
}

/// The fd-kind label of a row.
pub fn fd_label(key: &SyscallKey) -> String {
    let fin = FdKind::from_u8(key.fd_in);
    let fout = FdKind::from_u8(key.fd_out);
    if fout == FdKind::None {
        fin.name().to_string()
    } else {
        format!("{}->{}", fin.name(), fout.name())
    }
}

/// Fold one row into a process's derived figures.
fn derive(p: &mut ProcessRow, key: &SyscallKey, v: &SyscallStats) {
    let Some(spec) = SYSCALLS.get(key.syscall as usize) else {
        return;
    };
    p.calls += v.calls;
    p.mode_switches += 2 * v.calls;
    p.syscall_seconds += v.nanos as f64 / 1e9;
    let direct = FdKind::from_u8(key.fd_in) == FdKind::FileDirect;
    match spec.flow {
        Flow::ToUser if direct => p.direct_io_bytes += v.bytes,
        Flow::FromUser if direct => p.direct_io_bytes += v.bytes,
        Flow::ToUser => p.cpu_copy_bytes.to_user += v.bytes,
        Flow::FromUser => p.cpu_copy_bytes.from_user += v.bytes,
        Flow::ZeroCopy => p.zero_copy_bytes += v.bytes,
    }
}

/// Build per-process rows from a set of counted rows, busiest (most bytes through the CPU) first.
pub fn processes(
    rows: &HashMap<SyscallKey, SyscallStats>,
    exited: &HashMap<u32, String>,
    comm_of: &dyn Fn(u32) -> Option<String>,
) -> Vec<ProcessRow> {
    let mut by_pid: BTreeMap<u32, ProcessRow> = BTreeMap::new();
    let mut keys: Vec<_> = rows.keys().collect();
    keys.sort();
    for key in keys {
        let v = &rows[key];
        let p = by_pid.entry(key.tgid).or_insert_with(|| {
            let gone = exited.get(&key.tgid);
            ProcessRow {
                pid: key.tgid,
                comm: gone
                    .cloned()
                    .or_else(|| comm_of(key.tgid))
                    .unwrap_or_else(|| "?".into()),
                exited: gone.is_some(),
                syscalls: vec![],
                calls: 0,
                mode_switches: 0,
                cpu_copy_bytes: CpuCopy::default(),
                zero_copy_bytes: 0,
                direct_io_bytes: 0,
                syscall_seconds: 0.0,
            }
        });
        derive(p, key, v);
        p.syscalls.push(SyscallRow {
            syscall: SYSCALLS
                .get(key.syscall as usize)
                .map_or("?", |s| s.name)
                .to_string(),
            fd_kind: fd_label(key),
            calls: v.calls,
            bytes: v.bytes,
            errors: v.errors,
            seconds: v.nanos as f64 / 1e9,
        });
    }
    let mut out: Vec<_> = by_pid.into_values().collect();
    out.sort_by(|a, b| {
        let ka = a.cpu_copy_bytes.to_user + a.cpu_copy_bytes.from_user;
        let kb = b.cpu_copy_bytes.to_user + b.cpu_copy_bytes.from_user;
        kb.cmp(&ka)
            .then(b.calls.cmp(&a.calls))
            .then(a.pid.cmp(&b.pid))
    });
    out
}

/// Drops between two cumulative counts, by name; zero entries are kept so readers see the field.
pub fn dropped(before: &Counts, after: &Counts) -> BTreeMap<String, u64> {
    Counter::ALL
        .iter()
        .map(|c| {
            let i = *c as usize;
            (
                c.name().to_string(),
                after.drops[i].saturating_sub(before.drops[i]),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use copyscope_common::syscalls::index_of;

    fn key(tgid: u32, name: &str, fin: FdKind, fout: FdKind) -> SyscallKey {
        SyscallKey {
            tgid,
            syscall: index_of(name).unwrap(),
            fd_in: fin as u8,
            fd_out: fout as u8,
            _pad: 0,
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
    fn percpu_values_sum() {
        let s = sum_percpu(&[st(2, 10), st(3, 5)]);
        assert_eq!((s.calls, s.bytes, s.nanos), (5, 15, 500));
    }

    #[test]
    fn delta_subtracts_and_drops_idle_rows() {
        let k1 = key(1, "read", FdKind::File, FdKind::None);
        let k2 = key(1, "write", FdKind::Socket, FdKind::None);
        let k3 = key(2, "read", FdKind::Pipe, FdKind::None);
        let mut a = Counts::default();
        a.rows.insert(k1, st(10, 100));
        a.rows.insert(k2, st(5, 50));
        let mut b = a.clone();
        b.rows.insert(k1, st(15, 160));
        b.rows.insert(k3, st(1, 1));
        let d = delta(&a, &b);
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
        let ps = processes(&rows, &HashMap::new(), &|_| Some("app".into()));
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
            .map(|s| (s.syscall.as_str(), s.fd_kind.as_str()))
            .collect();
        assert!(labels.contains(&("sendfile64", "file->socket")));
        assert!(labels.contains(&("splice", "pipe->socket")));
        assert!(labels.contains(&("pread64", "file_direct")));
    }

    #[test]
    fn exited_processes_keep_their_comm_and_are_marked() {
        let mut rows = HashMap::new();
        rows.insert(key(9, "write", FdKind::Pipe, FdKind::None), st(1, 1));
        let exited = HashMap::from([(9, "short".to_string())]);
        let ps = processes(&rows, &exited, &|_| None);
        assert_eq!(ps[0].comm, "short");
        assert!(ps[0].exited);
        let ps = processes(&rows, &HashMap::new(), &|_| None);
        assert_eq!(ps[0].comm, "?");
    }

    #[test]
    fn busiest_copier_sorts_first() {
        let mut rows = HashMap::new();
        rows.insert(key(1, "read", FdKind::File, FdKind::None), st(1, 10));
        rows.insert(key(2, "read", FdKind::File, FdKind::None), st(1, 1000));
        let ps = processes(&rows, &HashMap::new(), &|_| None);
        assert_eq!(ps.iter().map(|p| p.pid).collect::<Vec<_>>(), vec![2, 1]);
    }
}
