//! What the user sees when the kernel or the system is not what copyscope needs: a
//! kernel that is too old, a tracepoint that does not exist. (Not root, no BTF, no
//! tracefs and a port in use are in cli.rs; pins and bpffs in restart.rs; a remote agent
//! that goes away or answers garbage in top.rs.)

use crate::common;

use std::{path::Path, process::Command};

use common::{COPYSCOPE, scratch};

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn a_kernel_older_than_5_5_is_refused_by_name() {
    require_kernel!();
    // The UNAME26 personality makes uname(2) report a 2.6 release.
    let out = Command::new("setarch")
        .args(["x86_64", "--uname-2.6", COPYSCOPE, "probes"])
        .output()
        .expect("setarch (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("this kernel (2.6."), "{err}");
    assert!(
        err.contains("is too old: copyscope needs Linux 5.5 or later"),
        "{err}"
    );
}

/// A tracefs copy with every event's `format` (and `id`) but the ones named.
fn tracefs_without(dir: &Path, missing: &[&str]) -> std::path::PathBuf {
    let real = Path::new("/sys/kernel/tracing/events");
    let root = dir.join("tracefs");
    for cat in ["syscalls", "sched", "filemap", "sock", "writeback"] {
        let Ok(events) = std::fs::read_dir(real.join(cat)) else {
            continue;
        };
        for e in events.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !e.path().is_dir() || missing.contains(&format!("{cat}:{name}").as_str()) {
                continue;
            }
            let to = root.join("events").join(cat).join(&name);
            std::fs::create_dir_all(&to).unwrap();
            for f in ["format", "id"] {
                if let Ok(text) = std::fs::read(e.path().join(f)) {
                    std::fs::write(to.join(f), text).unwrap();
                }
            }
        }
    }
    root
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn a_missing_tracepoint_skips_its_probe_or_names_the_required_one() {
    require_kernel!();
    let d = scratch("missing-tracepoint");
    // An optional probe with no method but the tracepoint (sched_switch also attaches as
    // a BTF tracepoint, which needs no tracefs): listed as skipped, with the reason, and
    // the rest attach.
    let fs = tracefs_without(&d, &["filemap:mm_filemap_fault"]);
    let out = Command::new(COPYSCOPE)
        .args(["probes"])
        .env("COPYSCOPE_TRACEFS", &fs)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("pagecache ") && l.contains("mmap_faults"))
        .unwrap_or_else(|| panic!("no mmap_faults line:\n{text}"));
    assert!(line.contains("skipped"), "{line}");
    assert!(
        line.contains("tracepoint filemap:mm_filemap_fault does not exist on this kernel"),
        "{line}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("syscalls ") && l.contains("attached")),
        "{text}"
    );

    // A required one (process exits): copyscope run refuses to start, naming it.
    let fs = tracefs_without(&d.join("2"), &["sched:sched_process_exit"]);
    let out = Command::new(COPYSCOPE)
        .args(["run", "--no-pin", "--listen", "127.0.0.1:0"])
        .env("COPYSCOPE_TRACEFS", &fs)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("required probes could not attach"), "{err}");
    assert!(
        err.contains("process/sched_process_exit")
            && err.contains("sched:sched_process_exit does not exist on this kernel"),
        "{err}"
    );
}
