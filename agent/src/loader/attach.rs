//! Attaching: the probe table walked best method first, each method's way to attach, and
//! why a probe is not attached.

use std::{os::fd::AsFd as _, path::Path};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    programs::{BtfTracePoint, FEntry, FExit, KProbe, RawTracePoint, TracePoint},
};

use super::{
    LoadOptions, ProbeStatus,
    checks::{explain_with, missing_capabilities},
    handover::HeldLink,
};
use crate::{
    family::{self, Method, ProbeSpec, Target},
    reason::{self, Reason, Unavailable},
};

/// Walk the probe table, best method first.
pub(super) fn attach_all(
    ebpf: &mut Ebpf,
    root: &Path,
    kernel_btf: &KernelBtf,
    links: &mut Vec<HeldLink>,
    opts: &LoadOptions,
    globals: &[(&'static str, u64)],
) -> Vec<ProbeStatus> {
    family::probes()
        .map(|spec| {
            if opts
                .disabled_families
                .iter()
                .any(|f| f == spec.family.name())
                && !spec.required
            {
                return not_attached(
                    spec,
                    format!(
                        "the {} family is turned off (--disable-families)",
                        spec.family.name()
                    ),
                    Reason::Disabled,
                );
            }
            let lacking: Vec<_> = spec
                .needs
                .iter()
                .filter(|n| !globals.iter().any(|(g, _)| g == *n))
                .map(|n| {
                    family::offsets()
                        .find(|o| o.global == *n)
                        .map_or_else(|| n.to_string(), |o| o.from.describe())
                })
                .collect();
            if !lacking.is_empty() {
                return not_attached(
                    spec,
                    format!("this kernel has no {}", lacking.join(", no ")),
                    Reason::NotInKernel,
                );
            }
            attach_probe(ebpf, spec, root, kernel_btf, links)
        })
        .collect()
}

/// Methods named in COPYSCOPE_DISABLE_METHODS (comma-separated) are not tried: to test the
/// fallbacks, or to work around a broken method on one kernel. `METHOD` turns a method off
/// for every probe, `HOOK:METHOD` for one probe only (e.g. `sys_enter:tracepoint`).
pub(crate) fn disabled_methods() -> Vec<String> {
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
                if let Some(n) = ebpf
                    .program(m.program)
                    .and_then(|p| p.fd().ok())
                    .and_then(|fd| super::stats::verified_insns(fd.as_fd()))
                {
                    log::debug!(
                        "{}/{} by {}: {} verified, {n} instructions processed",
                        spec.family.name(),
                        spec.hook,
                        m.method.name(),
                        m.program
                    );
                }
                if !reasons.is_empty() {
                    detail = format!("{detail} (better methods refused: {})", reasons.join("; "));
                }
                return ProbeStatus {
                    family: spec.family.name(),
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
                    spec.family.name(),
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
        family: spec.family.name(),
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
            let names = family::syscalls::each_syscall(prefix);
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

/// The kernel's BTF as aya reads it (for tp_btf, fentry and fexit), parsed at most once
/// per load however many probes need it.
pub(super) struct KernelBtf {
    pub(super) path: std::path::PathBuf,
    pub(super) parsed: std::cell::OnceCell<aya::Btf>,
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

#[cfg(test)]
mod tests {
    use super::method_disabled;
    use crate::family::Method;

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
}
