//! Loading and attaching the kernel programs: environment checks, offsets from BTF and
//! tracefs handed to the programs as globals, and the probe table walked best method first.

pub mod btf;
pub mod pinning;
pub mod probes;
pub mod reason;
pub mod tracefs;

use std::{os::fd::AsFd as _, path::Path};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::Array,
    programs::{BtfTracePoint, FEntry, FExit, KProbe, RawTracePoint, TracePoint},
};
use copyscope_common::{
    globals, maps,
    syscalls::{SYSCALLS, index_entry},
};

use self::pinning::HeldLink;
pub use self::pinning::{PinHow, PinRequest, Pinned, save_probe};
use self::probes::{Method, PROBES, ProbeSpec, Target};
pub use self::reason::{Reason, Unavailable};
use crate::privileges;

/// The kernel programs, built by build.rs (empty when built without the BPF toolchain).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/copyscope"));

/// What happened to one probe.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeStatus {
    pub family: &'static str,
    pub hook: &'static str,
    pub name: String,
    pub method: Option<&'static str>,
    pub attached: bool,
    pub required: bool,
    /// Why it is not attached, or which targets were missing.
    pub detail: String,
    /// Why it is not attached, as a kind: a missing kernel feature or a fault.
    pub reason: Option<Reason>,
    /// Whether it ran on an event made for it (`copyscope probes` checks the required
    /// probes); None when not checked.
    pub fired: Option<bool>,
}

/// Options that change what is loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Count only processes placed in the WATCHED map (and their descendants).
    pub watch_only: bool,
    /// Kernel-side diagnostics through aya-log.
    pub debug_log: bool,
    /// Pin maps, programs and links here (bpffs), and continue from what is pinned.
    pub pin: Option<PinRequest>,
    /// Families whose probes are not attached (one of [`OPTIONAL_FAMILIES`] each).
    pub disabled_families: Vec<String>,
}

/// The probe families a user may turn off; the others carry every figure.
pub const OPTIONAL_FAMILIES: &[&str] = &["sched", "pagecache", "copies"];

pub struct Loaded {
    pub ebpf: Ebpf,
    pub probes: Vec<ProbeStatus>,
    pub kernel: String,
    /// The links this process holds: dropping them detaches the programs (pinned links
    /// stay attached).
    #[expect(dead_code, reason = "held only to keep the programs attached")]
    links: Vec<HeldLink>,
    pub pinned: Option<Pinned>,
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether this process may load BPF programs: root, CAP_SYS_ADMIN, or CAP_BPF + CAP_PERFMON.
/// The oldest kernel copyscope runs on: BTF in /sys/kernel/btf/vmlinux (5.4), BTF
/// tracepoints and bpf_probe_read_kernel (5.5).
const MIN_KERNEL: (u32, u32) = (5, 5);

/// This kernel's release as uname(2) reports it (a process's personality can change it).
fn uname_release() -> String {
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

fn check_privileges() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    const CAP_PERFMON: u64 = 1 << 38;
    const CAP_BPF: u64 = 1 << 39;
    if cap_eff & CAP_SYS_ADMIN != 0 || (cap_eff & CAP_BPF != 0 && cap_eff & CAP_PERFMON != 0) {
        return Ok(());
    }
    bail!(
        "copyscope needs permission to load eBPF programs: run it as root (sudo), \
         or grant CAP_BPF and CAP_PERFMON (setcap cap_bpf,cap_perfmon+ep copyscope)"
    )
}

/// Kernel-struct offsets the programs need, from BTF.
fn struct_offsets(btf: &btf::Btf) -> Result<Vec<(&'static str, u64)>> {
    // The first three argument registers, then the syscall number and the first argument
    // as they stand at syscall exit (arch/*/include/asm/ptrace.h).
    let arch_args: [(&str, &str, u64); 5] = if cfg!(target_arch = "aarch64") {
        [
            ("user_pt_regs", "regs", 0),
            ("user_pt_regs", "regs", 8),
            ("user_pt_regs", "regs", 16),
            ("pt_regs", "syscallno", 0),
            ("pt_regs", "orig_x0", 0),
        ]
    } else {
        [
            ("pt_regs", "di", 0),
            ("pt_regs", "si", 0),
            ("pt_regs", "dx", 0),
            ("pt_regs", "orig_ax", 0),
            ("pt_regs", "di", 0),
        ]
    };
    let mut out = vec![
        (
            globals::OFF_TASK_FILES,
            btf.member_offset("task_struct", "files")?,
        ),
        (
            globals::OFF_TASK_TGID,
            btf.member_offset("task_struct", "tgid")?,
        ),
        (
            globals::OFF_TASK_PID,
            btf.member_offset("task_struct", "pid")?,
        ),
        (
            globals::OFF_FILES_FDT,
            btf.member_offset("files_struct", "fdt")?,
        ),
        (
            globals::OFF_FDT_MAX_FDS,
            btf.member_offset("fdtable", "max_fds")?,
        ),
        (globals::OFF_FDT_FD, btf.member_offset("fdtable", "fd")?),
        (
            globals::OFF_FILE_INODE,
            btf.member_offset("file", "f_inode")?,
        ),
        (
            globals::OFF_FILE_FLAGS,
            btf.member_offset("file", "f_flags")?,
        ),
        (
            globals::OFF_INODE_MODE,
            btf.member_offset("inode", "i_mode")?,
        ),
        (
            globals::OFF_INODE_RDEV,
            btf.member_offset("inode", "i_rdev")?,
        ),
    ];
    for (g, (st, member, extra)) in [
        globals::OFF_REGS_ARG0,
        globals::OFF_REGS_ARG1,
        globals::OFF_REGS_ARG2,
        globals::OFF_REGS_NR,
        globals::OFF_REGS_EXIT_ARG0,
    ]
    .into_iter()
    .zip(arch_args)
    {
        out.push((g, btf.member_offset(st, member)? + extra));
    }
    out.extend(folio_offsets(btf));
    out.extend(switch_state(btf));
    Ok(out)
}

/// Where the BTF-typed sched_switch program finds the previous task's state: the
/// tracepoint's fourth argument (5.18+), else `task_struct.__state` (`state` before 5.14).
/// Neither: that program stays unusable and the record-based one is used.
fn switch_state(btf: &btf::Btf) -> Vec<(&'static str, u64)> {
    if btf.tracepoint_args("sched_switch").is_ok_and(|n| n >= 4) {
        return vec![(globals::SWITCH_STATE_ARG, 1)];
    }
    btf.member_offset("task_struct", "__state")
        .or_else(|_| btf.member_offset("task_struct", "state"))
        .map(|off| vec![(globals::OFF_TASK_STATE, off)])
        .unwrap_or_default()
}

/// What the BTF-typed dirty program reads of a folio. Kernels without folios (before
/// 5.16) lack that program's tracepoint too, so nothing here is required; without the
/// page count of a large folio (or the head-page flag), a folio counts one page.
fn folio_offsets(btf: &btf::Btf) -> Vec<(&'static str, u64)> {
    let mut out = Vec::new();
    let (Ok(flags), Ok(index), Ok(host), Ok(ino)) = (
        btf.member_offset("folio", "flags"),
        btf.member_offset("folio", "index"),
        btf.member_offset("address_space", "host"),
        btf.member_offset("inode", "i_ino"),
    ) else {
        return out;
    };
    out.push((globals::OFF_FOLIO_FLAGS, flags));
    out.push((globals::OFF_FOLIO_INDEX, index));
    out.push((globals::OFF_MAPPING_HOST, host));
    out.push((globals::OFF_INODE_INO, ino));
    // folio_nr_pages(): `_nr_pages` from 6.9, `_folio_nr_pages` before (64-bit).
    let nr = btf
        .member_offset("folio", "_nr_pages")
        .or_else(|_| btf.member_offset("folio", "_folio_nr_pages"));
    if let (Ok(nr), Ok(head)) = (nr, btf.enum_value("pageflags", "PG_head"))
        && (0..64).contains(&head)
    {
        out.push((globals::OFF_FOLIO_NR_PAGES, nr));
        out.push((globals::FOLIO_HEAD_BIT, head as u64));
    }
    out
}

/// Tracepoint record offsets, from tracefs. Missing tracepoints leave their offsets at 0;
/// the probes that need them then fail to attach and say why.
fn record_offsets(root: &Path) -> Result<Vec<(&'static str, u64)>> {
    let mut out = Vec::new();
    if let Some(f) = tracefs::format(root, "syscalls", "sys_enter_read")? {
        let nr = f
            .get("__syscall_nr")
            .context("sys_enter_read has no __syscall_nr field")?;
        let fd = f.get("fd").context("sys_enter_read has no fd field")?;
        out.push((globals::OFF_TP_NR, nr.offset));
        out.push((globals::OFF_TP_ARGS, fd.offset));
    }
    if let Some(f) = tracefs::format(root, "syscalls", "sys_exit_read")? {
        let ret = f.get("ret").context("sys_exit_read has no ret field")?;
        let nr = f
            .get("__syscall_nr")
            .context("sys_exit_read has no __syscall_nr field")?;
        out.push((globals::OFF_TP_RET, ret.offset));
        out.push((globals::OFF_TP_EXIT_NR, nr.offset));
    }
    if let Some(f) = tracefs::format(root, "sched", "sched_switch")? {
        let st = f
            .get("prev_state")
            .context("sched_switch has no prev_state field")?;
        out.push((globals::OFF_SWITCH_PREV_STATE, st.offset));
    }
    if let Some(f) = tracefs::format(root, "filemap", "mm_filemap_get_pages")? {
        let first = f
            .get("index")
            .context("mm_filemap_get_pages has no index field")?;
        let last = f
            .get("last_index")
            .context("mm_filemap_get_pages has no last_index field")?;
        out.push((globals::OFF_GETPAGES_INDEX, first.offset));
        out.push((globals::OFF_GETPAGES_LAST, last.offset));
        let ino = f
            .get("i_ino")
            .context("mm_filemap_get_pages has no i_ino field")?;
        out.push((globals::OFF_GETPAGES_INO, ino.offset));
    }
    if let Some(f) = tracefs::format(root, "filemap", "mm_filemap_add_to_page_cache")? {
        if let Some(order) = f.get("order") {
            out.push((globals::OFF_ADD_ORDER, order.offset));
        }
        let ino = f
            .get("i_ino")
            .context("mm_filemap_add_to_page_cache has no i_ino field")?;
        let index = f
            .get("index")
            .context("mm_filemap_add_to_page_cache has no index field")?;
        out.push((globals::OFF_ADD_INO, ino.offset));
        out.push((globals::OFF_ADD_INDEX, index.offset));
    }
    // The dirty tracepoint's record, whichever of the two this kernel has.
    let dirty = match tracefs::format(root, "writeback", "writeback_dirty_folio")? {
        Some(f) => Some(("writeback_dirty_folio", f)),
        None => tracefs::format(root, "writeback", "writeback_dirty_page")?
            .map(|f| ("writeback_dirty_page", f)),
    };
    if let Some((name, f)) = dirty {
        let ino = f
            .get("ino")
            .with_context(|| format!("{name} has no ino field"))?;
        let index = f
            .get("index")
            .with_context(|| format!("{name} has no index field"))?;
        out.push((globals::OFF_DIRTY_INO, ino.offset));
        out.push((globals::OFF_DIRTY_INDEX, index.offset));
    }
    if let Some(f) = tracefs::format(root, "sock", "sock_recv_length")? {
        let ret = f.get("ret").context("sock_recv_length has no ret field")?;
        let flags = f
            .get("flags")
            .context("sock_recv_length has no flags field")?;
        out.push((globals::OFF_SOCKLEN_RET, ret.offset));
        out.push((globals::OFF_SOCKLEN_FLAGS, flags.offset));
    }
    if let Some(f) = tracefs::format(root, "sched", "sched_process_exit")? {
        if let Some(g) = f.get("group_dead") {
            out.push((globals::OFF_EXIT_GROUP_DEAD, g.offset));
        }
    }
    Ok(out)
}

/// Load the programs, fill in their globals and maps, and attach every probe.
pub fn load(opts: &LoadOptions) -> Result<Loaded> {
    if OBJECT.is_empty() {
        return Err(Unavailable::error(
            Reason::NotBuilt,
            "this copyscope was built without its eBPF programs (the BPF toolchain was missing at \
             build time): run `cargo xtask setup`, then rebuild",
        ));
    }
    check_kernel(&uname_release())
        .map_err(|e| Unavailable::error(Reason::KernelTooOld, format!("{e:#}")))?;
    check_privileges().map_err(|e| Unavailable::error(Reason::NotPermitted, format!("{e:#}")))?;
    let btf_path =
        std::env::var_os("COPYSCOPE_BTF").unwrap_or_else(|| "/sys/kernel/btf/vmlinux".into());
    if !Path::new(&btf_path).exists() {
        return Err(Unavailable::error(
            Reason::NoBtf,
            format!(
                "cannot read {}: this kernel exposes no BTF (CONFIG_DEBUG_INFO_BTF); \
                 copyscope needs it to find kernel struct offsets",
                Path::new(&btf_path).display()
            ),
        ));
    }
    let btf = btf::Btf::from_file(Path::new(&btf_path))?;
    let root = match std::env::var_os("COPYSCOPE_TRACEFS") {
        Some(p) if Path::new(&p).join("events").is_dir() => p.into(),
        Some(p) => {
            return Err(Unavailable::error(
                Reason::NoTracefs,
                format!(
                    "tracefs not found at {} (COPYSCOPE_TRACEFS): mount it with `mount -t tracefs nodev PATH`",
                    Path::new(&p).display()
                ),
            ));
        }
        None => {
            tracefs::root().map_err(|e| Unavailable::error(Reason::NoTracefs, format!("{e:#}")))?
        }
    };
    raise_memlock();

    let offsets = struct_offsets(&btf)?;
    // The raw BTF (5.5 MB here) is not needed past the offsets.
    drop(btf);
    let records = record_offsets(&root)?;
    let watch = u8::from(opts.watch_only);
    let debug = u8::from(opts.debug_log);
    let mut loader = EbpfLoader::new();
    // The object has no CO-RE relocations (the offsets above are globals), so the loader
    // needs no kernel BTF of its own: the copy it parsed is dropped here, and the one
    // tp_btf and fentry need is parsed on first use (KernelBtf), so that at most one
    // parsed copy (tens of MB) is alive at a time.
    loader.btf(None);
    for (name, value) in offsets.iter().chain(records.iter()) {
        log::debug!("global {name} = {value}");
        loader.override_global(name, value, true);
    }
    loader.override_global(globals::WATCH_ONLY, &watch, true);
    loader.override_global(globals::DEBUG_LOG, &debug, true);
    let reject = test_reject()?;
    loader.override_global(globals::TEST_REJECT, &reject, true);
    let build = pinning::build_hash(
        offsets.iter().chain(records.iter()),
        watch,
        debug ^ (reject << 1),
        &opts.disabled_families,
    );
    // Pinning: lock and check the pin, and point every shared map at it.
    let pin_plan = opts
        .pin
        .as_ref()
        .map(|req| pinning::prepare(req, &mut loader))
        .transpose()?;
    let mut ebpf = loader.load(OBJECT).map_err(|e| {
        let text = format!("{e:#}");
        // Without CAP_BPF, map creation fails first, with an error that names no errno.
        let missing = missing_capabilities();
        if !missing.is_empty() {
            Unavailable::error(
                Reason::NotPermitted,
                format!(
                    "the kernel refused to load copyscope's eBPF programs ({text}): {}",
                    eperm_cause(&missing)
                ),
            )
        } else if text.contains("EPERM") || text.contains("Operation not permitted") {
            Unavailable::error(
                Reason::NotPermitted,
                format!(
                    "the kernel refused to load copyscope's eBPF programs ({text}): run as root, \
                     and check kernel.unprivileged_bpf_disabled and lockdown"
                ),
            )
        } else {
            anyhow!("loading copyscope's eBPF programs: {text}")
        }
    })?;
    fill_syscall_index(&mut ebpf)?;

    let kernel_btf = KernelBtf {
        path: btf_path.into(),
        parsed: Default::default(),
    };
    let mut links = Vec::new();
    let Some(plan) = pin_plan else {
        let probes = attach_all(&mut ebpf, &root, &kernel_btf, &mut links, opts);
        return Ok(Loaded {
            ebpf,
            probes,
            kernel: kernel_release(),
            links,
            pinned: None,
        });
    };
    pinning::attach(ebpf, plan, build, links, |ebpf, links| {
        attach_all(ebpf, &root, &kernel_btf, links, opts)
    })
}

/// Walk the probe table, best method first.
fn attach_all(
    ebpf: &mut Ebpf,
    root: &Path,
    kernel_btf: &KernelBtf,
    links: &mut Vec<HeldLink>,
    opts: &LoadOptions,
) -> Vec<ProbeStatus> {
    PROBES
        .iter()
        .map(|spec| {
            if opts.disabled_families.iter().any(|f| f == spec.family) && !spec.required {
                return not_attached(
                    spec,
                    format!(
                        "the {} family is turned off (--disable-families)",
                        spec.family
                    ),
                    Reason::Disabled,
                );
            }
            attach_probe(ebpf, spec, root, kernel_btf, links)
        })
        .collect()
}

fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid pointer. Failure is fine from 5.11 (memcg accounting).
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK (not needed from kernel 5.11)");
    }
}

fn fill_syscall_index(ebpf: &mut Ebpf) -> Result<()> {
    let mut index: Array<_, u16> = Array::try_from(
        ebpf.map_mut(maps::SYSCALL_INDEX)
            .context("object has no SYSCALL_INDEX map")?,
    )?;
    for (i, spec) in SYSCALLS.iter().enumerate() {
        let nr = if cfg!(target_arch = "aarch64") {
            spec.nr_aarch64
        } else {
            spec.nr_x86_64
        };
        index
            .set(u32::from(nr), index_entry(i as u8), 0)
            .with_context(|| format!("filling the syscall index for {}", spec.name))?;
    }
    Ok(())
}

/// Methods named in COPYSCOPE_DISABLE_METHODS (comma-separated) are not tried: to test the
/// fallbacks, or to work around a broken method on one kernel. `METHOD` turns a method off
/// for every probe, `HOOK:METHOD` for one probe only (e.g. `sys_enter:tracepoint`).
fn disabled_methods() -> Vec<String> {
    std::env::var("COPYSCOPE_DISABLE_METHODS")
        .map(|v| {
            v.split(',')
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether COPYSCOPE_DISABLE_METHODS (see [`disabled_methods`]) turns `method` off for `hook`.
fn method_disabled(disabled: &[String], hook: &str, method: Method) -> bool {
    disabled.iter().any(|d| match d.split_once(':') {
        Some((h, m)) => h == hook && m == method.name(),
        None => d == method.name(),
    })
}

fn attach_probe(
    ebpf: &mut Ebpf,
    spec: &ProbeSpec,
    root: &Path,
    kernel_btf: &KernelBtf,
    links: &mut Vec<HeldLink>,
) -> ProbeStatus {
    let mut reasons = Vec::new();
    let mut kind: Option<Reason> = None;
    let mut note = |r: Reason| kind = Some(kind.map_or(r, |k| k.worst(r)));
    let disabled = disabled_methods();
    let missing_caps = missing_capabilities();
    for m in spec.methods {
        if method_disabled(&disabled, spec.hook, m.method) {
            reasons.push(format!(
                "{}: disabled by COPYSCOPE_DISABLE_METHODS",
                m.method.name()
            ));
            note(Reason::Disabled);
            continue;
        }
        // A method that fails part way detaches what it attached (its links drop).
        let mut attempt = Vec::new();
        match attach_one(
            ebpf,
            m.method,
            m.program,
            m.target,
            root,
            kernel_btf,
            &mut attempt,
        ) {
            Ok(mut detail) => {
                links.append(&mut attempt);
                if !reasons.is_empty() {
                    detail = format!("{detail} (better methods refused: {})", reasons.join("; "));
                }
                return ProbeStatus {
                    family: spec.family,
                    hook: spec.hook,
                    name: m.program.to_string(),
                    method: Some(m.method.name()),
                    attached: true,
                    required: spec.required,
                    detail,
                    reason: None,
                    fired: None,
                };
            }
            Err(e) => {
                log::debug!(
                    "{}/{} by {}: {e:#}",
                    spec.family,
                    spec.hook,
                    m.method.name()
                );
                note(reason::classify(m.method, &e, &missing_caps));
                reasons.push(format!(
                    "{}: {}",
                    m.method.name(),
                    explain_with(&format!("{e:#}"), &missing_caps)
                ));
            }
        }
    }
    not_attached(spec, reasons.join("; "), kind.unwrap_or(Reason::Failed))
}

/// The status of a probe that is not attached: why, and the kind of why.
fn not_attached(spec: &ProbeSpec, detail: String, reason: Reason) -> ProbeStatus {
    ProbeStatus {
        family: spec.family,
        hook: spec.hook,
        name: spec
            .methods
            .first()
            .map(|m| m.program.to_string())
            .unwrap_or_default(),
        method: None,
        attached: false,
        required: spec.required,
        detail,
        reason: Some(reason),
        fired: None,
    }
}

fn attach_one(
    ebpf: &mut Ebpf,
    method: Method,
    program: &str,
    target: Target,
    root: &Path,
    kernel_btf: &KernelBtf,
    links: &mut Vec<HeldLink>,
) -> Result<String> {
    if let Target::EveryFunction(pairs) = target {
        return attach_every_function(ebpf, method, pairs, kernel_btf, links);
    }
    let name = program.to_string();
    let prog = program_in(ebpf, program)?;
    match (method, target) {
        (Method::TpBtf, Target::Raw(tp)) => {
            let p: &mut BtfTracePoint = prog.try_into()?;
            p.load(tp, kernel_btf.get()?)?;
            let id = p
                .attach()
                .with_context(|| format!("attaching to BTF tracepoint {tp}"))?;
            links.push(HeldLink::Fd(name, p.take_link(id)?.into()));
            Ok(tp.to_string())
        }
        (
            Method::FEntry | Method::FExit | Method::KProbe | Method::KRetProbe,
            Target::Function(names),
        ) => attach_function(prog, &name, method, names, kernel_btf, links),
        (Method::RawTracepoint, Target::Raw(tp)) => {
            let p: &mut RawTracePoint = prog.try_into()?;
            p.load()?;
            let id = p
                .attach(tp)
                .with_context(|| format!("attaching to raw tracepoint {tp}"))?;
            links.push(HeldLink::Fd(name, p.take_link(id)?.into()));
            Ok(tp.to_string())
        }
        (Method::Tracepoint, Target::Tracepoint(cat, name)) => {
            if !root.join("events").join(cat).join(name).is_dir() {
                return Err(Unavailable::error(
                    Reason::NoTracepoint,
                    format!("tracepoint {cat}:{name} does not exist on this kernel"),
                ));
            }
            let p: &mut TracePoint = prog.try_into()?;
            p.load()?;
            let id = p
                .attach(cat, name)
                .with_context(|| format!("attaching to {cat}:{name}"))?;
            links.push(HeldLink::tracepoint(program, p.take_link(id)?)?);
            Ok(format!("{cat}:{name}"))
        }
        (Method::Tracepoint, Target::EachSyscall(prefix)) => {
            let names = probes::each_syscall(prefix);
            let present: Vec<_> = names
                .iter()
                .filter(|n| root.join("events/syscalls").join(n).is_dir())
                .collect();
            if present.is_empty() {
                return Err(Unavailable::error(
                    Reason::NoTracepoint,
                    format!(
                        "no syscalls:sys_{prefix}_* tracepoints (CONFIG_FTRACE_SYSCALLS unset)"
                    ),
                ));
            }
            let p: &mut TracePoint = prog.try_into()?;
            p.load()?;
            for n in &present {
                let id = p
                    .attach("syscalls", n)
                    .with_context(|| format!("attaching to syscalls:{n}"))?;
                links.push(HeldLink::tracepoint(program, p.take_link(id)?)?);
            }
            let missing: Vec<_> = names
                .iter()
                .filter(|n| !present.contains(n))
                .cloned()
                .collect();
            Ok(if missing.is_empty() {
                format!("syscalls:sys_{prefix}_* ({} tracepoints)", present.len())
            } else {
                format!(
                    "syscalls:sys_{prefix}_* ({} tracepoints; missing: {})",
                    present.len(),
                    missing.join(", ")
                )
            })
        }
        (m, t) => Err(anyhow!("method {} cannot attach to {t:?}", m.name())),
    }
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
fn eperm_cause(missing: &[&str]) -> String {
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

fn explain_with(err: &str, missing: &[&str]) -> String {
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

/// fentry/fexit bind to a function at load time, kprobes at attach time: try each name.
fn attach_function(
    prog: &mut aya::programs::Program,
    program: &str,
    method: Method,
    names: &[&str],
    kernel_btf: &KernelBtf,
    links: &mut Vec<HeldLink>,
) -> Result<String> {
    let mut errs = Vec::new();
    let mut kind: Option<Reason> = None;
    let missing_caps = missing_capabilities();
    let mut note = |e: &anyhow::Error| {
        let r = reason::classify(method, e, &missing_caps);
        kind = Some(kind.map_or(r, |k| k.worst(r)));
    };
    match method {
        Method::FEntry | Method::FExit => {
            let btf = kernel_btf.get()?;
            for name in names {
                let r: Result<()> = (|| {
                    if method == Method::FEntry {
                        let p: &mut FEntry = prog.try_into()?;
                        p.load(name, btf)?;
                        let id = p.attach()?;
                        links.push(HeldLink::Fd(program.into(), p.take_link(id)?.into()));
                    } else {
                        let p: &mut FExit = prog.try_into()?;
                        p.load(name, btf)?;
                        let id = p.attach()?;
                        links.push(HeldLink::Fd(program.into(), p.take_link(id)?.into()));
                    }
                    Ok(())
                })();
                match r {
                    Ok(()) => return Ok(name.to_string()),
                    Err(e) => {
                        note(&e);
                        errs.push(format!("{name}: {e:#}"));
                    }
                }
            }
        }
        _ => {
            let p: &mut KProbe = prog.try_into()?;
            p.load().context("loading the kprobe program")?;
            for name in names {
                match p.attach(name, 0) {
                    Ok(id) => {
                        links.push(HeldLink::kprobe(program, p.take_link(id)?)?);
                        return Ok(name.to_string());
                    }
                    Err(e) => {
                        let e = anyhow::Error::new(e);
                        note(&e);
                        errs.push(format!("{name}: {e:#}"));
                    }
                }
            }
        }
    }
    Err(Unavailable::error(
        kind.unwrap_or(Reason::Failed),
        errs.join("; "),
    ))
}

/// Attach to each listed function the kernel has; a function that exists but refuses the
/// program fails the method (a partial figure would be wrong), absent ones are named.
fn attach_every_function(
    ebpf: &mut Ebpf,
    method: Method,
    pairs: &[(&str, &str)],
    kernel_btf: &KernelBtf,
    links: &mut Vec<HeldLink>,
) -> Result<String> {
    let btf = kernel_btf.get()?;
    let (present, absent): (Vec<_>, Vec<_>) = pairs.iter().partition(|(f, _)| {
        btf.id_by_type_name_kind(f, aya_obj::btf::BtfKind::Func)
            .is_ok()
    });
    if present.is_empty() {
        return Err(Unavailable::error(
            Reason::NotInKernel,
            format!(
                "none of {} is in the kernel's BTF",
                pairs.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    let mut loaded_kprobe = false;
    for (func, program) in &present {
        let prog = program_in(ebpf, program)?;
        match method {
            Method::FEntry | Method::FExit => {
                attach_function(prog, program, method, &[func], kernel_btf, links)?;
            }
            _ => {
                let p: &mut KProbe = prog.try_into()?;
                if !loaded_kprobe {
                    p.load().context("loading the kprobe program")?;
                    loaded_kprobe = true;
                }
                let id = p
                    .attach(func, 0)
                    .with_context(|| format!("attaching to {func}"))?;
                links.push(HeldLink::kprobe(program, p.take_link(id)?)?);
            }
        }
    }
    let names: Vec<_> = present.iter().map(|p| p.0).collect();
    let mut detail = names.join(", ");
    if !absent.is_empty() {
        let gone: Vec<_> = absent.iter().map(|p| p.0).collect();
        detail.push_str(&format!(" (not in this kernel: {})", gone.join(", ")));
    }
    Ok(detail)
}

/// A program of the object by name; its absence is a build fault, said as such.
fn program_in<'a>(ebpf: &'a mut Ebpf, program: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(program).ok_or_else(|| {
        Unavailable::error(
            Reason::ProgramMissing,
            format!("program {program} missing from the object"),
        )
    })
}

/// Test-only: COPYSCOPE_TEST_REJECT=family/hook makes that required probe's programs do
/// a load the verifier refuses, so that the test tiers can show that a rejected program
/// fails them. Unset (always, outside the guard test), the branch is dead code the
/// verifier removes.
fn test_reject() -> Result<u8> {
    use copyscope_common::test_reject as r;
    let Ok(v) = std::env::var("COPYSCOPE_TEST_REJECT") else {
        return Ok(r::NONE);
    };
    Ok(match v.as_str() {
        "" => r::NONE,
        "syscalls/sys_enter" => r::SYSCALLS_ENTER,
        "syscalls/sys_exit" => r::SYSCALLS_EXIT,
        "process/sched_process_exit" => r::PROCESS_EXIT,
        other => bail!(
            "COPYSCOPE_TEST_REJECT={other}: choose syscalls/sys_enter, syscalls/sys_exit or \
             process/sched_process_exit"
        ),
    })
}

/// The kernel's BTF as aya reads it (for tp_btf, fentry and fexit), parsed at most once
/// per load however many probes need it.
struct KernelBtf {
    path: std::path::PathBuf,
    parsed: std::cell::OnceCell<aya::Btf>,
}

impl KernelBtf {
    fn get(&self) -> Result<&aya::Btf> {
        if let Some(b) = self.parsed.get() {
            return Ok(b);
        }
        let b = aya::Btf::parse_file(&self.path, aya::Endianness::default())
            .with_context(|| format!("reading kernel BTF from {}", self.path.display()))?;
        Ok(self.parsed.get_or_init(|| b))
    }
}

/// Fail when a required probe did not attach, naming each and why.
pub fn require_all(statuses: &[ProbeStatus]) -> Result<()> {
    let failed: Vec<_> = statuses
        .iter()
        .filter(|s| s.required && !s.attached)
        .map(|s| format!("{}/{}: {}", s.family, s.hook, s.detail))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!(
            "required probes could not attach:\n  {}",
            failed.join("\n  ")
        )
    }
}

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

/// bpf(2): `cmd` with `attr` as its attribute (the size passed is `A`'s). Ok with what the
/// call returned (a new fd for some commands), or the errno.
///
/// # Safety
/// `attr` must have the layout the command expects, and every pointer in it must be valid
/// for what the kernel reads or writes through it during the call.
pub(crate) unsafe fn sys_bpf<A>(cmd: libc::c_long, attr: &mut A) -> std::io::Result<i64> {
    // SAFETY: the caller vouches for attr (see above).
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, std::mem::size_of::<A>()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
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

#[cfg(test)]
mod tests {
    use super::{
        check_kernel, explain, explain_with, kernel_version, method_disabled, missing_from,
        probes::Method,
    };

    #[test]
    fn a_method_is_disabled_everywhere_or_for_one_hook() {
        let d: Vec<String> = ["tp_btf", "sys_exit:tracepoint"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(method_disabled(&d, "sys_enter", Method::TpBtf));
        assert!(method_disabled(&d, "sched_switch", Method::TpBtf));
        assert!(method_disabled(&d, "sys_exit", Method::Tracepoint));
        assert!(!method_disabled(&d, "sys_enter", Method::Tracepoint));
        assert!(!method_disabled(&d, "sys_exit", Method::RawTracepoint));
    }

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
