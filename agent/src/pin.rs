//! Pinned state under bpffs: the maps, programs and links of `copyscope run`, and the
//! agent's own totals, kept in the kernel across agent restarts.
//!
//! Layout of a pin directory (default `/sys/fs/bpf/copyscope`):
//! - `maps/NAME`: every map the programs and the agent share (`maps::PINNED`);
//! - `progs/NAME`: the attached programs (their run counts, after a restart);
//! - `links/GENERATION/PROGRAM_N`: the links that keep the programs attached while no
//!   agent runs (no dots: bpffs refuses them in names).
//!
//! `PIN_META` says which layout and which build made the pin, and where the agent's saved
//! state is in `AGENT_STATE` (two copies, so that a crash while writing one leaves the
//! other). An agent of the same build adopts the attached programs: nothing stops
//! counting. Another build replaces them. A pin of another layout, or a damaged one, is
//! never reused.

use std::{
    collections::BTreeMap,
    ffi::CString,
    fs::File,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, MapInfo};
use copyscope_common::{PIN_LAYOUT, PinMeta, limits, maps};
use serde::{Deserialize, Serialize};

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

/// A pin directory, locked for this agent.
pub struct PinDir {
    path: PathBuf,
    /// flock(LOCK_EX) on the directory: one agent per pin.
    _lock: File,
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

impl PinDir {
    /// Open (creating it) a pin directory on bpffs and lock it.
    pub fn open(path: &Path) -> Result<PinDir> {
        if !on_bpffs(path) {
            bail!(
                "{} is not on a BPF file system: mount one with `mount -t bpf bpf /sys/fs/bpf` \
                 (or pick another place with --pin-path, or run without pinning with --no-pin)",
                path.display()
            );
        }
        std::fs::create_dir_all(path)
            .with_context(|| format!("creating the pin directory {}", path.display()))?;
        let lock = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                bail!(
                    "another copyscope is using the state pinned at {}: stop it first, or give \
                     this one its own --pin-path",
                    path.display()
                );
            }
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
        Ok(PinDir {
            path: path.to_path_buf(),
            _lock: lock,
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
        let entries = std::fs::read_dir(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?
            .count();
        if entries == 0 {
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

    /// Remove everything pinned here (the directory itself stays, locked).
    pub fn clear(&self) -> Result<usize> {
        let mut n = 0;
        for e in std::fs::read_dir(&self.path)? {
            n += remove_tree(&e?.path())?;
        }
        Ok(n)
    }
}

fn read_meta(path: &Path) -> Result<PinMeta> {
    let data = MapData::from_pin(path)?;
    let a: Array<MapData, PinMeta> = Array::try_from(aya::maps::Map::Array(data))?;
    Ok(a.get(&0, 0)?)
}

/// Remove a pinned file or a directory tree of them; returns the files removed.
fn remove_tree(p: &Path) -> Result<usize> {
    if p.is_dir() {
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

/// `copyscope unpin`: remove a pin directory. Programs detach and maps are freed once no
/// running agent holds them.
pub fn unpin(path: &Path) -> Result<usize> {
    if !path.exists() {
        bail!("nothing is pinned at {}", path.display());
    }
    if !on_bpffs(path) {
        bail!(
            "{} is not on a BPF file system: not a copyscope pin",
            path.display()
        );
    }
    let dir = PinDir::open(path)?;
    let n = dir.clear()?;
    drop(dir);
    std::fs::remove_dir(path).with_context(|| format!("removing {}", path.display()))?;
    Ok(n)
}

/// Open a pinned object (a program) by path.
pub fn open_pinned(path: &Path) -> Result<OwnedFd> {
    const BPF_OBJ_GET: libc::c_long = 7;
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
    }
    let c = CString::new(path.as_os_str().as_bytes())?;
    let attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
    };
    // SAFETY: attr is a live BPF_OBJ_GET attribute whose path outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &raw const attr,
            std::mem::size_of::<ObjAttr>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("opening the pinned {}", path.display()));
    }
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// One probe as a pinning agent attached it, for the agent that adopts the programs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SavedProbe {
    pub family: String,
    pub hook: String,
    pub name: String,
    pub method: Option<String>,
    pub attached: bool,
    pub detail: String,
    /// Absent in totals saved before reasons were kinds.
    #[serde(default)]
    pub reason: Option<crate::loader::Reason>,
}

/// Everything saved in `AGENT_STATE`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Saved {
    /// The probes as attached by the agent that loaded the programs.
    pub probes: Vec<SavedProbe>,
    /// The running agent's totals (`commands::run`), as of its last collection.
    #[serde(default)]
    pub agent: Option<serde_json::Value>,
}

/// `PIN_META` and `AGENT_STATE` of a pin, for the agent to read and write.
pub struct Store {
    meta: Array<MapData, PinMeta>,
    chunks: BpfHashMap<MapData, u32, [u8; limits::STATE_CHUNK]>,
}

impl Store {
    pub fn new(meta: aya::maps::Map, chunks: aya::maps::Map) -> Result<Store> {
        Ok(Store {
            meta: Array::try_from(meta)?,
            chunks: BpfHashMap::try_from(chunks)?,
        })
    }

    pub fn meta(&self) -> Result<PinMeta> {
        Ok(self.meta.get(&0, 0)?)
    }

    pub fn set_meta(&mut self, m: &PinMeta) -> Result<()> {
        self.meta.set(0, m, 0).context("writing PIN_META")
    }

    /// The saved state, if any; an error when it does not check out.
    pub fn read(&self) -> Result<Option<Saved>> {
        let m = self.meta()?;
        if m.state_len == 0 {
            return Ok(None);
        }
        let len = m.state_len as usize;
        let n = len.div_ceil(limits::STATE_CHUNK) as u32;
        let mut buf = Vec::with_capacity(n as usize * limits::STATE_CHUNK);
        for i in 0..n {
            let c = self
                .chunks
                .get(&(m.state_copy * COPY_CHUNKS + i), 0)
                .with_context(|| format!("reading chunk {i} of the saved state"))?;
            buf.extend_from_slice(&c);
        }
        buf.truncate(len);
        if crc32fast::hash(&buf) != m.state_crc {
            bail!("the saved state fails its checksum");
        }
        Ok(Some(
            serde_json::from_slice(&buf).context("decoding the saved state")?,
        ))
    }

    /// Save `s` into the copy not in use, then switch `PIN_META` to it in one update.
    pub fn write(&mut self, s: &Saved) -> Result<usize> {
        let bytes = serde_json::to_vec(s)?;
        let max = COPY_CHUNKS as usize * limits::STATE_CHUNK;
        if bytes.len() > max {
            bail!(
                "the agent's state is {} bytes, more than the {max} a pin holds",
                bytes.len()
            );
        }
        let mut m = self.meta()?;
        let copy = if m.state_len == 0 {
            0
        } else {
            1 - m.state_copy
        };
        let mut chunk = Box::new([0u8; limits::STATE_CHUNK]);
        for (i, part) in bytes.chunks(limits::STATE_CHUNK).enumerate() {
            chunk[..part.len()].copy_from_slice(part);
            chunk[part.len()..].fill(0);
            #[expect(
                clippy::needless_borrows_for_generic_args,
                reason = "by value it would copy 32 KiB onto the stack"
            )]
            self.chunks
                .insert(copy * COPY_CHUNKS + i as u32, &*chunk, 0)
                .with_context(|| format!("writing chunk {i} of the saved state"))?;
        }
        m.state_copy = copy;
        m.state_len = bytes.len() as u32;
        m.state_crc = crc32fast::hash(&bytes);
        m.state_unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        self.set_meta(&m)?;
        Ok(bytes.len())
    }
}
