//! Workloads: processes grouped by what they run (comm) and the container they run in,
//! the unit the metrics and the advisor speak of.

use std::collections::BTreeMap;

use crate::model::{ProcessRow, Tally as _};

/// The container a process runs in, from the contents of /proc/PID/cgroup: the last
/// 64-hex-digit id in the cgroup paths, as containerd (`cri-containerd-ID.scope` or
/// `/kubepods/.../ID`), CRI-O (`crio-ID.scope`), Docker (`docker-ID.scope`, `/docker/ID`)
/// and podman (`libpod-ID.scope`) name them, under cgroup v1 or v2. None outside a
/// container (and for `crio-conmon-ID`, the monitor beside the container).
pub fn container_id(cgroup: &str) -> Option<String> {
    let mut found = None;
    for line in cgroup.lines() {
        // hierarchy-id:controllers:path
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        for part in path.split('/') {
            let part = part.strip_suffix(".scope").unwrap_or(part);
            if part.starts_with("crio-conmon-") {
                continue;
            }
            let id = part.rsplit(['-', ':']).next().unwrap_or(part);
            if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                found = Some(id.to_ascii_lowercase());
            }
        }
    }
    found
}

/// Sizes of the regular files a process has open (at most 512 fds looked at): what the
/// O_DIRECT threshold is suggested from. Empty when /proc cannot tell.
pub fn open_file_sizes(pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .take(512)
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .collect()
}

/// A workload's labels. `pid` is set only when pid labels are asked for.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct WorkloadKey {
    pub comm: String,
    pub container_id: String,
    pub pid: Option<u32>,
}

/// The label value that workloads beyond the cardinality cap are summed under.
pub const OTHER: &str = "other";

impl WorkloadKey {
    pub fn other(with_pid: bool) -> WorkloadKey {
        WorkloadKey {
            comm: OTHER.into(),
            container_id: String::new(),
            pid: with_pid.then_some(0),
        }
    }
}

/// Add one process's window into a workload's: counts add, syscall rows merge by
/// (syscall, fd kind), the hit ratio is recomputed.
pub fn merge(into: &mut ProcessRow, p: &ProcessRow) {
    for r in &p.syscalls {
        match into
            .syscalls
            .iter_mut()
            .find(|x| x.syscall == r.syscall && x.fd_kind == r.fd_kind)
        {
            Some(x) => {
                x.calls += r.calls;
                x.bytes += r.bytes;
                x.errors += r.errors;
                x.seconds += r.seconds;
            }
            None => into.syscalls.push(r.clone()),
        }
    }
    into.calls += p.calls;
    into.mode_switches += p.mode_switches;
    into.cpu_copy_bytes.to_user += p.cpu_copy_bytes.to_user;
    into.cpu_copy_bytes.from_user += p.cpu_copy_bytes.from_user;
    into.cpu_copy_bytes_syscalls.to_user += p.cpu_copy_bytes_syscalls.to_user;
    into.cpu_copy_bytes_syscalls.from_user += p.cpu_copy_bytes_syscalls.from_user;
    into.cpu_copy_at_source.add(&p.cpu_copy_at_source);
    into.zero_copy_bytes += p.zero_copy_bytes;
    into.direct_io_bytes += p.direct_io_bytes;
    into.syscall_seconds += p.syscall_seconds;
    into.context_switches.voluntary += p.context_switches.voluntary;
    into.context_switches.involuntary += p.context_switches.involuntary;
    into.context_switches.in_io += p.context_switches.in_io;
    let c = &mut into.pagecache;
    c.lookups += p.pagecache.lookups;
    c.misses += p.pagecache.misses;
    c.added_by_writes += p.pagecache.added_by_writes;
    c.mmap_faults += p.pagecache.mmap_faults;
    c.dirtied += p.pagecache.dirtied;
    // Hits add up per process and window (each clamped at zero), so the sum never falls.
    c.hits += p.pagecache.hits;
    c.hit_ratio = (c.lookups > 0).then(|| c.hits as f64 / c.lookups as f64);
}

/// How busy a workload was: bytes it moved through the kernel, then calls.
pub fn activity(p: &ProcessRow) -> (u64, u64) {
    (
        p.cpu_copy_bytes.to_user
            + p.cpu_copy_bytes.from_user
            + p.zero_copy_bytes
            + p.direct_io_bytes,
        p.calls,
    )
}

/// Group processes into workloads. `container_of` gives a pid's container id (None
/// outside a container).
pub fn group(
    processes: &[ProcessRow],
    with_pid: bool,
    container_of: &mut dyn FnMut(u32) -> Option<String>,
) -> BTreeMap<WorkloadKey, ProcessRow> {
    let mut out: BTreeMap<WorkloadKey, ProcessRow> = BTreeMap::new();
    for p in processes {
        let key = WorkloadKey {
            comm: p.comm.clone(),
            container_id: container_of(p.pid).unwrap_or_default(),
            pid: with_pid.then_some(p.pid),
        };
        match out.get_mut(&key) {
            Some(w) => merge(w, p),
            None => {
                out.insert(key, p.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f5ad7e2c1b0a99887766554433221100ffeeddccbbaa0099887766554433221";

    #[test]
    fn container_ids_from_every_runtime_layout() {
        let cases = [
            // containerd, systemd cgroup driver, cgroup v2
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice/cri-containerd-{ID}.scope"
            ),
            // containerd, cgroupfs driver, cgroup v1
            format!(
                "12:memory:/kubepods/besteffort/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901/{ID}\n11:cpu,cpuacct:/kubepods/besteffort/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901/{ID}\n0::/"
            ),
            // CRI-O
            format!("0::/kubepods.slice/kubepods-pod1b2c3d4e_5f60.slice/crio-{ID}.scope"),
            // Docker, systemd driver and cgroupfs driver (v1)
            format!("0::/system.slice/docker-{ID}.scope"),
            format!("4:pids:/docker/{ID}\n1:name=systemd:/docker/{ID}"),
            // podman (rootful, and rootless under the user slice)
            format!("0::/machine.slice/libpod-{ID}.scope/container"),
            format!(
                "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
            ),
        ];
        for c in &cases {
            assert_eq!(container_id(c).as_deref(), Some(ID), "{c}");
        }
    }

    #[test]
    fn host_processes_and_conmon_have_no_container() {
        for c in [
            "0::/user.slice/user-0.slice/session-3.scope",
            "0::/system.slice/nginx.service",
            "12:memory:/\n0::/",
            "",
            "garbage without colons",
        ] {
            assert_eq!(container_id(c), None, "{c}");
        }
        assert_eq!(
            container_id(&format!(
                "0::/kubepods.slice/kubepods-pod1.slice/crio-conmon-{ID}.scope"
            )),
            None
        );
        // Upper case is folded; a 63-digit id is not an id.
        assert_eq!(
            container_id(&format!("0::/docker/{}", ID.to_uppercase())).as_deref(),
            Some(ID)
        );
        assert_eq!(container_id(&format!("0::/docker/{}", &ID[1..])), None);
    }
}
