//! Loading the kernel programs: the checks (`checks`), the globals from the families'
//! offset tables (`offsets`), the attaching (`attach`) and the programs' run-time stats
//! (`stats`). What each family needs is declared in `crate::family`.

mod attach;
pub mod btf;
mod checks;
mod handover;
mod offsets;
mod stats;
pub mod tracefs;

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{Ebpf, EbpfLoader, maps::Array};
use copyscope_common::{
    globals, maps,
    syscalls::{SYSCALLS, index_entry},
};

pub(crate) use self::attach::disabled_methods;
use self::attach::{KernelBtf, attach_all};
pub use self::checks::{
    check_kernel, explain, kernel_release, kernel_version, missing_capabilities,
};
use self::checks::{check_privileges, eperm_cause, uname_release};
use self::handover::HeldLink;
pub use self::handover::{PinHow, PinRequest, Pinned, save_probe};
pub use self::stats::{ProgramStat, enable_bpf_stats, program_stats, program_stats_since};
pub use crate::bpf_syscall::sys_bpf;
pub use crate::reason::{Reason, Unavailable};

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
    /// Families whose probes are not attached (optional ones: `family::optional`).
    pub disabled_families: Vec<String>,
}

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

    let offsets = offsets::resolve(crate::family::offsets(), &btf, &root)?;
    // The raw BTF (5.5 MB here) is not needed past the offsets.
    drop(btf);
    let watch = u8::from(opts.watch_only);
    let debug = u8::from(opts.debug_log);
    let mut loader = EbpfLoader::new();
    // The object has no CO-RE relocations (the offsets above are globals), so the loader
    // needs no kernel BTF of its own: the copy it parsed is dropped here, and the one
    // tp_btf and fentry need is parsed on first use (KernelBtf), so that at most one
    // parsed copy (tens of MB) is alive at a time.
    loader.btf(None);
    for (name, value) in &offsets {
        log::debug!("global {name} = {value}");
        loader.override_global(name, value, true);
    }
    loader.override_global(globals::WATCH_ONLY, &watch, true);
    loader.override_global(globals::DEBUG_LOG, &debug, true);
    let reject = test_reject()?;
    loader.override_global(globals::TEST_REJECT, &reject, true);
    let build = handover::build_hash(
        offsets.iter(),
        watch,
        debug ^ (reject << 1),
        &opts.disabled_families,
    );
    // Pinning: lock and check the pin, and point every shared map at it.
    let pin_plan = opts
        .pin
        .as_ref()
        .map(|req| handover::prepare(req, &mut loader))
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
        let probes = attach_all(&mut ebpf, &root, &kernel_btf, &mut links, opts, &offsets);
        return Ok(Loaded {
            ebpf,
            probes,
            kernel: kernel_release(),
            links,
            pinned: None,
        });
    };
    handover::attach(ebpf, plan, build, links, |ebpf, links| {
        attach_all(ebpf, &root, &kernel_btf, links, opts, &offsets)
    })
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
    for (i, spec) in SYSCALLS.iter().enumerate().filter(|(_, s)| s.has_number()) {
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
