//! Run counts and run times of the loaded programs, from the kernel's BPF stats.

use std::os::fd::AsFd as _;

use anyhow::{Context as _, Result};

use super::Loaded;
use crate::bpf_syscall::sys_bpf;

/// Run count and run time of one loaded program (kernel BPF stats; zero while they are
/// off), and the runs the kernel skipped because the program was already running on that
/// CPU (`recursion_misses`, always counted, from 5.12).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ProgramStat {
    pub name: String,
    pub run_count: u64,
    pub run_time_ns: u64,
    pub missed_runs: u64,
}

/// Stats of every loaded program (or, after adopting a pin, every pinned program), by name.
pub fn program_stats(loaded: &Loaded) -> Vec<ProgramStat> {
    let stat = |name: &str, fd: std::os::fd::BorrowedFd<'_>| {
        let info = prog_info(fd)?;
        Some(ProgramStat {
            name: name.to_string(),
            run_count: info.run_cnt,
            run_time_ns: info.run_time_ns,
            missed_runs: info.recursion_misses,
        })
    };
    let mut out: Vec<_> = match loaded.pinned.as_ref().filter(|p| !p.programs.is_empty()) {
        Some(p) => p
            .programs
            .iter()
            .filter_map(|(name, fd)| stat(name, fd.as_fd()))
            .collect(),
        None => loaded
            .ebpf
            .programs()
            .filter_map(|(name, p)| stat(name, p.fd().ok()?.as_fd()))
            .collect(),
    };
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What each program did between two [`program_stats`] readings.
pub fn program_stats_since(before: &[ProgramStat], after: Vec<ProgramStat>) -> Vec<ProgramStat> {
    after
        .into_iter()
        .map(|mut s| {
            if let Some(b) = before.iter().find(|b| b.name == s.name) {
                s.run_count -= b.run_count.min(s.run_count);
                s.run_time_ns -= b.run_time_ns.min(s.run_time_ns);
                s.missed_runs -= b.missed_runs.min(s.missed_runs);
            }
            s
        })
        .collect()
}

/// The instructions the verifier processed to load a program (`verified_insns`, 5.16+;
/// None on older kernels, which do not report it).
pub(super) fn verified_insns(fd: std::os::fd::BorrowedFd<'_>) -> Option<u32> {
    prog_info(fd).map(|i| i.verified_insns).filter(|&n| n > 0)
}

/// `bpf_prog_info` of one program, read with BPF_OBJ_GET_INFO_BY_FD (aya does not expose
/// `recursion_misses`, 0 on kernels older than 5.12, which do not report it; run counts
/// and times are 0 while BPF stats are off).
fn prog_info(fd: std::os::fd::BorrowedFd<'_>) -> Option<aya_obj::generated::bpf_prog_info> {
    use std::os::fd::AsRawFd as _;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // SAFETY: a plain C struct of integers, for which all zeroes is valid.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: &raw mut info as u64,
    };
    // SAFETY: attr points at a live bpf_prog_info of the size given; the kernel writes at
    // most info_len bytes into it.
    let rc = unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) };
    rc.is_ok().then_some(info)
}

/// Turn on the kernel's BPF run-time stats for as long as the returned fd is open.
pub fn enable_bpf_stats() -> Result<std::os::fd::OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enabling BPF run-time stats (BPF_ENABLE_STATS)")
}
