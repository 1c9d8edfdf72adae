//! What loading needs of the kernel and of this process, checked before anything is
//! loaded, and the kernel's refusals said in words a user can act on.

use anyhow::{Result, bail};

use crate::privileges;

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The oldest kernel copyscope runs on: BTF in /sys/kernel/btf/vmlinux (5.4), BTF
/// tracepoints and bpf_probe_read_kernel (5.5).
const MIN_KERNEL: (u32, u32) = (5, 5);

/// This kernel's release as uname(2) reports it (a process's personality can change it).
pub(super) fn uname_release() -> String {
    // SAFETY: a zeroed utsname is valid; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a live utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return kernel_release();
    }
    // SAFETY: the kernel NUL-terminates release.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// MAJOR.MINOR of a kernel release string ("6.12.95+deb12-amd64" -> (6, 12)).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Refuse kernels older than [`MIN_KERNEL`]; a release that does not parse is left to the
/// loading to judge.
pub fn check_kernel(release: &str) -> Result<()> {
    match kernel_version(release) {
        Some((a, b)) if (a, b) < MIN_KERNEL => bail!(
            "this kernel ({release}) is too old: copyscope needs Linux {}.{} or later (BTF, \
             BTF tracepoints, bpf_probe_read_kernel)",
            MIN_KERNEL.0,
            MIN_KERNEL.1
        ),
        _ => Ok(()),
    }
}

/// Whether this process may load BPF programs: root, CAP_SYS_ADMIN, or CAP_BPF + CAP_PERFMON.
pub(super) fn check_privileges() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    // An effective set that cannot be read holds nothing.
    if missing_from(Some(privileges::effective().unwrap_or(0))).is_empty() {
        return Ok(());
    }
    bail!(
        "copyscope needs permission to load eBPF programs: run it as root (sudo), \
         or grant CAP_BPF and CAP_PERFMON (setcap cap_bpf,cap_perfmon+ep copyscope)"
    )
}

/// The capabilities loading and attaching need that this process lacks (its effective
/// set): CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN (all kernels before 5.8 know). Empty
/// when they are held or cannot be read.
pub fn missing_capabilities() -> Vec<&'static str> {
    missing_from(privileges::effective())
}

fn missing_from(eff: Option<u64>) -> Vec<&'static str> {
    use privileges::{CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN};
    let Some(eff) = eff else { return Vec::new() };
    let has = |(bit, _): privileges::Cap| eff & (1 << bit) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    [CAP_PERFMON, CAP_BPF]
        .into_iter()
        .filter(|c| !has(*c))
        .map(|(_, name)| name)
        .collect()
}

/// An EPERM's likely cause: missing capabilities if any, else the kernel's own limits.
pub(super) fn eperm_cause(missing: &[&str]) -> String {
    if missing.is_empty() {
        "EPERM: no BPF trampoline for fentry/fexit on this kernel, or lockdown".into()
    } else {
        format!(
            "EPERM: copyscope lacks {}; grant CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN before 5.8)",
            missing.join(" and ")
        )
    }
}

/// The kernel's answer in words a user can act on; the raw error is kept when unknown.
pub fn explain(err: &str) -> String {
    explain_with(err, &missing_capabilities())
}

pub(super) fn explain_with(err: &str, missing: &[&str]) -> String {
    if err.contains("devices/kprobe/type") {
        return "this kernel has no kprobes (CONFIG_KPROBES unset)".into();
    }
    if let Some(rest) = err.split("unknown BTF type `").nth(1) {
        let name = rest.split('`').next().unwrap_or(rest);
        return format!("{name} is not in the kernel's BTF (not built in, or inlined)");
    }
    if err.contains("Operation not permitted") && !missing.is_empty() {
        return format!("the kernel refused ({})", eperm_cause(missing));
    }
    if err.contains("BPF_PROG_LOAD") && err.contains("Operation not permitted") {
        return format!("the kernel refused the program ({})", eperm_cause(missing));
    }
    let first = err.lines().next().unwrap_or(err);
    let mut said: String = first.chars().take(300).collect();
    // A verifier rejection: its log's last statement (before the totals) says why.
    if let Some(log) = err.split("Verifier output:").nth(1)
        && let Some(why) = log.lines().map(str::trim).rfind(|l| {
            !l.is_empty()
                && !l.starts_with("processed ")
                && !l.starts_with("verification time")
                && !l.starts_with("stack depth")
                && !l.starts_with(':')
        })
        && !said.contains(why)
    {
        said.push_str(&format!(
            " ... {}",
            why.chars().take(200).collect::<String>()
        ));
    }
    said
}

#[cfg(test)]
mod tests {
    use super::{check_kernel, explain, explain_with, kernel_version, missing_from};
    #[test]
    fn kernels_before_5_5_are_refused() {
        for old in [
            "4.19.0-17-amd64",
            "5.4.0-150-generic",
            "2.6.78",
            "3.10.0-1160.el7.x86_64",
        ] {
            let e = check_kernel(old).unwrap_err().to_string();
            assert!(
                e.contains("is too old: copyscope needs Linux 5.5 or later"),
                "{old}: {e}"
            );
            assert!(e.contains(old), "{e}");
        }
        for ok in [
            "5.5.0",
            "5.10.0-30-amd64",
            "6.18.44",
            "7.2.0-rc1",
            "",
            "weird",
        ] {
            assert!(check_kernel(ok).is_ok(), "{ok}");
        }
        assert_eq!(kernel_version("6.12.95+deb12-amd64\n"), Some((6, 12)));
        assert_eq!(kernel_version("5.10.0-46-amd64"), Some((5, 10)));
        assert_eq!(kernel_version("weird"), None);
    }

    #[test]
    fn kernel_errors_are_explained() {
        assert!(
            explain("kretprobe: `/sys/bus/event_source/devices/kprobe/type` ...")
                .contains("CONFIG_KPROBES")
        );
        assert!(
            explain("unknown BTF type `pipe_read`")
                .starts_with("pipe_read is not in the kernel's BTF")
        );
        assert!(
            explain("the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1). Verifier output:")
                .contains("EPERM")
        );
        assert_eq!(explain("line one\nline two"), "line one");
        let eperm = "the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1)";
        assert!(explain_with(eperm, &[]).contains("no BPF trampoline"));
        let e = explain_with(eperm, &["CAP_PERFMON"]);
        assert!(
            e.contains("lacks CAP_PERFMON") && e.contains("grant CAP_BPF and CAP_PERFMON"),
            "{e}"
        );
        // A verifier rejection: the first line and the log's last statement before the
        // totals (the line that says why).
        let rejected = "the BPF_PROG_LOAD syscall returned Permission denied (os error 13). \
                        Verifier output: 0: R1=ctx() R10=fp0\n    5: (79) r2 = *(u64 *)(r2 +0)\n    \
                        R2 invalid mem access 'scalar'\n    verification time 355 usec\n    \
                        stack depth 0+0+0\n    processed 5 insns (limit 1000000)\n    \
                        : Permission denied (os error 13)";
        assert_eq!(
            explain_with(rejected, &[]),
            "the BPF_PROG_LOAD syscall returned Permission denied (os error 13). Verifier \
             output: 0: R1=ctx() R10=fp0 ... R2 invalid mem access 'scalar'"
        );
    }

    #[test]
    fn missing_capabilities_from_the_effective_set() {
        let bit = |b: u32| 1u64 << b;
        assert_eq!(missing_from(Some(bit(38) | bit(39))), Vec::<&str>::new());
        assert_eq!(missing_from(Some(bit(21))), Vec::<&str>::new());
        assert_eq!(missing_from(Some(bit(39))), ["CAP_PERFMON"]);
        assert_eq!(missing_from(Some(0)), ["CAP_PERFMON", "CAP_BPF"]);
        assert_eq!(missing_from(None), Vec::<&str>::new());
    }
}
