//! Who may touch a pin. Whoever can change a pin directory can make an agent count into
//! maps it does not control, or count twice (move the links away and the next agent
//! attaches again while the old links still count), or block it. So the pin directory,
//! everything in it, and every directory above it must belong to root or to the agent's
//! user and be writable by no one else (a directory above may be writable by all when
//! it is sticky, as a bpffs mounted without `mode=` and /tmp are: then no one else can
//! rename or remove what is in it). copyscope creates its directories 0700.
//!
//! The lock is a directory inside the pin directory (`lock`, 0700, opened with
//! O_NOFOLLOW): no other user can open it, so no other user can hold it.

use std::{
    ffi::{CStr, CString},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    },
    path::Path,
};

use anyhow::{Context as _, Result, bail};

use crate::privileges::describe_uid;

/// The lock's name in a pin directory.
pub const LOCK: &str = "lock";

/// Why a file in a pin, or a directory above one, cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distrust {
    /// It belongs to someone other than root and the agent's user.
    Owner,
    /// Group or others may write it (and, above the pin, it is not sticky).
    Writable,
    /// A symbolic link: copyscope never makes one, and never follows one in a pin.
    Symlink,
}

/// Whether a file whose owner is `uid` and whose `st_mode` is `mode` may be part of a pin
/// of user `me`. `above`: a directory above the pin directory, which may be writable by
/// all when it is sticky.
pub fn distrust(uid: u32, mode: u32, me: u32, above: bool) -> Option<Distrust> {
    if mode & libc::S_IFMT == libc::S_IFLNK {
        return Some(Distrust::Symlink);
    }
    if uid != 0 && uid != me {
        return Some(Distrust::Owner);
    }
    if mode & 0o022 != 0 && !(above && mode & libc::S_ISVTX != 0) {
        return Some(Distrust::Writable);
    }
    None
}

/// `owner nobody (uid 65534), mode 0755`.
fn found(uid: u32, mode: u32) -> String {
    format!("owner {}, mode {:04o}", describe_uid(uid), mode & 0o7777)
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Why the pin directory itself is refused, and what to do.
fn refuse_dir(pin: &Path, uid: u32, mode: u32, why: Distrust) -> anyhow::Error {
    let p = pin.display();
    let f = found(uid, mode);
    let me = describe_uid(euid());
    match why {
        Distrust::Owner => anyhow::anyhow!(
            "the pin directory {p} ({f}) belongs to another user, who could replace the pins \
             in it (copyscope would count into maps it does not control, or count twice): \
             copyscope pins only in a directory that root or its own user ({me}) owns. \
             Remove it if nothing of yours is in it (`rm -r {p}`), or choose another \
             --pin-path"
        ),
        Distrust::Writable => anyhow::anyhow!(
            "the pin directory {p} ({f}) is writable by other users, who could replace the \
             pins in it (copyscope would count into maps it does not control, or count \
             twice): copyscope creates its own 0700. Give copyscope a directory of its own, \
             e.g. --pin-path {}, or, if this one is copyscope's alone and you trust what is \
             in it, `chmod 0700 {p}`",
            pin.join("copyscope").display()
        ),
        Distrust::Symlink => anyhow::anyhow!(
            "the pin directory {p} is a symbolic link: copyscope does not follow one there \
             (whoever made it can point it anywhere); give the directory itself with \
             --pin-path"
        ),
    }
}

/// Why an entry of the pin directory is refused, and what to do.
fn refuse_entry(pin: &Path, entry: &Path, uid: u32, mode: u32, why: Distrust) -> anyhow::Error {
    let what = match why {
        Distrust::Owner => "belongs to another user",
        Distrust::Writable => "is writable by other users",
        Distrust::Symlink => "is a symbolic link, which copyscope never makes",
    };
    anyhow::anyhow!(
        "{} in the pin directory {} ({}) {what}: someone other than copyscope changed the \
         pin, so it cannot be trusted (copyscope could count into maps it does not control, \
         or count twice). Discard it with `rm -r {1}` (its counts are lost), or choose \
         another --pin-path",
        entry.display(),
        pin.display(),
        found(uid, mode)
    )
}

/// Every directory above `pin` (after resolving symbolic links in them) must be safe: no
/// other user may replace the pin directory.
fn check_above(pin: &Path, me: u32) -> Result<()> {
    let Some(parent) = pin.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    let parent = parent
        .canonicalize()
        .with_context(|| format!("resolving {}", parent.display()))?;
    for dir in parent.ancestors() {
        let m =
            std::fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
        if let Some(why) = distrust(m.uid(), m.mode(), me, true) {
            let what = match why {
                Distrust::Owner => "belongs to another user",
                _ => "is writable by other users and not sticky",
            };
            bail!(
                "{}, above the pin directory {}, ({}) {what}: that user could replace the pin \
                 directory (copyscope would count into maps it does not control, or count \
                 twice). Choose a --pin-path under directories that only root can change, \
                 such as the default {}",
                dir.display(),
                pin.display(),
                found(m.uid(), m.mode()),
                super::DEFAULT_PATH
            );
        }
    }
    Ok(())
}

fn c_path(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).with_context(|| format!("{} has a NUL", p.display()))
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    // SAFETY: a zeroed stat is valid; fstat writes into it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open, st is a live stat.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// openat(dirfd or AT_FDCWD, name) as a directory, never through a symbolic link.
fn open_dir_at(dir: Option<&OwnedFd>, name: &CStr) -> std::io::Result<OwnedFd> {
    let at = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: name is NUL-terminated; at is open or AT_FDCWD.
    let fd = unsafe {
        libc::openat(
            at,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// mkdirat 0700; an existing one is fine (its owner and mode are checked when opened).
fn make_dir_at(dir: Option<&OwnedFd>, name: &CStr) -> std::io::Result<()> {
    let at = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: name is NUL-terminated; at is open or AT_FDCWD.
    if unsafe { libc::mkdirat(at, name.as_ptr(), 0o700) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Ok(())
}

/// Make a directory of the pin (and its parents in it) 0700.
pub fn make_dirs(p: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .with_context(|| format!("creating {}", p.display()))
}

/// Only the owner may read or search it: no one else can open it, nor what is in it.
fn owner_only(fd: &OwnedFd, st: &libc::stat, what: &Path) {
    if st.st_mode & 0o077 == 0 {
        return;
    }
    // SAFETY: fchmod on an open descriptor.
    if unsafe { libc::fchmod(fd.as_raw_fd(), 0o700) } == 0 {
        log::info!(
            "{}: mode {:04o} -> 0700",
            what.display(),
            st.st_mode & 0o7777
        );
    } else {
        log::debug!(
            "{}: cannot make it 0700: {}",
            what.display(),
            std::io::Error::last_os_error()
        );
    }
}

/// A pin directory that checked out, and its lock, held.
pub struct Secured {
    pub dir: OwnedFd,
    pub lock: OwnedFd,
}

/// Check (creating it 0700 when `create`) the pin directory and everything above and in
/// it, then take its lock.
pub fn secure(pin: &Path, create: bool) -> Result<Secured> {
    let me = euid();
    if create && let Some(parent) = pin.parent().filter(|p| !p.as_os_str().is_empty()) {
        // Directories above the pin that copyscope makes are not writable by others
        // either (the umask may allow it).
        if !parent.exists() {
            make_dirs(parent)?;
        }
    }
    check_above(pin, me)?;
    let c = c_path(pin)?;
    if create {
        make_dir_at(None, &c)
            .with_context(|| format!("creating the pin directory {}", pin.display()))?;
    }
    let dir = match open_dir_at(None, &c) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(refuse_dir(pin, 0, 0, Distrust::Symlink));
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            bail!(
                "{} is not a directory: give copyscope a directory of its own with --pin-path",
                pin.display()
            );
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", pin.display())),
    };
    let st = fstat(&dir)?;
    if let Some(why) = distrust(st.st_uid, st.st_mode, me, false) {
        return Err(refuse_dir(pin, st.st_uid, st.st_mode, why));
    }
    owner_only(&dir, &st, pin);

    let lock_path = pin.join(LOCK);
    let name = c_path(Path::new(LOCK))?;
    make_dir_at(Some(&dir), &name)
        .with_context(|| format!("creating the lock {}", lock_path.display()))?;
    let lock = match open_dir_at(Some(&dir), &name) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            let m = std::fs::symlink_metadata(&lock_path)?;
            return Err(refuse_entry(
                pin,
                &lock_path,
                m.uid(),
                m.mode(),
                Distrust::Symlink,
            ));
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", lock_path.display())),
    };
    let st = fstat(&lock)?;
    if let Some(why) = distrust(st.st_uid, st.st_mode, me, false) {
        return Err(refuse_entry(pin, &lock_path, st.st_uid, st.st_mode, why));
    }
    owner_only(&lock, &st, &lock_path);
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!(
                "another copyscope is using the state pinned at {}: stop it first, or give \
                 this one its own --pin-path",
                pin.display()
            );
        }
        return Err(e).with_context(|| format!("locking {}", lock_path.display()));
    }
    check_inside(pin, pin, me)?;
    Ok(Secured { dir, lock })
}

/// Every entry under `dir` (not following symbolic links) must be trusted.
fn check_inside(pin: &Path, dir: &Path, me: u32) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        let m =
            std::fs::symlink_metadata(&p).with_context(|| format!("reading {}", p.display()))?;
        if let Some(why) = distrust(m.uid(), m.mode(), me, false) {
            return Err(refuse_entry(pin, &p, m.uid(), m.mode(), why));
        }
        if m.is_dir() {
            check_inside(pin, &p, me)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: u32 = libc::S_IFDIR;
    const FILE: u32 = libc::S_IFREG;

    #[test]
    fn only_root_and_the_agents_user_may_own_a_pin_and_no_one_else_write_it() {
        let me = 1000;
        // Root's or the agent's own, not writable by others: trusted.
        for (uid, mode) in [
            (0, DIR | 0o700),
            (0, DIR | 0o755),
            (me, DIR | 0o700),
            (0, FILE | 0o600),
        ] {
            assert_eq!(distrust(uid, mode, me, false), None, "{uid} {mode:o}");
        }
        // Another user's, however tight.
        assert_eq!(
            distrust(65534, DIR | 0o700, me, false),
            Some(Distrust::Owner)
        );
        assert_eq!(
            distrust(65534, FILE | 0o600, 0, false),
            Some(Distrust::Owner)
        );
        // Writable by group or others, whoever owns it; sticky does not help a pin.
        for mode in [0o777, 0o775, 0o757, 0o1777] {
            assert_eq!(
                distrust(0, DIR | mode, me, false),
                Some(Distrust::Writable),
                "{mode:o}"
            );
        }
        // Above the pin, a sticky directory writable by all (bpffs, /tmp) is fine; a
        // plain one writable by all is not.
        assert_eq!(distrust(0, DIR | 0o1777, me, true), None);
        assert_eq!(distrust(0, DIR | 0o777, me, true), Some(Distrust::Writable));
        assert_eq!(
            distrust(65534, DIR | 0o1777, me, true),
            Some(Distrust::Owner)
        );
        // A symbolic link, even root's.
        assert_eq!(
            distrust(0, libc::S_IFLNK | 0o777, me, false),
            Some(Distrust::Symlink)
        );
    }

    #[test]
    fn a_refused_directory_names_the_owner_the_mode_and_what_to_do() {
        let p = Path::new("/sys/fs/bpf/copyscope");
        let e = refuse_dir(p, 65534, DIR | 0o755, Distrust::Owner).to_string();
        assert!(e.contains("(owner "), "{e}");
        assert!(
            e.contains("uid 65534), mode 0755) belongs to another user"),
            "{e}"
        );
        assert!(e.contains("`rm -r /sys/fs/bpf/copyscope`"), "{e}");
        let e = refuse_dir(
            Path::new("/sys/fs/bpf"),
            0,
            DIR | 0o1777,
            Distrust::Writable,
        )
        .to_string();
        assert!(e.contains("mode 1777) is writable by other users"), "{e}");
        assert!(e.contains("--pin-path /sys/fs/bpf/copyscope"), "{e}");
    }
}
