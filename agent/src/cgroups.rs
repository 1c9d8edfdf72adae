//! Which container a process belongs to: from /proc/PID/cgroup while the process lives,
//! and from the cgroup v2 id the kernel recorded when it exited (a short-lived process is
//! usually gone by the time its window is reported). The id is the inode number of the
//! cgroup's directory in the cgroup v2 hierarchy (the unified one on hybrid v1/v2 hosts),
//! so the directory, its path and so the container id are found by a walk of that
//! hierarchy, cached.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use foldhash::{HashMap, HashSet};

use crate::workload;

/// Cgroups remembered at most (ids seen by walks); past it the cache starts again.
const CGROUPS_MAX: usize = 65_536;
/// Processes remembered at most.
const PIDS_MAX: usize = 65_536;
/// Directories one walk looks at at most (a bound on a pathological hierarchy).
const WALK_MAX: usize = 200_000;

#[derive(Debug, Default)]
pub struct Containers {
    /// Live processes: their container (None: not in one), read from /proc once.
    by_pid: HashMap<u32, Option<String>>,
    /// cgroup v2 id -> container (None: not a container's cgroup, or not found).
    by_cgroup: HashMap<u64, Option<String>>,
    /// Where the cgroup v2 hierarchy is mounted, if it is.
    root: Option<PathBuf>,
    /// Walks done (a figure for tests and logs).
    pub walks: u64,
}

impl Containers {
    pub fn new() -> Containers {
        Containers::with_root(cgroup2_mount())
    }

    pub fn with_root(root: Option<PathBuf>) -> Containers {
        Containers {
            root,
            ..Default::default()
        }
    }

    /// The container of `pid`. `exited_cgroup` is the cgroup v2 id the kernel recorded
    /// at the process's exit: for a process that has exited it is the truth (its pid may
    /// already be another process's), so it is used first.
    pub fn of(&mut self, pid: u32, exited_cgroup: Option<u64>) -> Option<String> {
        if let Some(id) = exited_cgroup.filter(|&id| id != 0)
            && self.root.is_some()
        {
            return self.of_cgroup(id);
        }
        if let Some(c) = self.by_pid.get(&pid) {
            return c.clone();
        }
        let c = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|c| workload::container_id(&c));
        if self.by_pid.len() >= PIDS_MAX {
            self.by_pid.clear();
        }
        self.by_pid.insert(pid, c.clone());
        c
    }

    /// The container whose cgroup has this id; a walk of the hierarchy when it is new.
    pub fn of_cgroup(&mut self, id: u64) -> Option<String> {
        if let Some(c) = self.by_cgroup.get(&id) {
            return c.clone();
        }
        self.walk();
        // Ids are never reused: one that no walk found (a cgroup already removed) stays
        // unknown.
        self.by_cgroup.entry(id).or_insert(None).clone()
    }

    /// Forget processes that are gone (their pids may be reused).
    pub fn forget(&mut self, pids: &HashSet<u32>) {
        if pids.is_empty() {
            return;
        }
        self.by_pid.retain(|p, _| !pids.contains(p));
        // A burst of short-lived processes is gone: so is the table sized for it.
        if self.by_pid.capacity() > 4 * self.by_pid.len().max(1024) {
            self.by_pid.shrink_to_fit();
        }
    }

    /// What a restarted agent keeps: the live processes' containers.
    pub fn saved(&self) -> Vec<(u32, Option<String>)> {
        self.by_pid.iter().map(|(p, c)| (*p, c.clone())).collect()
    }

    pub fn restore(&mut self, saved: Vec<(u32, Option<String>)>) {
        self.by_pid = saved.into_iter().collect();
    }

    fn walk(&mut self) {
        let Some(root) = self.root.clone() else {
            return;
        };
        self.walks += 1;
        if self.by_cgroup.len() >= CGROUPS_MAX {
            self.by_cgroup.clear();
        }
        let mut stack = vec![root.clone()];
        let mut seen = 0;
        while let Some(dir) = stack.pop() {
            seen += 1;
            if seen > WALK_MAX {
                log::warn!(
                    "the cgroup hierarchy at {} has more than {WALK_MAX} directories: \
                     not looking further",
                    root.display()
                );
                break;
            }
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let rel = dir.strip_prefix(&root).unwrap_or(Path::new(""));
            let line = format!("0::/{}", rel.display());
            self.by_cgroup
                .insert(meta.ino(), workload::container_id(&line));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
}

/// The cgroup v2 mount point, from /proc/self/mountinfo (`/sys/fs/cgroup` on v2 hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_of(&text, "cgroup2")
}

/// The first mount point of file system type `fstype` in a mountinfo text.
fn mount_of(mountinfo: &str, fstype: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != fstype {
            return None;
        }
        left.split_whitespace()
            .nth(4)
            .map(|p| PathBuf::from(unescape(p)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_on_hybrid_and_unified_hosts() {
        let hybrid = "25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n\
                      27 25 0:24 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
        assert_eq!(
            mount_of(hybrid, "cgroup2"),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            mount_of(unified, "cgroup2"),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            mount_of("31 1 0:5 / /mnt\\040x rw - cgroup2 none rw\n", "cgroup2"),
            Some(PathBuf::from("/mnt x"))
        );
        assert_eq!(mount_of(hybrid.lines().next().unwrap(), "cgroup2"), None);
    }

    #[test]
    fn a_cgroup_id_is_its_directorys_inode_and_names_the_container() {
        // A hierarchy in a scratch directory, laid out as containerd and CRI-O lay theirs.
        let root = std::env::temp_dir().join(format!("copyscope-cgroups-{}", std::process::id()));
        let id = "0123456789abcdef".repeat(4);
        let containerd = root
            .join("kubepods.slice/kubepods-pod1b2c.slice")
            .join(format!("cri-containerd-{id}.scope"));
        let crio = root
            .join("kubepods.slice")
            .join(format!("crio-{}.scope", id.replace('0', "f")));
        let host = root.join("system.slice/cron.service");
        for d in [&containerd, &crio, &host] {
            std::fs::create_dir_all(d).unwrap();
        }
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let mut c = Containers::with_root(Some(root.clone()));
        assert_eq!(c.of_cgroup(ino(&containerd)).as_deref(), Some(id.as_str()));
        assert_eq!(c.of_cgroup(ino(&crio)), Some(id.replace('0', "f")));
        assert_eq!(c.of_cgroup(ino(&host)), None);
        assert_eq!(c.walks, 1, "one walk learns every cgroup");
        assert_eq!(c.of_cgroup(u64::MAX), None);
        assert_eq!(c.walks, 2, "an unknown id walks again, once");
        assert_eq!(c.of_cgroup(u64::MAX), None);
        assert_eq!(c.walks, 2);
        // An exited process is placed by its cgroup id, whatever its (reused) pid says.
        let me = std::process::id();
        assert_eq!(
            c.of(me, Some(ino(&containerd))).as_deref(),
            Some(id.as_str())
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
