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

/// What `copyscope unpin` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Unpinned {
    /// Nothing at the path.
    Nothing,
    /// The pin was removed: this many objects; `left` names what is not copyscope's,
    /// left in place (the directory then stays).
    Removed { objects: usize, left: Vec<String> },
}

/// Whether `dir` holds a copyscope pin: `maps/PIN_META` is the array copyscope writes its
/// header into (the header itself, or zeroes when the agent stopped before writing it),
/// or, from an agent that stopped earlier still, nothing but empty directories of the
/// layout.
fn recognise(dir: &Path) -> bool {
    let meta = dir.join("maps").join(maps::PIN_META);
    if meta.symlink_metadata().is_ok() {
        let Ok(info) = MapInfo::from_pin(&meta) else {
            return false;
        };
        let array = info
            .map_type()
            .is_ok_and(|t| t == aya::maps::MapType::Array);
        if !array
            || info.name_as_str() != Some(maps::PIN_META)
            || info.key_size() != 4
            || info.max_entries() != 1
        {
            return false;
        }
        // The first eight bytes: copyscope's magic, or zeroes.
        return matches!(first_word(&meta), Ok(0 | PinMeta::MAGIC));
    }
    names(dir).is_ok_and(|entries| {
        entries.iter().all(|n| {
            LAYOUT.contains(&n.as_str())
                && std::fs::symlink_metadata(dir.join(n)).is_ok_and(|m| m.is_dir())
                && names(&dir.join(n)).is_ok_and(|v| v.is_empty())
        })
    })
}

/// The first eight bytes of element 0 of a pinned array, whatever its value size.
fn first_word(path: &Path) -> Result<u64> {
    use std::os::fd::AsRawFd as _;
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    #[repr(C)]
    struct LookupAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let info = MapInfo::from_pin(path)?;
    let size = info.value_size() as usize;
    if size < 8 {
        bail!("{}-byte values", size);
    }
    let fd = open_pinned(path)?;
    let key = 0u32;
    let mut value = vec![0u8; size];
    let mut attr = LookupAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: (&raw const key) as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: attr is a live BPF_MAP_LOOKUP_ELEM attribute; key and value outlive the
    // call and value holds the map's value size.
    unsafe { crate::bpf_syscall::sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) }
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(u64::from_le_bytes(value[..8].try_into()?))
}

/// Which kind of object each subdirectory of the layout holds (`links` holds one
/// directory of links per generation).
fn expected(sub: &str) -> fn(Option<kernel::Kind>) -> bool {
    match sub {
        "maps" => |k| k == Some(kernel::Kind::Map),
        "progs" => |k| matches!(k, Some(kernel::Kind::Program(_))),
        _ => |k| matches!(k, Some(kernel::Kind::Link(_))),
    }
}

/// Remove the objects of the kind `sub` holds from `dir` (and `dir` when it is then
/// empty); name anything else in `left`, relative to the pin directory.
fn remove_kind(pin: &Path, sub: &str, dir: &Path, left: &mut Vec<String>) -> Result<usize> {
    let mut n = 0;
    let depth = dir.strip_prefix(pin).map_or(0, |r| r.components().count());
    for name in names(dir)? {
        let p = dir.join(&name);
        let m = p
            .symlink_metadata()
            .with_context(|| format!("reading {}", p.display()))?;
        if sub == "links" && depth == 1 && m.is_dir() {
            n += remove_kind(pin, sub, &p, left)?;
        } else if m.is_file() && expected(sub)(kernel::pinned_kind(&p)) {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            n += 1;
        } else {
            left.push(p.strip_prefix(pin).unwrap_or(&p).display().to_string());
        }
    }
    if names(dir)?.is_empty() {
        std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(n)
}

/// `copyscope unpin`: remove the copyscope pin at `path`, and only that: its maps,
/// programs and links (programs detach and maps are freed once no running agent holds
/// them). Whatever else is there is named and left alone; a directory that is not a
/// copyscope pin is refused, with what it holds.
pub fn unpin(path: &Path) -> Result<Unpinned> {
    let Ok(m) = path.symlink_metadata() else {
        return Ok(Unpinned::Nothing);
    };
    if !on_bpffs(path) {
        bail!(
            "{} is not on a BPF file system: not a copyscope pin, nothing removed",
            path.display()
        );
    }
    if !m.is_dir() {
        bail!(
            "{} is not a directory: not a copyscope pin, nothing removed",
            path.display()
        );
    }
    if !recognise(path) {
        let held = names(path)?;
        bail!(
            "{} is not a copyscope pin (it has no maps/{} that copyscope wrote): nothing \
             removed; it holds {}",
            path.display(),
            maps::PIN_META,
            if held.is_empty() {
                "nothing".to_string()
            } else {
                held.join(", ")
            }
        );
    }
    let dir = PinDir::open_existing(path)?;
    let mut objects = 0;
    let mut left = Vec::new();
    for name in names(path)? {
        let p = path.join(&name);
        let is_dir = p.symlink_metadata().is_ok_and(|m| m.is_dir());
        if name == trust::LOCK {
            continue;
        }
        if is_dir && LAYOUT.contains(&name.as_str()) {
            objects += remove_kind(path, &name, &p, &mut left)?;
        } else {
            left.push(name);
        }
    }
    // The lock last, while still held; then the directory, if nothing else is there.
    std::fs::remove_dir(path.join(trust::LOCK))
        .with_context(|| format!("removing {}", path.join(trust::LOCK).display()))?;
    drop(dir);
    if left.is_empty() {
        std::fs::remove_dir(path).with_context(|| format!("removing {}", path.display()))?;
    }
    left.sort();
    Ok(Unpinned::Removed { objects, left })
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
    pub reason: Option<crate::reason::Reason>,
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
