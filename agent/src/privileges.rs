//! After the programs are attached, `copyscope run` keeps only the capabilities it still
//! uses and drops the rest from its effective, permitted and inheritable sets (and from
//! the bounding set when it may): a compromised agent cannot load programs, open perf
//! events or act as root beyond what reading its maps and /proc needs.
//!
//! Capabilities are per thread: this runs before any other thread is started, and the
//! threads started later inherit the reduced sets.
//!
//! With `--user USER[:GROUP]` it then becomes that user, keeping those capabilities: the
//! agent's files, signals and /proc entries are no longer root's.

use anyhow::{Result, bail};

/// A capability's number and name.
pub type Cap = (u32, &'static str);

pub const CAP_DAC_READ_SEARCH: Cap = (2, "CAP_DAC_READ_SEARCH");
pub const CAP_SETGID: Cap = (6, "CAP_SETGID");
pub const CAP_SETUID: Cap = (7, "CAP_SETUID");
pub const CAP_SETPCAP: Cap = (8, "CAP_SETPCAP");
pub const CAP_SYS_PTRACE: Cap = (19, "CAP_SYS_PTRACE");
pub const CAP_SYS_ADMIN: Cap = (21, "CAP_SYS_ADMIN");
pub const CAP_PERFMON: Cap = (38, "CAP_PERFMON");
pub const CAP_BPF: Cap = (39, "CAP_BPF");

/// What the collection still needs once attached: CAP_BPF for every bpf() call on the maps
/// (the kernel refuses them without it when unprivileged BPF is disabled, the default),
/// CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH for the advisor's file sizes through
/// /proc/PID/fd of other users' processes.
pub const RUN_KEEPS: [Cap; 3] = [CAP_BPF, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH];

/// The highest capability number this code knows (CAP_CHECKPOINT_RESTORE).
const LAST_CAP: u32 = 40;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const VERSION_3: u32 = 0x2008_0522;

/// (effective, permitted, inheritable) of this thread.
fn get() -> Result<(u64, u64, u64)> {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget with a v3 header and two data words, as the kernel expects.
    if unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let join = |lo: u32, hi: u32| lo as u64 | (hi as u64) << 32;
    Ok((
        join(d[0].effective, d[1].effective),
        join(d[0].permitted, d[1].permitted),
        join(d[0].inheritable, d[1].inheritable),
    ))
}

/// This thread's effective capabilities; None if the kernel will not say.
pub fn effective() -> Option<u64> {
    get().ok().map(|(eff, _, _)| eff)
}

fn set(effective: u64, permitted: u64, inheritable: u64) -> Result<()> {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let d = [
        Data {
            effective: effective as u32,
            permitted: permitted as u32,
            inheritable: inheritable as u32,
        },
        Data {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: (inheritable >> 32) as u32,
        },
    ];
    // SAFETY: capset with a v3 header and two data words.
    if unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

fn mask(caps: &[Cap]) -> u64 {
    caps.iter().fold(0, |m, (n, _)| m | 1 << n)
}

/// The names of the capabilities in a mask, known ones by name.
pub fn names(m: u64) -> Vec<String> {
    const NAMES: [&str; 41] = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_MKNOD",
        "CAP_LEASE",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
        "CAP_PERFMON",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
    ];
    (0..64)
        .filter(|b| m & (1 << b) != 0)
        .map(|b| {
            NAMES
                .get(b as usize)
                .map_or_else(|| format!("capability {b}"), |n| n.to_string())
        })
        .collect()
}

/// What a drop did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub kept: Vec<String>,
    pub dropped: Vec<String>,
    /// Whether the bounding set was cut too (needs CAP_SETPCAP).
    pub bounding: bool,
    /// The user switched to, as [`User`] displays it.
    pub user: Option<String>,
    /// Whether no_new_privs is set: no exec can gain privileges (setuid, file
    /// capabilities) again.
    pub no_new_privs: bool,
}

/// A user and group to become: `--user USER[:GROUP]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Names from /etc/passwd and /etc/group, when they have them.
    pub user_name: Option<String>,
    pub group_name: Option<String>,
}

impl std::fmt::Display for User {
    /// `nobody (uid 65534) and group nogroup (gid 65534)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.user_name {
            Some(n) => write!(f, "{n} (uid {})", self.uid)?,
            None => write!(f, "uid {}", self.uid)?,
        }
        match &self.group_name {
            Some(n) => write!(f, " and group {n} (gid {})", self.gid),
            None => write!(f, " and gid {}", self.gid),
        }
    }
}

impl User {
    /// `USER[:GROUP]`, names or numeric ids. Without a group: the user's own from
    /// /etc/passwd (a numeric uid that is not there needs one: `65534:65534`).
    pub fn resolve(spec: &str) -> Result<User> {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        if user.is_empty() || group == Some("") {
            bail!(
                "--user {spec:?}: give USER or USER:GROUP, names or numeric ids (e.g. nobody or 65534:65534)"
            );
        }
        let entry = match user.parse::<u32>() {
            Ok(uid) => passwd_by_uid(uid).or(Some((uid, None, None))),
            Err(_) => passwd_by_name(user),
        };
        let Some((uid, primary, user_name)) = entry else {
            bail!(
                "--user {spec:?}: no user {user:?} in /etc/passwd (in an image without one, give numeric ids: UID:GID)"
            );
        };
        let (gid, group_name) = match group {
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => (gid, group_name_of(gid)),
                Err(_) => match group_by_name(g) {
                    Some(gid) => (gid, Some(g.to_string())),
                    None => bail!("--user {spec:?}: no group {g:?} in /etc/group"),
                },
            },
            None => match primary {
                Some(gid) => (gid, group_name_of(gid)),
                None => bail!(
                    "--user {spec:?}: uid {uid} is not in /etc/passwd, so it has no group there: give one, e.g. {uid}:{uid}"
                ),
            },
        };
        Ok(User {
            uid,
            gid,
            user_name,
            group_name,
        })
    }

    /// Whether this thread may become the user: CAP_SETUID and CAP_SETGID, unless it is
    /// that user already. Checked before the probes load.
    pub fn check_switch(&self) -> Result<()> {
        // SAFETY: getuid and getgid have no preconditions.
        let same = unsafe { libc::getuid() == self.uid && libc::getgid() == self.gid };
        let need = mask(&[CAP_SETUID, CAP_SETGID]);
        if same || effective().is_some_and(|e| e & need == need) {
            return Ok(());
        }
        bail!(
            "switching to user {self} needs CAP_SETUID and CAP_SETGID (in Kubernetes, add SETUID and SETGID \
to the container's capabilities; the agent drops them with the switch)"
        )
    }
}

/// A passwd entry: (uid, primary gid, name).
type PasswdEntry = (u32, Option<u32>, Option<String>);

fn passwd_entry(pw: &libc::passwd) -> PasswdEntry {
    // SAFETY: pw_name points to a NUL-terminated string in the caller's buffer.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    (
        pw.pw_uid,
        Some(pw.pw_gid),
        Some(name.to_string_lossy().into_owned()),
    )
}

fn passwd_by_name(name: &str) -> Option<PasswdEntry> {
    let c = std::ffi::CString::new(name).ok()?;
    lookup(
        |pw, buf, res| {
            // SAFETY: getpwnam_r with a valid name, record, buffer and result pointer.
            unsafe { libc::getpwnam_r(c.as_ptr(), pw, buf.as_mut_ptr(), buf.len(), res) }
        },
        passwd_entry,
    )
}

fn passwd_by_uid(uid: u32) -> Option<PasswdEntry> {
    lookup(
        |pw, buf, res| {
            // SAFETY: as above.
            unsafe { libc::getpwuid_r(uid, pw, buf.as_mut_ptr(), buf.len(), res) }
        },
        passwd_entry,
    )
}

/// `nobody (uid 65534)`, or `uid 65534` for a uid that /etc/passwd does not name.
pub fn describe_uid(uid: u32) -> String {
    match passwd_by_uid(uid).and_then(|(_, _, name)| name) {
        Some(n) => format!("{n} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

fn group_by_name(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    lookup(
        |gr, buf, res| {
            // SAFETY: getgrnam_r with a valid name, record, buffer and result pointer.
            unsafe { libc::getgrnam_r(c.as_ptr(), gr, buf.as_mut_ptr(), buf.len(), res) }
        },
        |gr: &libc::group| gr.gr_gid,
    )
}

fn group_name_of(gid: u32) -> Option<String> {
    lookup(
        |gr, buf, res| {
            // SAFETY: as above.
            unsafe { libc::getgrgid_r(gid, gr, buf.as_mut_ptr(), buf.len(), res) }
        },
        |gr: &libc::group| {
            // SAFETY: gr_name points into the lookup's buffer, NUL-terminated.
            unsafe { std::ffi::CStr::from_ptr(gr.gr_name) }
                .to_string_lossy()
                .into_owned()
        },
    )
}

/// Call a get*_r function (`call`) with a growing buffer, then `read` the record while the
/// buffer its strings point into lives; None if there is no such entry.
fn lookup<T, R>(
    mut call: impl FnMut(&mut T, &mut [libc::c_char], &mut *mut T) -> libc::c_int,
    read: impl FnOnce(&T) -> R,
) -> Option<R> {
    let mut size = 1024;
    loop {
        // SAFETY: passwd and group are plain C records; zeroes are a valid value.
        let mut rec: T = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; size];
        let mut res: *mut T = std::ptr::null_mut();
        let r = call(&mut rec, &mut buf, &mut res);
        if r == libc::ERANGE && size < 1 << 20 {
            size *= 4;
            continue;
        }
        if r != 0 || res.is_null() {
            return None;
        }
        return Some(read(&rec));
    }
}

/// Keep only `keep` (those of them this thread holds); drop the rest.
pub fn keep_only(keep: &[Cap]) -> Result<Dropped> {
    keep_only_as(keep, None)
}

/// [`keep_only`], then become `user` (if given) with the kept capabilities.
pub fn keep_only_as(keep: &[Cap], user: Option<&User>) -> Result<Dropped> {
    let (eff, prm, _) = get()?;
    let want = mask(keep);
    let kept = prm & want;
    let dropped = prm & !want;
    if let Some(u) = user {
        u.check_switch()?;
    }
    // The bounding set first, while CAP_SETPCAP is still held: nothing dropped can come
    // back through an exec.
    let mut bounding = false;
    if prm & mask(&[CAP_SETPCAP]) != 0 {
        bounding = true;
        for cap in 0..=LAST_CAP {
            if want & (1 << cap) == 0 {
                // SAFETY: prctl with integer arguments.
                let r =
                    unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
                // EINVAL: a capability this kernel does not have.
                if r != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                    bounding = false;
                }
            }
        }
    }
    // No ambient capabilities either.
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if let Some(u) = user {
        switch_user(u)?;
    }
    // After a switch the effective set is empty: raise the kept ones again.
    set(eff & kept, kept, 0)?;
    let (eff2, prm2, inh2) = get()?;
    if prm2 & !want != 0 || eff2 & !want != 0 || inh2 != 0 {
        bail!("the capabilities did not drop: effective {eff2:#x}, permitted {prm2:#x}");
    }
    // SAFETY: prctl with integer arguments; applies to this thread and the threads it
    // starts later.
    let no_new_privs = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1
    };
    Ok(Dropped {
        kept: names(kept),
        dropped: names(dropped),
        bounding,
        user: user.map(User::to_string),
        no_new_privs,
    })
}

/// Become `u`: only its group (no supplementary ones), then the group and the user ids
/// (real, effective, saved), keeping the permitted capabilities across the change of uid
/// (PR_SET_KEEPCAPS). The C library applies the ids to every thread of the process.
fn switch_user(u: &User) -> Result<()> {
    let fail = |what: &str| -> Result<()> {
        Err(anyhow::anyhow!(
            "switching to user {u}: {what}: {}",
            std::io::Error::last_os_error()
        ))
    };
    // SAFETY: prctl, setgroups, setresgid and setresuid with plain values and a one-element
    // array that outlives the call.
    unsafe {
        if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
            return fail("prctl(PR_SET_KEEPCAPS)");
        }
        let groups = [u.gid];
        if libc::setgroups(1, groups.as_ptr()) != 0 {
            return fail("setgroups");
        }
        if libc::setresgid(u.gid, u.gid, u.gid) != 0 {
            return fail("setresgid");
        }
        if libc::setresuid(u.uid, u.uid, u.uid) != 0 {
            return fail("setresuid");
        }
        libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
    }
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: getresuid writes three ids.
    unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
    if (r, e, s) != (u.uid, u.uid, u.uid) {
        bail!("switching to user {u}: the uids are {r}, {e}, {s}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_names() {
        assert_eq!(mask(&RUN_KEEPS), 1 << 39 | 1 << 19 | 1 << 2);
        assert_eq!(
            names(mask(&RUN_KEEPS)),
            ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "CAP_BPF"]
        );
        assert_eq!(names(1 << 38 | 1 << 45), ["CAP_PERFMON", "capability 45"]);
    }

    #[test]
    fn users_resolve_by_name_or_number() {
        // root is in every /etc/passwd, as uid 0 with group 0.
        let root = User::resolve("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(root.user_name.as_deref(), Some("root"));
        assert_eq!(User::resolve("0").unwrap(), root);
        assert_eq!(User::resolve("root:0").unwrap(), root);
        assert!(root.to_string().starts_with("root (uid 0) and group "));
        // A uid nobody has: a group must be given.
        let n = User::resolve("4000000123:4000000124").unwrap();
        assert_eq!((n.uid, n.gid), (4000000123, 4000000124));
        assert_eq!(n.to_string(), "uid 4000000123 and gid 4000000124");
        let e = User::resolve("4000000123").unwrap_err().to_string();
        assert!(e.contains("give one, e.g. 4000000123:4000000123"), "{e}");
        for bad in [
            "",
            ":0",
            "0:",
            "no-such-user-copyscope",
            "root:no-such-group-copyscope",
        ] {
            assert!(User::resolve(bad).is_err(), "{bad:?}");
        }
        let e = User::resolve("no-such-user-copyscope")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no user \"no-such-user-copyscope\" in /etc/passwd"),
            "{e}"
        );
    }
}
