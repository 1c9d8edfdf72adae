//! Helpers for the tests that run the real binaries, shared by the three test binaries
//! (`pure`, `kernel`, `e2e`: each declares this module with `#[macro_use]`).
#![allow(dead_code, reason = "each test binary uses a different subset")]

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

/// Whether this run is strict (`cargo xtask test` and the QEMU matrix set
/// COPYSCOPE_REQUIRE_KERNEL_TESTS=1): then a kernel test may skip only where the kernel
/// lacks a feature it names, and everything else fails it.
pub fn strict() -> bool {
    std::env::var("COPYSCOPE_REQUIRE_KERNEL_TESTS").is_ok_and(|v| v == "1")
}

/// What `copyscope probes --json` found on this kernel, decided once per test binary.
struct KernelCheck {
    /// The whole kernel side cannot run: (may skip, why).
    whole: Option<(bool, String)>,
    /// The probes document (empty when the whole side cannot run).
    probes: Value,
}

fn kernel_check() -> &'static KernelCheck {
    static CHECK: std::sync::OnceLock<KernelCheck> = std::sync::OnceLock::new();
    CHECK.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return KernelCheck {
                whole: Some((false, "not root: loading eBPF programs needs root".into())),
                probes: Value::Null,
            };
        }
        let out = Command::new(COPYSCOPE)
            .args(["probes", "--json"])
            .output()
            .expect("running copyscope probes --json");
        let doc: Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(e) => {
                return KernelCheck {
                    whole: Some((
                        false,
                        format!(
                            "copyscope probes --json printed no document ({e}; {}): {}",
                            out.status,
                            String::from_utf8_lossy(&out.stderr)
                        ),
                    )),
                    probes: Value::Null,
                };
            }
        };
        let whole = if let Some(err) = doc.get("error") {
            Some((
                excused(&err["reason"]),
                format!(
                    "copyscope cannot load here ({}): {}",
                    err["reason"].as_str().unwrap_or("?"),
                    err["message"].as_str().unwrap_or("")
                ),
            ))
        } else {
            // A required probe that is not there (or never runs): the whole side is out.
            doc["probes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["required"] == true && !p["reason"].is_null())
                .map(|p| {
                    (
                        excused(&p["reason"]),
                        format!(
                            "the required probe {}/{} is not there ({}): {}",
                            p["family"].as_str().unwrap_or("?"),
                            p["hook"].as_str().unwrap_or("?"),
                            p["reason"].as_str().unwrap_or("?"),
                            p["detail"].as_str().unwrap_or("")
                        ),
                    )
                })
        };
        KernelCheck { whole, probes: doc }
    })
}

/// Whether a reason kind from `copyscope probes --json` is a kernel feature the kernel
/// lacks (the only thing that may excuse a kernel test).
fn excused(reason: &Value) -> bool {
    reason
        .as_str()
        .is_some_and(|r| copyscope_common::reasons::MISSING_FEATURE.contains(&r))
}

/// Turn a verdict into a skip reason, or fail the test: in strict mode anything but a
/// missing kernel feature is a failure, with the loader's own message.
fn verdict(may_skip: bool, why: &str) -> String {
    assert!(
        may_skip || !strict(),
        "the kernel tier cannot run, and not for want of a kernel feature: {why}"
    );
    why.to_string()
}

/// Why the kernel tests cannot run here, if they cannot (the required probes).
pub fn kernel_unavailable() -> Option<String> {
    kernel_check()
        .whole
        .as_ref()
        .map(|(may_skip, why)| verdict(*may_skip, why))
}

/// Skip the calling test, recording why: on stderr, and, when COPYSCOPE_SKIP_LOG names a
/// file, as a line `binary<TAB>test<TAB>reason` there (the tier summaries count them).
#[macro_export]
macro_rules! skip {
    ($why:expr) => {{
        fn here() {}
        $crate::common::record_skip(std::any::type_name_of_val(&here), &$why);
        return;
    }};
}

/// Skip the calling test with a reason when the kernel side cannot run.
#[macro_export]
macro_rules! require_kernel {
    () => {
        let _module = common::module_gate(module_path!());
        if let Some(why) = common::kernel_unavailable() {
            $crate::skip!(why);
        }
    };
}

/// Kernel-tier tests of one module run beside each other but never beside another
/// module's: churn's thousands of processes, or a burst of exits, would otherwise share
/// the machine with a test that waits on a pinned agent's handover.
static GATE: std::sync::Mutex<(Option<&'static str>, usize)> = std::sync::Mutex::new((None, 0));
static GATE_FREE: std::sync::Condvar = std::sync::Condvar::new();

/// Held for the rest of a kernel-tier test: see [`GATE`].
pub struct ModuleGate;

pub fn module_gate(module: &'static str) -> ModuleGate {
    let mut g = GATE.lock().unwrap_or_else(|e| e.into_inner());
    while g.0.is_some_and(|m| m != module) {
        g = GATE_FREE.wait(g).unwrap_or_else(|e| e.into_inner());
    }
    g.0 = Some(module);
    g.1 += 1;
    ModuleGate
}

impl Drop for ModuleGate {
    fn drop(&mut self) {
        let mut g = GATE.lock().unwrap_or_else(|e| e.into_inner());
        g.1 -= 1;
        if g.1 == 0 {
            g.0 = None;
            GATE_FREE.notify_all();
        }
    }
}

pub fn record_skip(here: &str, why: &str) {
    // `binary::module::test::here` -> module::test.
    let mut parts: Vec<&str> = here.split("::").collect();
    parts.pop();
    let test = parts.get(1..).map(|p| p.join("::")).unwrap_or_default();
    record_skip_of(&test, why);
}

/// [`record_skip`] for the test running on this thread (libtest names each test's thread
/// after the test), where no `skip!` can be used.
pub fn record_skip_here(why: &str) {
    let thread = std::thread::current();
    record_skip_of(thread.name().unwrap_or("?"), why);
}

fn record_skip_of(test: &str, why: &str) {
    eprintln!("skipped: {why}");
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| match s.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
            _ => s,
        })
        .unwrap_or_default();
    if let Some(path) = std::env::var_os("COPYSCOPE_SKIP_LOG") {
        use std::io::Write as _;
        let line = format!("{binary}\t{test}\t{}\n", why.replace(['\n', '\t'], " "));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("COPYSCOPE_SKIP_LOG {path:?}: {e}"));
        f.write_all(line.as_bytes()).unwrap();
    }
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
    // Clean pages may leave the cache at any time: the workload's own code, read back
    // from disk while it runs, would be page-cache misses of its own.
    copyscope::bench::io::warm_executables(&[Path::new(COPYSCOPE), Path::new(WORKLOAD)])
        .expect("reading the binaries into the page cache");
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

/// Run a command to its end. A binary the test has just copied may still be open for
/// writing in a child that another test's thread forked meanwhile (until that child
/// execs): exec then fails with ETXTBSY for a moment, and is tried again.
pub fn output_of_copied(cmd: &mut Command) -> Output {
    for _ in 0..100 {
        match cmd.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r.unwrap_or_else(|e| panic!("running {cmd:?}: {e}")),
        }
    }
    panic!("{cmd:?}: the binary stayed busy (ETXTBSY) for 2 s");
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

impl Row {
    /// Calls that all succeeded, with their bytes.
    pub fn ok(calls: u64, bytes: u64) -> Row {
        Row {
            calls,
            bytes,
            errors: 0,
        }
    }
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

/// `copyscope probes --json` of this test binary's one check.
pub fn probes_json() -> Value {
    kernel_check().probes.clone()
}

/// Why an optional probe is not attached on this kernel, if it is not: a test that needs
/// it may skip only when the kernel lacks the feature; in strict mode any other reason
/// (a rejected program, a missing one, EPERM as root) fails the test.
pub fn probe_missing(family: &str, hook: &str) -> Option<String> {
    if let Some(why) = kernel_unavailable() {
        return Some(why);
    }
    let v = &kernel_check().probes;
    let p = v["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["family"] == family && p["hook"] == hook)
        .unwrap_or_else(|| panic!("no probe {family}/{hook} in copyscope probes --json"));
    if p["attached"] == true && p["reason"].is_null() {
        return None;
    }
    Some(verdict(
        excused(&p["reason"]),
        &format!(
            "{family}/{hook} is not attached ({}): {}",
            p["reason"].as_str().unwrap_or("?"),
            p["detail"].as_str().unwrap_or("")
        ),
    ))
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

/// `copyscope snapshot --json -- fio ARGS` with `engine` (`--ioengine`) on a 32 MiB file in
/// `dir`, 64 KiB blocks, depth 8: the snapshot and fio's own JSON report.
pub fn fio_snapshot(
    engine: &str,
    dir: &Path,
    name: &str,
    args: &[&str],
) -> (serde_json::Value, serde_json::Value) {
    let data = dir.join("data");
    if !data.exists() {
        write_file(&data, 32 << 20);
    }
    let report = dir.join(format!("{name}.json"));
    let out = std::process::Command::new(COPYSCOPE)
        .args(["snapshot", "--json", "--", "fio", "--name", name])
        .arg(format!("--filename={}", data.display()))
        .args(["--size=32M", "--bs=64k", "--iodepth=8"])
        .arg(format!("--ioengine={engine}"))
        .args(["--output-format=json"])
        .arg(format!("--output={}", report.display()))
        .args(args)
        .output()
        .expect("running copyscope snapshot -- fio");
    assert_ok(&out, "copyscope snapshot -- fio");
    let snap = serde_json::from_slice(&out.stdout).expect("snapshot JSON");
    let fio = serde_json::from_str(&std::fs::read_to_string(&report).expect("fio's report"))
        .expect("fio's JSON report");
    (snap, fio)
}
