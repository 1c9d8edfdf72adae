//! Helpers for the tests that run the real binaries.
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

pub mod agent;
pub mod kube;
pub mod prometheus;
pub mod tls;

use serde_json::Value;

pub const COPYSCOPE: &str = env!("CARGO_BIN_EXE_copyscope");
pub const WORKLOAD: &str = env!("CARGO_BIN_EXE_copyscope-workload");

/// Why the kernel tests cannot run here, if they cannot. With
/// COPYSCOPE_REQUIRE_KERNEL_TESTS=1 (set by `cargo xtask test`), a reason that is not a
/// missing kernel feature fails the test instead of skipping it.
pub fn kernel_unavailable() -> Option<String> {
    let strict = std::env::var("COPYSCOPE_REQUIRE_KERNEL_TESTS").is_ok_and(|v| v == "1");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let why = "not root: loading eBPF programs needs root".to_string();
        assert!(!strict, "{why}");
        return Some(why);
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("kernel has no BTF (CONFIG_DEBUG_INFO_BTF)".into());
    }
    let out = Command::new(COPYSCOPE)
        .args(["probes"])
        .output()
        .expect("running copyscope probes");
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("built without its eBPF programs") {
        let why = "copyscope was built without its eBPF programs (no BPF toolchain)".to_string();
        assert!(!strict, "{why}");
        return Some(why);
    }
    if !out.status.success() {
        return Some(format!(
            "the syscall probes cannot attach on this kernel: {}{}",
            String::from_utf8_lossy(&out.stdout),
            err
        ));
    }
    None
}

/// Skip the calling test with a reason when the kernel side cannot run.
#[macro_export]
macro_rules! require_kernel {
    () => {
        if let Some(why) = common::kernel_unavailable() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// A scratch directory on the target's file system (not tmpfs: O_DIRECT and the page-cache
/// tests need a real one), or under COPYSCOPE_TEST_SCRATCH (the QEMU matrix's ext4 disk).
pub fn scratch(name: &str) -> PathBuf {
    let root = std::env::var_os("COPYSCOPE_TEST_SCRATCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let d = root.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn write_file(path: &Path, size: usize) {
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(path, data).unwrap();
}

/// `copyscope snapshot --json -- copyscope-workload ARGS`: the snapshot and the workload's
/// own result (written to a file so its output does not mix with what it measures).
pub fn run_workload(dir: &Path, args: &[&str]) -> (Value, Value) {
    run_workload_with(dir, args, &[])
}

/// [`run_workload`] with extra environment for copyscope.
pub fn run_workload_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Value, Value) {
    let out_file = dir.join(format!("result-{}", args.join("_").replace('/', "_")));
    let out = Command::new(COPYSCOPE)
        .args(["snapshot", "--json", "--", WORKLOAD])
        .args(args)
        .env("COPYSCOPE_WORKLOAD_OUT", &out_file)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("running copyscope snapshot");
    assert_ok(&out, "copyscope snapshot -- workload");
    let snap: Value = serde_json::from_slice(&out.stdout).expect("snapshot JSON");
    let result = std::fs::read_to_string(&out_file)
        .unwrap_or_else(|e| panic!("workload result {out_file:?}: {e}"));
    (snap, serde_json::from_str(&result).unwrap())
}

pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The process row for `pid` in a snapshot.
pub fn process(snap: &Value, pid: u64) -> &Value {
    snap["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"].as_u64() == Some(pid))
        .unwrap_or_else(|| panic!("pid {pid} not in snapshot: {snap:#}"))
}

/// The command's process row.
pub fn command_process(snap: &Value) -> &Value {
    process(snap, snap["command"]["pid"].as_u64().expect("command pid"))
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub calls: u64,
    pub bytes: u64,
    pub errors: u64,
}

/// (syscall, fd_kind) -> counts of one process.
pub fn rows(p: &Value) -> HashMap<(String, String), Row> {
    p["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                (
                    s["syscall"].as_str().unwrap().to_string(),
                    s["fd_kind"].as_str().unwrap().to_string(),
                ),
                Row {
                    calls: s["calls"].as_u64().unwrap(),
                    bytes: s["bytes"].as_u64().unwrap(),
                    errors: s["errors"].as_u64().unwrap(),
                },
            )
        })
        .collect()
}

/// One row of a process, zero if absent.
pub fn row(p: &Value, syscall: &str, fd_kind: &str) -> Row {
    rows(p)
        .get(&(syscall.to_string(), fd_kind.to_string()))
        .copied()
        .unwrap_or_default()
}

/// `row` in `with` minus `row` in `without`: what the workload's own loop did, with the
/// start-up of the binary (the loader's reads) taken out.
pub fn diff(with: &Value, without: &Value, syscall: &str, fd_kind: &str) -> Row {
    let a = row(with, syscall, fd_kind);
    let b = row(without, syscall, fd_kind);
    Row {
        calls: a.calls - b.calls,
        bytes: a.bytes - b.bytes,
        errors: a.errors - b.errors,
    }
}

/// The method a probe attached with in this snapshot, or why it could not be used.
pub fn probe_method(snap: &Value, family: &str, hook: &str) -> Option<String> {
    snap["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["family"] == family && p["hook"] == hook && p["attached"] == true)
        .map(|p| p["method"].as_str().unwrap().to_string())
}

/// A field of a process row as a number.
pub fn num(p: &Value, path: &[&str]) -> u64 {
    let mut v = p;
    for k in path {
        v = &v[*k];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {p:#}"))
}

/// `copyscope probes --json`, for the reasons a probe is not attached.
pub fn probes_json() -> Value {
    let out = Command::new(COPYSCOPE)
        .args(["probes", "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Why a probe is not attached on this kernel (its detail), if it is not.
pub fn probe_missing(family: &str, hook: &str) -> Option<String> {
    let v = probes_json();
    let p = v["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["family"] == family && p["hook"] == hook)?
        .clone();
    if p["attached"] == true {
        None
    } else {
        Some(p["detail"].as_str().unwrap_or("").to_string())
    }
}

/// Program runs the kernel skipped in the snapshot's window (recursion_misses: a program
/// busy on that CPU in a preempted task, seen on preemptible kernels such as 7.2 with
/// CONFIG_PREEMPT_LAZY). copyscope reports them in `dropped.program_runs_missed`.
pub fn missed_runs(snap: &Value) -> u64 {
    snap["dropped"]["program_runs_missed"].as_u64().unwrap()
}

/// How far a count may be from the workload's figure because the kernel skipped program
/// runs: each skipped run loses at most one event (a call, a copy) of the measured window
/// (`below`), or of a baseline window subtracted from it (`above`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Slack {
    pub below: u64,
    pub above: u64,
}

impl Slack {
    pub fn exact(self) -> bool {
        self.below == 0 && self.above == 0
    }
}

/// The slack of one snapshot.
pub fn slack(snap: &Value) -> Slack {
    Slack {
        below: missed_runs(snap),
        above: 0,
    }
}

/// The slack of a snapshot minus a baseline snapshot.
pub fn slack_diff(snap: &Value, base: &Value) -> Slack {
    Slack {
        below: missed_runs(snap),
        above: missed_runs(base),
    }
}

/// `got` must equal `want`, unless the kernel skipped program runs: then each skipped run
/// may have lost one event worth at most `per_event` (and no more).
pub fn assert_near(s: Slack, got: u64, want: u64, per_event: u64, what: &str) {
    if s.exact() {
        assert_eq!(got, want, "{what}");
        return;
    }
    let lo = want.saturating_sub(s.below * per_event);
    let hi = want + s.above * per_event;
    assert!(
        (lo..=hi).contains(&got),
        "{what}: {got} not within {lo}..={hi} ({want} with {s:?} skipped program runs)"
    );
    if got != want {
        eprintln!("note: {what}: {got} of {want}, the kernel skipped program runs ({s:?})");
    }
}

/// A syscall row must equal `want`, unless the kernel skipped program runs: then each
/// skipped run may have lost one call, or one call's bytes (at most `max_call_bytes`).
/// copyscope still counts a call whose enter or exit run was skipped, so calls are
/// exact unless both runs of one call were skipped.
pub fn assert_counted(s: Slack, got: Row, want: Row, max_call_bytes: u64) {
    if s.exact() {
        assert_eq!(got, want);
        return;
    }
    assert_near(s, got.calls, want.calls, 1, "calls");
    assert_near(s, got.bytes, want.bytes, max_call_bytes, "bytes");
    assert_near(s, got.errors, want.errors, 1, "errors");
}
