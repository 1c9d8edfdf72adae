//! After the programs are attached, `copyscope run` keeps only the capabilities it still
//! uses and drops the rest from its effective, permitted and inheritable sets (and from
//! the bounding set when it may): a compromised agent cannot load programs, open perf
//! events or act as root beyond what reading its maps and /proc needs.
//!
//! Capabilities are per thread: this runs before any other thread is started, and the
//! threads started later inherit the reduced sets.

use anyhow::{Result, bail};

/// A capability's number and name.
pub type Cap = (u32, &'static str);

pub const CAP_DAC_READ_SEARCH: Cap = (2, "CAP_DAC_READ_SEARCH");
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
}

/// Keep only `keep` (those of them this thread holds); drop the rest.
pub fn keep_only(keep: &[Cap]) -> Result<Dropped> {
    let (eff, prm, _) = get()?;
    let want = mask(keep);
    let kept = prm & want;
    let dropped = prm & !want;
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
    set(eff & kept, kept, 0)?;
    let (eff2, prm2, inh2) = get()?;
    if prm2 & !want != 0 || eff2 & !want != 0 || inh2 != 0 {
        bail!("the capabilities did not drop: effective {eff2:#x}, permitted {prm2:#x}");
    }
    Ok(Dropped {
        kept: names(kept),
        dropped: names(dropped),
        bounding,
    })
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
}
