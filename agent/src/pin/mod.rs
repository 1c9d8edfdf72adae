//! Pinned state under bpffs: the maps, programs and links of `copyscope run`, and the
//! agent's own totals, kept in the kernel across agent restarts.
//!
//! Layout of a pin directory (default `/sys/fs/bpf/copyscope`):
//! - `maps/NAME`: every map the programs and the agent share (`maps::PINNED`);
//! - `progs/NAME`: the attached programs (their run counts, after a restart);
//! - `links/GENERATION/PROGRAM_N`: the links that keep the programs attached while no
//!   agent runs (no dots: bpffs refuses them in names);
//! - `lock`: a directory the running agent holds a lock on (`trust`).
//!
//! The directory is copyscope's alone: 0700, root's or the agent's user's, with nothing
//! in it that another user owns or may write (`trust`), and nothing but this layout.
//!
//! `PIN_META` says which layout and which build made the pin, and where the agent's saved
//! state is in `AGENT_STATE` (two copies, so that a crash while writing one leaves the
//! other). An agent of the same build adopts the attached programs: nothing stops
//! counting. Another build replaces them. A pin of another layout, or a damaged one, is
//! never reused.

pub mod kernel;
pub mod trust;

mod store;
mod unpin;

pub use store::{Saved, SavedProbe, Store};
pub use unpin::{Unpinned, unpin};

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::CString,
    os::{
        fd::{FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::maps::{Array, MapData, MapInfo};
use copyscope_common::{PIN_LAYOUT, PinMeta, limits, maps};

/// Where `copyscope run` pins unless told otherwise.
pub const DEFAULT_PATH: &str = "/sys/fs/bpf/copyscope";

/// `statfs.f_type` of a BPF file system.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Chunks of one copy of the saved state.
const COPY_CHUNKS: u32 = limits::STATE_ENTRIES / 2;

/// Whether `path` lies on a mounted BPF file system (the path itself, or the nearest
/// existing parent).
pub fn on_bpffs(path: &Path) -> bool {
    let mut p = Some(path);
    while let Some(dir) = p {
        if dir.exists() {
            return statfs_type(dir) == Some(BPF_FS_MAGIC);
        }
        p = dir.parent();
    }
    false
}

fn statfs_type(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: a zeroed statfs is valid; statfs writes into it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a NUL-terminated path, st a live statfs.
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0).then_some(st.f_type as i64)
}

/// What a pin directory may hold: anything else is not copyscope's.
const LAYOUT: [&str; 4] = ["maps", "progs", "links", trust::LOCK];

/// A pin directory, checked and locked for this agent.
pub struct PinDir {
    path: PathBuf,
    /// The directory and its lock (flock(LOCK_EX) on `lock`: one agent per pin).
    _held: trust::Secured,
}

/// What a pin directory held when it was opened.
#[derive(Debug)]
pub enum Found {
    /// Nothing: a new pin.
    Empty,
    /// Maps pinned by an agent that stopped before it attached anything: nothing worth
    /// keeping.
    Unfinished,
    /// A pin of this layout, every map as this build defines it.
    Pinned(PinMeta),
}

/// A map as the programs' object defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapDef {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// `statvfs.f_flag` says read-only.
fn read_only(path: &Path) -> bool {
    let Some(dir) = path.ancestors().find(|d| d.exists()) else {
        return false;
    };
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a zeroed statvfs is valid; statvfs writes into it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a NUL-terminated path, st a live statvfs.
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0) && st.f_flag & libc::ST_RDONLY != 0
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        v.push(e?.file_name().to_string_lossy().into_owned());
    }
    v.sort();
    Ok(v)
}

impl PinDir {
    /// Open (creating it 0700) a pin directory on bpffs, check who may change it, and
    /// lock it.
    pub fn open(path: &Path) -> Result<PinDir> {
        if !on_bpffs(path) {
            bail!(
                "{} is not on a BPF file system: mount one with `mount -t bpf bpf /sys/fs/bpf` \
                 (or pick another place with --pin-path, or run without pinning with --no-pin)",
                path.display()
            );
        }
        if read_only(path) {
            bail!(
                "{} is on a read-only BPF file system, where nothing can be pinned: remount it \
                 read-write (`mount -o remount,rw` on its mount point), pick another place with \
                 --pin-path, or run without pinning with --no-pin (the programs then detach \
                 when copyscope stops, and counts restart from zero)",
                path.display()
            );
        }
        Ok(PinDir {
            path: path.to_path_buf(),
            _held: trust::secure(path, true)?,
        })
    }

    /// Open an existing pin directory (for `unpin`): checked and locked, not created.
    fn open_existing(path: &Path) -> Result<PinDir> {
        Ok(PinDir {
            path: path.to_path_buf(),
            _held: trust::secure(path, false)?,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn map_path(&self, name: &str) -> PathBuf {
        self.path.join("maps").join(name)
    }

    pub fn program_path(&self, name: &str) -> PathBuf {
        self.path.join("progs").join(name)
    }

    pub fn links_dir(&self, generation: u32) -> PathBuf {
        self.path.join("links").join(generation.to_string())
    }

    /// Read and check what is pinned. `defs`: the maps as this build defines them.
    pub fn inspect(&self, defs: &BTreeMap<String, MapDef>) -> Result<Found> {
        let entries = names(&self.path)?;
        let foreign: Vec<&str> = entries
            .iter()
            .map(String::as_str)
            .filter(|n| !LAYOUT.contains(n))
            .collect();
        if !foreign.is_empty() {
            bail!(
                "the pin directory {} holds {}, which copyscope did not put there: a pin \
                 directory is copyscope's alone. Move them elsewhere, or give copyscope a \
                 directory of its own with --pin-path",
                self.path.display(),
                foreign.join(", ")
            );
        }
        if entries.iter().all(|n| n == trust::LOCK) {
            return Ok(Found::Empty);
        }
        let damaged = |why: String| {
            anyhow!(
                "the state pinned at {} is damaged ({why}): discard it with `copyscope unpin \
                 --pin-path {0}` (its counts are lost), or start with --repin",
                self.path.display()
            )
        };
        let meta_path = self.map_path(maps::PIN_META);
        if !meta_path.exists() {
            return Err(damaged(format!("no maps/{}", maps::PIN_META)));
        }
        let info = MapInfo::from_pin(&meta_path)
            .map_err(|e| damaged(format!("maps/{}: {e}", maps::PIN_META)))?;
        if info.value_size() as usize != std::mem::size_of::<PinMeta>() {
            bail!(
                "the state pinned at {} was written by a copyscope with another layout \
                 (maps/{} holds {}-byte values, this copyscope writes {}): discard it with \
                 `copyscope unpin --pin-path {0}` (its counts are lost), or start with --repin",
                self.path.display(),
                maps::PIN_META,
                info.value_size(),
                std::mem::size_of::<PinMeta>()
            );
        }
        let meta = read_meta(&meta_path).map_err(|e| damaged(format!("{e:#}")))?;
        if meta.magic == 0 && !self.path.join("links").exists() {
            return Ok(Found::Unfinished);
        }
        if meta.magic != PinMeta::MAGIC {
            return Err(damaged(format!(
                "maps/{} has no copyscope header",
                maps::PIN_META
            )));
        }
        if meta.layout != PIN_LAYOUT {
            bail!(
                "the state pinned at {} has layout version {}, this copyscope uses version {}: \
                 discard it with `copyscope unpin --pin-path {0}` (its counts are lost), or \
                 start with --repin",
                self.path.display(),
                meta.layout,
                PIN_LAYOUT
            );
        }
        for name in maps::PINNED {
            let Some(want) = defs.get(name) else {
                bail!("the programs' object has no {name} map");
            };
            let p = self.map_path(name);
            let info = MapInfo::from_pin(&p).map_err(|e| damaged(format!("maps/{name}: {e}")))?;
            let got = MapDef {
                map_type: info.map_type().map_or(u32::MAX, |t| t as u32),
                key_size: info.key_size(),
                value_size: info.value_size(),
                max_entries: info.max_entries(),
            };
            if got != *want {
                return Err(damaged(format!(
                    "maps/{name} is {got:?}, this layout needs {want:?}"
                )));
            }
        }
        Ok(Found::Pinned(meta))
    }

    /// The pinned links of one generation, if any.
    pub fn links(&self, generation: u32) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.links_dir(generation))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Unpin every link and program (the programs detach once nothing holds them); the
    /// maps stay.
    pub fn remove_programs(&self) -> Result<usize> {
        let mut n = 0;
        for sub in ["links", "progs"] {
            let dir = self.path.join(sub);
            if dir.exists() {
                n += remove_tree(&dir)?;
            }
        }
        Ok(n)
    }

    /// Remove everything pinned here (the directory itself and its lock stay).
    pub fn clear(&self) -> Result<usize> {
        let mut n = 0;
        for sub in LAYOUT.iter().filter(|n| **n != trust::LOCK) {
            let p = self.path.join(sub);
            if p.symlink_metadata().is_ok() {
                n += remove_tree(&p)?;
            }
        }
        Ok(n)
    }

    /// Make a directory of the layout (0700).
    pub fn make_dir(&self, p: &Path) -> Result<()> {
        debug_assert!(p.starts_with(&self.path));
        trust::make_dirs(p)
    }

    /// The ids of the pinned maps.
    pub fn map_ids(&self) -> Result<BTreeSet<u32>> {
        maps::PINNED
            .iter()
            .map(|name| {
                let p = self.map_path(name);
                MapInfo::from_pin(&p)
                    .map(|i| i.id())
                    .with_context(|| format!("reading {}", p.display()))
            })
            .collect()
    }

    /// The ids of the programs pinned under `progs`.
    pub fn program_ids(&self) -> BTreeSet<u32> {
        std::fs::read_dir(self.path.join("progs"))
            .map(|d| {
                d.filter_map(|e| match kernel::pinned_kind(&e.ok()?.path()) {
                    Some(kernel::Kind::Program(id)) => Some(id),
                    _ => None,
                })
                .collect()
            })
            .unwrap_or_default()
    }

    /// The ids of the links pinned under `links/GENERATION`.
    pub fn link_ids(&self, generation: u32) -> BTreeSet<u32> {
        self.links(generation)
            .iter()
            .filter_map(|p| match kernel::pinned_kind(p) {
                Some(kernel::Kind::Link(id)) => Some(id),
                _ => None,
            })
            .collect()
    }
}

fn read_meta(path: &Path) -> Result<PinMeta> {
    let data = MapData::from_pin(path)?;
    let a: Array<MapData, PinMeta> = Array::try_from(aya::maps::Map::Array(data))?;
    Ok(a.get(&0, 0)?)
}

/// Remove a pinned file or a directory tree of them; returns the files removed.
fn remove_tree(p: &Path) -> Result<usize> {
    let is_dir = p
        .symlink_metadata()
        .with_context(|| format!("reading {}", p.display()))?
        .is_dir();
    if is_dir {
        let mut n = 0;
        for e in std::fs::read_dir(p)? {
            n += remove_tree(&e?.path())?;
        }
        std::fs::remove_dir(p).with_context(|| format!("removing {}", p.display()))?;
        Ok(n)
    } else {
        std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
        Ok(1)
    }
}

/// Open a pinned object (a map, program or link) by path.
pub fn open_pinned(path: &Path) -> Result<OwnedFd> {
    const BPF_OBJ_GET: libc::c_long = 7;
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        /// Explicit: the kernel refuses an attribute whose bytes past its last field are
        /// not zero, and implicit padding is not.
        _pad: u32,
    }
    let c = CString::new(path.as_os_str().as_bytes())?;
    let mut attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: attr is a live BPF_OBJ_GET attribute whose path outlives the call.
    let fd = unsafe { crate::bpf_syscall::sys_bpf(BPF_OBJ_GET, &mut attr) }
        .with_context(|| format!("opening the pinned {}", path.display()))?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
