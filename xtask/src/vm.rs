//! `cargo xtask vm`: boot Debian kernels under QEMU (software emulation: KVM is not needed)
//! with a small busybox initramfs, run the kernel test tier and `copyscope probes` inside
//! each, and bring the results and exit status back through a 9p share.
//!
//! The workspace is shared into the guest at its own absolute path, so the static (musl)
//! test binaries find `copyscope` and `copyscope-workload` where cargo built them. Tests
//! write to an ext4 scratch disk (page-cache and O_DIRECT tests need a real file system).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{output, root, run, show, succeeds};

mod guest;
mod kernels;
mod probes;

use guest::*;
use kernels::*;
use probes::*;
pub use probes::{families, probe_faults, support_table};

/// Kernel series and the Debian suite that carries each.
pub const KERNELS: &[(&str, &str)] = &[
    ("5.10", "bullseye-security"),
    ("6.1", "bookworm-security"),
    ("6.12", "bookworm-backports"),
    ("7.2", "forky"),
];

/// The arm64 kernel the guest of `--arch arm64` boots (QEMU's virt machine, emulated).
pub const ARM64_KERNELS: &[(&str, &str)] = &[("6.1", "bookworm-security")];

/// The guest of this series boots with `-smp 2,maxcpus=WIDE_CPUS possible_cpus=WIDE_CPUS`:
/// its kernel allocates per-CPU memory for 192 CPUs, where copyscope's kernel memory is
/// measured (a test asserts its bound there; COPYSCOPE_EXPECT_POSSIBLE_CPUS tells the test
/// the count to expect). 5.10, because from 6.9 x86 takes the possible CPUs from the
/// firmware's table alone, and QEMU's pc machine announced only the 2 present ones to
/// the 6.12 guest.
const WIDE_SERIES: &str = "5.10";
const WIDE_CPUS: u32 = 192;

/// The test binary each guest runs (`agent/tests/kernel/`: its `#[ignore = "kernel tier"]`
/// tests, one module per family), one family at a time: `kernel syscalls::`, `kernel
/// sched::`, ...
pub const TEST_BINARY: &str = "kernel";

/// Modules the guest loads (when not built in): the 9p share, the scratch disk.
/// ext4 asks for crc32c through the crypto API at mount time, which an initramfs without
/// modprobe cannot answer, so it is loaded up front.
const MODULES: &[&str] = &[
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
];

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

#[derive(clap::Args)]
pub struct VmArgs {
    /// Kernel series to boot (default: all of 5.10, 6.1, 6.12, 7.2).
    #[arg(long = "kernel", value_name = "VERSION")]
    pub kernels: Vec<String>,
    /// Guests booted at once. More guests than CPUs: a guest waits (for the kernel to
    /// detach programs, for a test's sleeps) a fair part of its time, and another runs then.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Seconds one guest may run.
    #[arg(long, default_value_t = 3000)]
    pub timeout: u64,
    /// Run only these families' kernel tests (e.g. copies: the tests named `copies::...`);
    /// default all.
    #[arg(long = "only", value_name = "FAMILY")]
    pub only: Vec<String>,
    /// The guests' architecture: amd64 (5.10, 6.1, 6.12, 7.2 on the pc machine) or arm64
    /// (Debian's 6.1 arm64 kernel on the virt machine, the payload cross-built).
    #[arg(long, value_enum, default_value = "amd64")]
    pub arch: crate::image::Arch,
}

/// One family's kernel tests, as the guests run them: the kernel test binary with the
/// filter `family::`.
#[derive(Debug, Clone)]
pub struct TestRun {
    pub path: PathBuf,
    /// The family (`syscalls`), the first part of its tests' names.
    pub name: String,
    /// The kernel tests it holds, from the binary's own `--list`.
    pub tests: u64,
}

impl TestRun {
    /// The test-name filter that selects this family's tests.
    pub fn filter(&self) -> String {
        format!("{}::", self.name)
    }
}

/// What one family's kernel tests did in a guest.
#[derive(Debug, Default)]
pub struct BinaryResult {
    pub name: String,
    pub expected: u64,
    pub passed: u64,
    pub failed: u64,
    /// (test, reason) of each test that skipped.
    pub skipped: Vec<(String, String)>,
    pub seconds: f64,
}

impl BinaryResult {
    /// Every test of the family reported a result (none lost to a crash or a timeout).
    pub fn complete(&self) -> bool {
        self.passed + self.failed == self.expected
    }
}

/// What one guest reported.
#[derive(Debug, Default)]
pub struct GuestResult {
    pub series: String,
    pub release: String,
    pub passed: u64,
    pub failed: u64,
    pub status: String,
    /// family/hook -> method (or "-" with the reason).
    pub probes: BTreeMap<String, String>,
    pub seconds: f64,
    pub binaries: Vec<BinaryResult>,
    /// Required probes (or the whole load) that failed for a reason that is not a
    /// missing kernel feature, from `copyscope probes --json`.
    pub faults: Vec<String>,
    /// The guard's verdict in the guest that ran it: Ok, or why it did not hold.
    pub guard: Option<Result<(), String>>,
}

impl GuestResult {
    /// One summary row per family of kernel tests, as `cargo xtask test` prints them.
    pub fn tiers(&self) -> Vec<crate::results::Tier> {
        let mut out: Vec<crate::results::Tier> = self
            .binaries
            .iter()
            .map(|b| crate::results::Tier {
                name: format!(
                    "matrix {} ({}): {TEST_BINARY} {}",
                    self.series, self.release, b.name
                ),
                ran: (b.passed + b.failed).saturating_sub(b.skipped.len() as u64),
                // A test the binary never reported (a crash, a timeout) counts as failed.
                failed: b.failed + b.expected.saturating_sub(b.passed + b.failed),
                skipped: b.skipped.clone(),
                not_run: None,
                seconds: b.seconds,
            })
            .collect();
        if let Some(g) = &self.guard {
            out.push(crate::results::Tier {
                name: format!("matrix {} ({}): guard", self.series, self.release),
                ran: 1,
                failed: u64::from(g.is_err()),
                ..Default::default()
            });
        }
        if out.is_empty() || !self.faults.is_empty() || (self.status != "ok" && self.failed == 0) {
            out.push(crate::results::Tier {
                name: format!("matrix {} ({}): guest", self.series, self.release),
                ran: 0,
                failed: 1,
                not_run: Some(format!("{}; {}", self.status, self.faults.join("; "))),
                ..Default::default()
            });
        }
        out
    }
}

/// The kernels asked for (all of them when none is named), with their Debian suites.
fn wanted_kernels(
    asked: &[String],
    arch: crate::image::Arch,
) -> Result<Vec<(&'static str, &'static str)>> {
    let known = match arch {
        crate::image::Arch::Amd64 => KERNELS,
        crate::image::Arch::Arm64 => ARM64_KERNELS,
    };
    if asked.is_empty() {
        return Ok(known.to_vec());
    }
    asked
        .iter()
        .map(|k| {
            known
                .iter()
                .find(|(v, _)| v == k)
                .copied()
                .with_context(|| {
                    format!(
                        "unknown {} kernel {k}: choose from {:?}",
                        arch.name(),
                        known.iter().map(|k| k.0).collect::<Vec<_>>()
                    )
                })
        })
        .collect()
}

/// One guest's result, as the matrix goes.
fn say(r: &GuestResult) {
    eprintln!(
        "xtask: {} ({}): {} in {:.0} s, kernel tests {} passed, {} failed",
        r.series, r.release, r.status, r.seconds, r.passed, r.failed
    );
    for b in &r.binaries {
        eprintln!(
            "xtask:   {}: {} of {} tests reported, {} ran, {} skipped, {} failed",
            b.name,
            b.passed + b.failed,
            b.expected,
            (b.passed + b.failed).saturating_sub(b.skipped.len() as u64),
            b.skipped.len(),
            b.failed
        );
        for (test, why) in &b.skipped {
            eprintln!("xtask:     skipped {test}: {why}");
        }
    }
    if let Some(g) = &r.guard {
        eprintln!(
            "xtask:   guard: {}",
            g.as_ref().map_or_else(|e| e.clone(), |()| "held".into())
        );
    }
    for f in &r.faults {
        eprintln!("xtask:   fault: {f}");
    }
}

/// Run the matrix; returns every guest's result (an error only when the matrix could not
/// run at all). `check` turns failed guests into an error.
pub fn vm(args: VmArgs) -> Result<Vec<GuestResult>> {
    let arch = args.arch;
    let wanted = wanted_kernels(&args.kernels, arch)?;
    let t0 = Instant::now();
    let mirror = mirror()?;
    host_packages(&mirror, arch)?;
    let mut releases = Vec::new();
    for (series, suite) in &wanted {
        let rel = fetch_kernel(&mirror, suite, arch)?;
        eprintln!("xtask: kernel {series}: {rel} ({suite})");
        releases.push((series.to_string(), rel));
    }
    let busybox = busybox(&mirror, arch)?;
    let (copyscope, mut tests) = build_payload(arch)?;
    if !args.only.is_empty() {
        let unknown: Vec<&String> = args
            .only
            .iter()
            .filter(|o| !tests.iter().any(|t| &t.name == *o))
            .collect();
        if !unknown.is_empty() {
            bail!(
                "no kernel tests of {unknown:?}: choose from {:?}",
                tests.iter().map(|t| &t.name).collect::<Vec<_>>()
            );
        }
        tests.retain(|t| args.only.contains(&t.name));
    }
    let mut cpios = Vec::new();
    for (i, (_, rel)) in releases.iter().enumerate() {
        // The guard runs in the first guest only: it proves the same thing everywhere.
        cpios.push(build_initramfs(
            rel,
            &tests,
            &copyscope,
            i == 0,
            &busybox,
            arch,
        )?);
    }
    eprintln!(
        "xtask: prepared in {:.0} s; booting {} guests, {} at a time",
        t0.elapsed().as_secs_f64(),
        releases.len(),
        args.parallel
    );
    // A queue, not rounds: a worker boots the next guest as soon as its last one ends.
    // The newest kernels first: their guests run longest (more of the tests run there).
    // (Popped from the end: KERNELS lists the oldest first.)
    let queue: Vec<(String, String, PathBuf)> = releases
        .iter()
        .zip(&cpios)
        .map(|((series, rel), cpio)| (series.clone(), rel.clone(), cpio.clone()))
        .collect();
    let queue = std::sync::Mutex::new(queue);
    let done = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..args.parallel.max(1) {
            scope.spawn(|| {
                loop {
                    let Some((series, rel, cpio)) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    let wide = (arch == crate::image::Arch::Amd64 && series == WIDE_SERIES)
                        .then_some(WIDE_CPUS);
                    let r = boot(&rel, &cpio, args.timeout, &tests, wide, arch).map(|mut r| {
                        r.series = series;
                        r
                    });
                    if let Ok(r) = &r {
                        say(r);
                    }
                    done.lock().unwrap().push(r);
                }
            });
        }
    });
    let mut results: Vec<GuestResult> = Vec::new();
    for r in done.into_inner().unwrap() {
        results.push(r?);
    }
    // In the order of KERNELS, whatever order they ended in.
    results.sort_by_key(|r| wanted.iter().position(|(s, _)| *s == r.series));
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let table = support_table(&results, &host_probes(), &host_release);
    std::fs::write(work().join("support.md"), &table)?;
    println!("{table}");
    println!(
        "(written to {}; guest logs in {})",
        work().join("support.md").display(),
        work().join("out").display()
    );
    Ok(results)
}

/// Fail when a guest did not finish cleanly, a kernel test failed, a test binary did not
/// report every test it holds, a required probe failed for a reason other than a missing
/// kernel feature, or the guard did not hold.
pub fn check(results: &[GuestResult]) -> Result<()> {
    let bad: Vec<String> = results.iter().filter_map(guest_problems).collect();
    if !bad.is_empty() {
        bail!("kernel matrix failed on: {}", bad.join("; "));
    }
    Ok(())
}

fn guest_problems(r: &GuestResult) -> Option<String> {
    let mut why = Vec::new();
    if r.status != "ok" {
        why.push(r.status.clone());
    }
    if r.binaries.is_empty() {
        why.push("no test binary ran".into());
    }
    for b in &r.binaries {
        if !b.complete() {
            why.push(format!(
                "{} reported {} of its {} tests",
                b.name,
                b.passed + b.failed,
                b.expected
            ));
        }
        if b.failed > 0 {
            why.push(format!("{}: {} failed", b.name, b.failed));
        }
    }
    why.extend(r.faults.iter().cloned());
    if let Some(Err(e)) = &r.guard {
        why.push(e.clone());
    }
    (!why.is_empty()).then(|| format!("{} ({}): {}", r.series, r.release, why.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_binarys_list_gives_its_families_in_order_with_their_tests() {
        let list = "copies::pipe_copies: test\n\
                    copies::tcp_copies: test\n\
                    sched::sleep_counts_voluntary_switches: test\n\
                    syscalls::pread_is_counted: test\n\
                    syscalls::async_io::nested: test\n";
        assert_eq!(
            families(list),
            vec![
                ("copies".to_string(), 2),
                ("sched".to_string(), 1),
                ("syscalls".to_string(), 2)
            ]
        );
        assert!(families("0 tests, 0 benchmarks\n").is_empty());
    }
}
