//! Why a probe (or the whole kernel side) is not there, as a kind a program can act on:
//! either the kernel lacks a named feature, or something else is wrong (copyscope's own
//! programs, its build, or the privileges it was given). `copyscope probes --json` carries
//! the kind next to its sentence; the kernel test tier skips only on the first sort.

use std::fmt;

use aya::programs::ProgramError;

use crate::family::Method;

/// The kind of reason. The first group names a kernel feature that is missing; the
/// second is a fault in copyscope or in how it was run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF unset).
    NoBtf,
    /// A kernel older than copyscope's minimum.
    KernelTooOld,
    /// The tracepoint (or every per-syscall tracepoint) does not exist on this kernel.
    NoTracepoint,
    /// CONFIG_KPROBES unset.
    NoKprobes,
    /// The kernel refuses BPF trampolines (fentry/fexit) even to a privileged loader.
    NoTrampoline,
    /// The kernel function is not in this kernel (not built, inlined, renamed).
    NotInKernel,
    /// copyscope was built without its eBPF programs (an empty object).
    NotBuilt,
    /// The loader lacks privileges (not root, missing CAP_BPF or CAP_PERFMON, EPERM).
    NotPermitted,
    /// tracefs is not mounted and could not be mounted.
    NoTracefs,
    /// The verifier (or the kernel's program checks) rejected copyscope's program.
    Rejected,
    /// A program the probe table names is not in the object.
    ProgramMissing,
    /// Loading or attaching failed for another reason.
    Failed,
    /// The method was turned off with COPYSCOPE_DISABLE_METHODS.
    Disabled,
    /// The program attached but did not run on an event made for it.
    NeverFired,
}

impl Reason {
    /// The kernel feature whose absence this reason is, or None when it is not one.
    pub fn missing_feature(self) -> Option<&'static str> {
        Some(match self {
            Reason::NoBtf => "kernel BTF (CONFIG_DEBUG_INFO_BTF)",
            Reason::KernelTooOld => "a kernel of at least copyscope's minimum version",
            Reason::NoTracepoint => "the tracepoint",
            Reason::NoKprobes => "kprobes (CONFIG_KPROBES)",
            Reason::NoTrampoline => "BPF trampolines (fentry/fexit)",
            Reason::NotInKernel => "the kernel function",
            _ => return None,
        })
    }

    pub fn is_missing_feature(self) -> bool {
        self.missing_feature().is_some()
    }

    /// Of two reasons for one probe, the one to report: a fault outranks a missing
    /// feature (a broken method must not hide behind a fallback the kernel lacks);
    /// otherwise the first stands.
    pub fn worst(self, other: Reason) -> Reason {
        if self.is_missing_feature() && !other.is_missing_feature() {
            other
        } else {
            self
        }
    }
}

/// An error that carries its [`Reason`]: the loader bails with it where it knows why.
#[derive(Debug)]
pub struct Unavailable {
    pub reason: Reason,
    pub message: String,
}

impl Unavailable {
    pub fn error(reason: Reason, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Unavailable {
            reason,
            message: message.into(),
        })
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Unavailable {}

/// The reason a whole load failed, from its error chain.
pub fn of_load_error(err: &anyhow::Error) -> Reason {
    err.chain()
        .find_map(|e| e.downcast_ref::<Unavailable>())
        .map_or(Reason::Failed, |u| u.reason)
}

/// The reason one attach method failed. `missing_caps` are the capabilities the loader
/// lacks (an EPERM is then theirs, not the kernel's).
pub fn classify(method: Method, err: &anyhow::Error, missing_caps: &[&str]) -> Reason {
    if let Some(u) = err.chain().find_map(|e| e.downcast_ref::<Unavailable>()) {
        return u.reason;
    }
    let text = format!("{err:#}");
    if text.contains("devices/kprobe/type") {
        return Reason::NoKprobes;
    }
    if text.contains("unknown BTF type") {
        return Reason::NotInKernel;
    }
    let eperm = |e: &std::io::Error| e.raw_os_error() == Some(libc::EPERM);
    let enoent = |e: &std::io::Error| e.raw_os_error() == Some(libc::ENOENT);
    let kprobe = matches!(method, Method::KProbe | Method::KRetProbe);
    for e in err.chain() {
        let Some(pe) = e.downcast_ref::<ProgramError>() else {
            continue;
        };
        return match pe {
            ProgramError::LoadError { io_error, .. } if eperm(io_error) => {
                if !missing_caps.is_empty() {
                    Reason::NotPermitted
                } else if matches!(method, Method::FEntry | Method::FExit) {
                    Reason::NoTrampoline
                } else {
                    Reason::NotPermitted
                }
            }
            ProgramError::LoadError { .. } => Reason::Rejected,
            ProgramError::UnexpectedProgramType => Reason::ProgramMissing,
            ProgramError::SyscallError(s) if eperm(&s.io_error) => Reason::NotPermitted,
            // A kprobe on a function the kernel does not have: perf_event_open (or the
            // kprobe_events write) answers ENOENT.
            ProgramError::SyscallError(s) if kprobe && enoent(&s.io_error) => Reason::NotInKernel,
            ProgramError::KProbeError(_) if text.contains("No such file or directory") => {
                Reason::NotInKernel
            }
            _ => Reason::Failed,
        };
    }
    if text.contains("Operation not permitted") {
        return Reason::NotPermitted;
    }
    Reason::Failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_outranks_a_missing_feature_and_the_first_feature_stands() {
        assert_eq!(
            Reason::NoKprobes.worst(Reason::Rejected),
            Reason::Rejected,
            "a rejected program must not hide behind missing kprobes"
        );
        assert_eq!(Reason::Rejected.worst(Reason::NoKprobes), Reason::Rejected);
        assert_eq!(
            Reason::NoTrampoline.worst(Reason::NoKprobes),
            Reason::NoTrampoline
        );
        assert_eq!(Reason::Disabled.worst(Reason::Rejected), Reason::Disabled);
    }

    #[test]
    fn the_shared_list_of_feature_reasons_is_this_enum_s() {
        let all = [
            Reason::NoBtf,
            Reason::KernelTooOld,
            Reason::NoTracepoint,
            Reason::NoKprobes,
            Reason::NoTrampoline,
            Reason::NotInKernel,
            Reason::NotBuilt,
            Reason::NotPermitted,
            Reason::NoTracefs,
            Reason::Rejected,
            Reason::ProgramMissing,
            Reason::Failed,
            Reason::Disabled,
            Reason::NeverFired,
        ];
        let features: Vec<String> = all
            .iter()
            .filter(|r| r.is_missing_feature())
            .map(|r| {
                serde_json::to_value(r)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(features, copyscope_common::reasons::MISSING_FEATURE);
    }

    #[test]
    fn errors_are_classified_by_their_kind_not_their_wording() {
        let verifier = anyhow::Error::new(ProgramError::LoadError {
            io_error: std::io::Error::from_raw_os_error(libc::EACCES),
            verifier_log: aya_obj::VerifierLog::new("R1 invalid mem access 'scalar'".into()),
        })
        .context("loading syscalls_enter");
        assert_eq!(
            classify(Method::RawTracepoint, &verifier, &[]),
            Reason::Rejected
        );
        let eperm = || {
            anyhow::Error::new(ProgramError::LoadError {
                io_error: std::io::Error::from_raw_os_error(libc::EPERM),
                verifier_log: aya_obj::VerifierLog::new(String::new()),
            })
        };
        assert_eq!(
            classify(Method::FEntry, &eperm(), &[]),
            Reason::NoTrampoline
        );
        assert_eq!(
            classify(Method::RawTracepoint, &eperm(), &[]),
            Reason::NotPermitted
        );
        assert_eq!(
            classify(Method::FEntry, &eperm(), &["CAP_BPF"]),
            Reason::NotPermitted,
            "an EPERM for want of capabilities is not the kernel's"
        );
        let tagged = Unavailable::error(Reason::NoTracepoint, "no sock:sock_send_length")
            .context("attaching");
        assert_eq!(
            classify(Method::Tracepoint, &tagged, &[]),
            Reason::NoTracepoint
        );
        assert_eq!(of_load_error(&tagged), Reason::NoTracepoint);
        assert_eq!(of_load_error(&anyhow::anyhow!("boom")), Reason::Failed);
        let kp = anyhow::anyhow!("error reading /sys/bus/event_source/devices/kprobe/type");
        assert_eq!(classify(Method::KProbe, &kp, &[]), Reason::NoKprobes);
        // 5.10 has no filemap_read: the kretprobe's perf_event_open answers ENOENT.
        let absent = || {
            anyhow::Error::new(ProgramError::SyscallError(aya::sys::SyscallError {
                call: "perf_event_open",
                io_error: std::io::Error::from_raw_os_error(libc::ENOENT),
            }))
        };
        assert_eq!(
            classify(Method::KRetProbe, &absent(), &[]),
            Reason::NotInKernel
        );
        assert_eq!(
            classify(Method::Tracepoint, &absent(), &[]),
            Reason::Failed,
            "only a kprobe's ENOENT means the function is absent"
        );
    }
}
