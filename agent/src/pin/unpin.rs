//! `copyscope unpin`: recognising a copyscope pin and removing it, and only it.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use aya::maps::MapInfo;
use copyscope_common::{PinMeta, maps};

use super::{LAYOUT, PinDir, kernel, names, on_bpffs, open_pinned, trust};

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
