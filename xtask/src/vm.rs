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

/// Kernel series and the Debian suite that carries each.
pub const KERNELS: &[(&str, &str)] = &[
    ("5.10", "bullseye-security"),
    ("6.1", "bookworm-security"),
    ("6.12", "bookworm-backports"),
    ("7.2", "forky"),
];

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
    /// Guests booted at once.
    #[arg(long, default_value_t = 2)]
    pub parallel: usize,
    /// Seconds one guest may run.
    #[arg(long, default_value_t = 1500)]
    pub timeout: u64,
    /// Run only these families' kernel tests (e.g. copies: the tests named `copies::...`);
    /// default all.
    #[arg(long = "only", value_name = "FAMILY")]
    pub only: Vec<String>,
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

fn work() -> PathBuf {
    root().join("target/vm")
}

/// The Debian mirror this machine's apt uses.
fn mirror() -> Result<String> {
    let mut text = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".sources") || name.ends_with(".list") {
                text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    text.split_whitespace()
        .find(|w| {
            (w.starts_with("http://") || w.starts_with("https://"))
                && w.trim_end_matches('/').ends_with("/debian")
        })
        .map(|w| w.trim_end_matches('/').to_string())
        .context("no Debian mirror in /etc/apt (a line or URIs: field ending in /debian)")
}

/// apt-get/apt-cache options for a private configuration with these sources.
fn apt_conf(name: &str, sources: &str) -> Result<Vec<String>> {
    let d = work().join("apt").join(name);
    let empty = work().join("apt/empty.d");
    for p in [
        d.join("lists/partial"),
        d.join("cache/archives/partial"),
        empty.clone(),
    ] {
        std::fs::create_dir_all(&p)?;
    }
    std::fs::write(d.join("sources.list"), sources)?;
    let o = |k: &str, v: &Path| vec!["-o".to_string(), format!("{k}={}", v.display())];
    let mut args = Vec::new();
    args.extend(o("Dir::Etc::SourceList", &d.join("sources.list")));
    args.extend(o("Dir::Etc::SourceParts", &empty));
    args.extend(o("Dir::Etc::PreferencesParts", &empty));
    args.extend(o("Dir::State::Lists", &d.join("lists")));
    args.extend(o("Dir::Cache", &d.join("cache")));
    args.extend([
        "-o".into(),
        "APT::Sandbox::User=root".into(),
        "-o".into(),
        "DPkg::Lock::Timeout=600".into(),
    ]);
    Ok(args)
}

fn source_line(mirror: &str, suite: &str) -> String {
    if suite.ends_with("-security") {
        format!("deb [signed-by={KEYRING}] {mirror}-security {suite} main\n")
    } else {
        format!("deb [signed-by={KEYRING}] {mirror} {suite} main\n")
    }
}

fn have(cmd: &str) -> bool {
    succeeds(Command::new("sh").args(["-c", &format!("command -v {cmd}")]))
}

/// qemu, busybox, kmod, decompressors and mkfs on the host.
fn host_packages(mirror: &str) -> Result<()> {
    let need: Vec<&str> = [
        (
            "busybox-static",
            "test -x /bin/busybox && /bin/busybox cpio --help",
        ),
        ("kmod", "command -v modinfo"),
        ("xz-utils", "command -v xz"),
        ("zstd", "command -v zstd"),
        ("e2fsprogs", "command -v mkfs.ext4"),
    ]
    .iter()
    .filter(|(_, probe)| !succeeds(Command::new("sh").args(["-c", probe])))
    .map(|(p, _)| *p)
    .collect();
    let qemu = !have("qemu-system-x86_64");
    if need.is_empty() && !qemu {
        return Ok(());
    }
    let sources = [
        "bookworm",
        "bookworm-updates",
        "bookworm-security",
        "bookworm-backports",
    ]
    .iter()
    .map(|s| source_line(mirror, s))
    .collect::<String>();
    let apt = apt_conf("host", &sources)?;
    run(Command::new("apt-get").args(&apt).args(["update", "-qq"]))?;
    let install = |extra: &[&str], pkgs: &[&str]| {
        run(Command::new("apt-get")
            .args(&apt)
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(extra)
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    if !need.is_empty() {
        install(&[], &need)?;
    }
    if qemu {
        // Match qemu-utils: when it comes from backports, qemu-system must too.
        let utils = output(Command::new("dpkg-query").args(["-W", "-f=${Version}", "qemu-utils"]))
            .unwrap_or_default();
        if utils.contains("bpo") {
            install(&["-t", "bookworm-backports"], &["qemu-system-x86"])?;
        } else {
            install(&[], &["qemu-system-x86"])?;
        }
    }
    Ok(())
}

/// Download and unpack the kernel of one Debian suite; returns its release string.
fn fetch_kernel(mirror: &str, suite: &str) -> Result<String> {
    let apt = apt_conf(suite, &source_line(mirror, suite))?;
    run(Command::new("apt-get").args(&apt).args(["update", "-qq"]))?;
    let madison = output(
        Command::new("apt-cache")
            .args(&apt)
            .args(["madison", "linux-image-amd64"]),
    )?;
    let meta = madison
        .lines()
        .find(|l| l.contains(&format!(" {suite}/main")))
        .and_then(|l| l.split('|').nth(1))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("no linux-image-amd64 in {suite}"))?;
    let show_meta = output(
        Command::new("apt-cache")
            .args(&apt)
            .args(["show", &format!("linux-image-amd64={meta}")]),
    )?;
    let pkg = depends(&show_meta)
        .into_iter()
        .find(|d| {
            d.starts_with("linux-image-") && d.as_bytes().get(12).is_some_and(u8::is_ascii_digit)
        })
        .context("linux-image-amd64 depends on no versioned image")?;
    let release = pkg
        .trim_start_matches("linux-image-")
        .trim_end_matches("-unsigned")
        .to_string();
    let dir = work().join("kernels").join(&release);
    if vmlinuz(&release).is_ok() {
        return Ok(release);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let show_pkg = output(Command::new("apt-cache").args(&apt).args(["show", &pkg]))?;
    let mut parts = vec![pkg.clone()];
    parts.extend(
        depends(show_pkg.split("\n\n").next().unwrap_or(""))
            .into_iter()
            .filter(|d| {
                d.starts_with("linux-binary-")
                    || d.starts_with("linux-modules-")
                    || d.starts_with("linux-base-")
            }),
    );
    let dl = work().join("kernels/download");
    std::fs::create_dir_all(&dl)?;
    for p in &parts {
        run(Command::new("apt-get")
            .args(&apt)
            .args(["download", "-qq", p])
            .current_dir(&dl))?;
    }
    for deb in std::fs::read_dir(&dl)?.flatten() {
        run(Command::new("dpkg").arg("-x").arg(deb.path()).arg(&dir))?;
        std::fs::remove_file(deb.path())?;
    }
    if !dir.join("lib").exists() {
        std::os::unix::fs::symlink("usr/lib", dir.join("lib"))?;
    }
    Ok(release)
}

/// Package names in a `Depends:` field.
fn depends(show: &str) -> Vec<String> {
    show.lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .map(|d| {
            d.split([',', '|'])
                .filter_map(|x| x.split_whitespace().next())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn vmlinuz(release: &str) -> Result<PathBuf> {
    let k = work().join("kernels").join(release);
    [
        k.join(format!("boot/vmlinuz-{release}")),
        k.join(format!("usr/lib/modules/{release}/vmlinuz")),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .with_context(|| format!("no vmlinuz for {release}"))
}

/// The module's file, or None when it is built in (or absent: then the guest says so).
fn module_path(release: &str, name: &str) -> Option<PathBuf> {
    let base = work()
        .join("kernels")
        .join(release)
        .join("lib/modules")
        .join(release);
    let norm = |s: &str| s.replace('-', "_");
    let builtin = std::fs::read_to_string(base.join("modules.builtin")).unwrap_or_default();
    if builtin
        .lines()
        .any(|l| norm(l).ends_with(&format!("/{}.ko", norm(name))))
    {
        return None;
    }
    let out = output(
        Command::new("find")
            .arg(base.join("kernel"))
            .args(["-name", "*.ko*"]),
    )
    .ok()?;
    out.lines()
        .find(|l| {
            let file = l.rsplit('/').next().unwrap_or(l);
            let stem = file.split(".ko").next().unwrap_or(file);
            norm(stem) == norm(name)
        })
        .map(PathBuf::from)
}

/// Modules in load order, dependencies first.
fn resolve_modules(release: &str) -> Vec<PathBuf> {
    fn visit(release: &str, name: &str, seen: &mut Vec<String>, order: &mut Vec<PathBuf>) {
        if seen.iter().any(|s| s == name) {
            return;
        }
        seen.push(name.to_string());
        let Some(path) = module_path(release, name) else {
            return;
        };
        let deps =
            output(Command::new("modinfo").args(["-F", "depends"]).arg(&path)).unwrap_or_default();
        for d in deps.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            visit(release, d, seen, order);
        }
        order.push(path);
    }
    let (mut seen, mut order) = (Vec::new(), Vec::new());
    for m in MODULES {
        visit(release, m, &mut seen, &mut order);
    }
    order
}

/// The guest's /init (busybox sh). @ROOT@, @RUNS@, @GUARD@, @COPYSCOPE@ are filled in.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /bin /sbin /proc /sys /dev /tmp /scratch
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpffs /sys/fs/bpf 2>/dev/null
ip link set lo up
for w in $(cat /proc/cmdline); do
  case "$w" in copyscope.possible_cpus=*) export COPYSCOPE_EXPECT_POSSIBLE_CPUS="${w#*=}";; esac
done
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done < /lib/modules/load.order
mkdir -p "@ROOT@" /usr
mount -t 9p -o trans=virtio,version=9p2000.L,cache=mmap,msize=262144 workspace "@ROOT@" || echo "GUEST 9p mount failed"
# The host's /usr, read-only: the tools some kernel tests check against (fio, python3),
# with their libraries, behind the busybox applets. Its dynamic loader is named by
# /lib64 and /lib/x86_64-linux-gnu paths (merged /usr), which lead there.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostusr /usr \
  && ln -s usr/lib64 /lib64 && ln -s /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu \
  || echo "GUEST /usr mount failed"
export PATH=/bin:/sbin:/usr/bin
OUT="@ROOT@/target/vm/out/$(uname -r)"
mkdir -p "$OUT"
for i in $(seq 1 100); do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 /dev/vda /scratch || echo "GUEST scratch mount failed"
uname -r > "$OUT/release"
COPYSCOPE_LOG=debug "@COPYSCOPE@" probes --json > "$OUT/probes.json" 2> "$OUT/probes.err"
rc=0
# run_tests NAME BINARY FILTER: one family's kernel tests.
run_tests() {
  name=$1
  shift
  echo "GUEST running $name"
  start=$(date +%s)
  COPYSCOPE_TEST_SCRATCH=/scratch COPYSCOPE_REQUIRE_KERNEL_TESTS=1 COPYSCOPE_TEST_GUEST=1 \
    RUST_BACKTRACE=0 COPYSCOPE_SKIP_LOG="$OUT/$name.skips" \
    "$@" --ignored --test-threads=1 --show-output > "$OUT/$name.log" 2>&1 || rc=1
  echo $(( $(date +%s) - start )) > "$OUT/$name.seconds"
}
@RUNS@
@GUARD@
echo "$rc" > "$OUT/rc"
sync
umount /scratch 2>/dev/null
umount "@ROOT@" 2>/dev/null
printf "\\$(printf %o $((rc + 1)))" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
poweroff -f
"#;

/// The guard, in the guest that runs it: one family's kernel tests with a required
/// program the verifier rejects on purpose; they must fail (its exit status is not the
/// guest's).
fn guard_script(binary: &Path) -> String {
    format!(
        "echo \"GUEST guard\"\n\
         COPYSCOPE_TEST_SCRATCH=/scratch COPYSCOPE_REQUIRE_KERNEL_TESTS=1 RUST_BACKTRACE=0 \\\n  \
         COPYSCOPE_TEST_REJECT={} \"{}\" --ignored --test-threads=1 {} > \"$OUT/guard.log\" 2>&1\n\
         echo $? > \"$OUT/guard.rc\"",
        crate::results::GUARD_PROBE,
        binary.display(),
        crate::results::GUARD_FILTER,
    )
}

fn build_initramfs(
    release: &str,
    tests: &[TestRun],
    copyscope: &Path,
    guard: bool,
) -> Result<PathBuf> {
    let dir = work().join("initramfs").join(release);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bin"))?;
    std::fs::create_dir_all(dir.join("lib/modules"))?;
    std::fs::create_dir_all(dir.join("dev"))?;
    std::fs::copy("/bin/busybox", dir.join("bin/busybox"))
        .context("copying /bin/busybox (busybox-static)")?;
    let guard = match tests.first() {
        Some(t) if guard => guard_script(&t.path),
        _ => String::new(),
    };
    let runs: String = tests
        .iter()
        .map(|t| {
            format!(
                "run_tests {} \"{}\" {}\n",
                t.name,
                t.path.display(),
                t.filter()
            )
        })
        .collect();
    let init = INIT
        .replace("@ROOT@", &root().display().to_string())
        .replace("@RUNS@", &runs)
        .replace("@GUARD@", &guard)
        .replace("@COPYSCOPE@", &copyscope.display().to_string());
    std::fs::write(dir.join("init"), init)?;
    run(Command::new("chmod").arg("755").arg(dir.join("init")))?;
    let mut order = String::new();
    for m in resolve_modules(release) {
        let file = m.file_name().unwrap().to_string_lossy().into_owned();
        let plain = file
            .trim_end_matches(".xz")
            .trim_end_matches(".zst")
            .trim_end_matches(".gz")
            .to_string();
        let dst = dir.join("lib/modules").join(&plain);
        let tool = if file.ends_with(".xz") {
            Some("xz")
        } else if file.ends_with(".zst") {
            Some("zstd")
        } else if file.ends_with(".gz") {
            Some("gzip")
        } else {
            None
        };
        match tool {
            Some(t) => {
                let out = Command::new(t).arg("-dc").arg(&m).output()?;
                if !out.status.success() {
                    bail!("decompressing {}", m.display());
                }
                std::fs::write(&dst, out.stdout)?;
            }
            None => {
                std::fs::copy(&m, &dst)?;
            }
        }
        writeln!(order, "{plain}")?;
    }
    std::fs::write(dir.join("lib/modules/load.order"), order)?;
    let cpio = work().join("initramfs").join(format!("{release}.cpio"));
    run(Command::new("sh").arg("-c").arg(format!(
        "cd '{}' && find . | /bin/busybox cpio -o -H newc > '{}' 2>/dev/null",
        dir.display(),
        cpio.display()
    )))?;
    Ok(cpio)
}

/// Static (musl) builds of copyscope, the workload and the kernel test binary, and the
/// families of kernel tests it holds, each with its number of tests.
fn build_payload() -> Result<(PathBuf, Vec<TestRun>)> {
    let target = "x86_64-unknown-linux-musl";
    let _ = Command::new("rustup")
        .args(["target", "add", target])
        .status();
    let r = root();
    run(Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            target,
            "-p",
            "copyscope",
            "--bins",
        ])
        .current_dir(&r))?;
    let mut cmd = Command::new("cargo");
    cmd.args([
        "test",
        "--release",
        "--target",
        target,
        "-p",
        "copyscope",
        "--no-run",
        "--message-format=json",
        "--test",
        TEST_BINARY,
    ]);
    let out = cmd
        .current_dir(&r)
        .output()
        .with_context(|| format!("running {}", show(&cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            show(&cmd),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut built = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact"
            && v["profile"]["test"] == true
            && let Some(exe) = v["executable"].as_str()
        {
            built.push(PathBuf::from(exe));
        }
    }
    let [path] = built.as_slice() else {
        bail!(
            "expected one kernel test binary ({TEST_BINARY}), cargo built {}",
            built.len()
        );
    };
    let list = output(Command::new(path).args(["--list", "--ignored", "--format", "terse"]))?;
    let families = families(&list);
    if families.is_empty() {
        bail!("{} lists no kernel tests", path.display());
    }
    let runs = families
        .into_iter()
        .map(|(name, tests)| TestRun {
            path: path.clone(),
            name,
            tests,
        })
        .collect();
    Ok((r.join(format!("target/{target}/release/copyscope")), runs))
}

/// The families of a kernel test binary's `--list --format terse` output (the first part
/// of each `family::test: test` line), in order, each with its number of tests.
pub fn families(list: &str) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for l in list.lines().filter_map(|l| l.strip_suffix(": test")) {
        let family = l.split_once("::").map_or(l, |(f, _)| f);
        match out.iter_mut().find(|(f, _)| f == family) {
            Some((_, n)) => *n += 1,
            None => out.push((family.to_string(), 1)),
        }
    }
    out
}

/// Faults in a guest's `copyscope probes --json`: the whole load, or a required probe,
/// failing for a reason that is not a missing kernel feature.
pub fn probe_faults(v: &serde_json::Value) -> Vec<String> {
    use copyscope_common::reasons::MISSING_FEATURE;
    let excused = |r: &serde_json::Value| r.as_str().is_some_and(|r| MISSING_FEATURE.contains(&r));
    let mut out = Vec::new();
    if v.is_null() {
        out.push("copyscope probes --json printed no document".to_string());
    }
    if let Some(e) = v.get("error")
        && !excused(&e["reason"])
    {
        out.push(format!(
            "copyscope cannot load ({}): {}",
            e["reason"].as_str().unwrap_or("?"),
            e["message"].as_str().unwrap_or("")
        ));
    }
    for p in v["probes"].as_array().into_iter().flatten() {
        if p["required"] == true && !p["reason"].is_null() && !excused(&p["reason"]) {
            out.push(format!(
                "required probe {}/{} ({}): {}",
                p["family"].as_str().unwrap_or("?"),
                p["hook"].as_str().unwrap_or("?"),
                p["reason"].as_str().unwrap_or("?"),
                p["detail"].as_str().unwrap_or("")
            ));
        }
    }
    out
}

fn boot(
    release: &str,
    cpio: &Path,
    timeout: u64,
    tests: &[TestRun],
    possible_cpus: Option<u32>,
) -> Result<GuestResult> {
    let (smp, append) = match possible_cpus {
        Some(n) => (
            format!("2,maxcpus={n}"),
            // possible_cpus= (arch/x86/kernel/smpboot.c): the firmware's table alone
            // may announce fewer CPUs than maxcpus.
            format!("console=ttyS0 quiet panic=-1 possible_cpus={n} copyscope.possible_cpus={n}"),
        ),
        None => ("1".to_string(), "console=ttyS0 quiet panic=-1".to_string()),
    };
    let out = work().join("out").join(release);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let disk = work().join("disks").join(format!("{release}.img"));
    std::fs::create_dir_all(disk.parent().unwrap())?;
    let _ = std::fs::remove_file(&disk);
    std::fs::File::create(&disk)?.set_len(1 << 30)?;
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&disk))?;
    let started = Instant::now();
    let serial = out.join("serial.log");
    let status = Command::new("timeout")
        .args([
            "--foreground",
            "-k",
            "10",
            &timeout.to_string(),
            "qemu-system-x86_64",
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-machine",
            "pc",
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
        ])
        .args([
            "-smp",
            &smp,
            "-m",
            "2048",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-kernel")
        .arg(vmlinuz(release)?)
        .arg("-initrd")
        .arg(cpio)
        .args(["-append", &append])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=workspace,security_model=none,id=workspace",
            root().display()
        ))
        .args([
            "-virtfs",
            "local,path=/usr,mount_tag=hostusr,security_model=none,readonly=on,id=hostusr",
        ])
        .stdout(std::fs::File::create(out.join("qemu.out"))?)
        .stderr(std::fs::File::create(out.join("qemu.err"))?)
        .status()?;
    let _ = std::fs::remove_file(&disk);
    let mut r = GuestResult {
        series: String::new(),
        release: release.to_string(),
        seconds: started.elapsed().as_secs_f64(),
        ..Default::default()
    };
    // isa-debug-exit: QEMU exits with (code << 1) | 1; the guest writes rc + 1.
    r.status = match status.code() {
        Some(124) | Some(137) => format!("timed out after {timeout} s"),
        Some(c) if c >= 3 && c % 2 == 1 => {
            if (c - 3) / 2 == 0 {
                "ok".into()
            } else {
                "tests failed".into()
            }
        }
        other => format!(
            "qemu failed ({other:?}): {}",
            std::fs::read_to_string(out.join("qemu.err"))
                .unwrap_or_default()
                .trim()
        ),
    };
    for t in tests {
        let log = std::fs::read_to_string(out.join(format!("{}.log", t.name))).unwrap_or_default();
        let mut b = BinaryResult {
            name: t.name.clone(),
            expected: t.tests,
            skipped: crate::results::read_skips(&crate::results::skip_log(&out, &t.name)),
            seconds: std::fs::read_to_string(out.join(format!("{}.seconds", t.name)))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0.0),
            ..Default::default()
        };
        for l in log.lines() {
            if let Some(c) = crate::results::parse_result(l) {
                b.passed += c.passed;
                b.failed += c.failed;
            }
        }
        r.passed += b.passed;
        r.failed += b.failed;
        r.binaries.push(b);
    }
    let probes = std::fs::read_to_string(out.join("probes.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .unwrap_or_default();
    r.probes = probe_methods(&probes);
    r.faults = probe_faults(&probes);
    if let Ok(rc) = std::fs::read_to_string(out.join("guard.rc")) {
        let log = std::fs::read_to_string(out.join("guard.log")).unwrap_or_default();
        r.guard = Some(
            crate::results::guard_verdict(rc.trim() == "0", &log).map_err(|e| format!("{e:#}")),
        );
    }
    Ok(r)
}

/// family/hook -> the method used, or "-", from `copyscope probes --json`.
fn probe_methods(v: &serde_json::Value) -> BTreeMap<String, String> {
    v["probes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let key = format!(
                "{}/{}",
                p["family"].as_str().unwrap_or("?"),
                p["hook"].as_str().unwrap_or("?")
            );
            let m = if p["attached"] == true {
                p["method"].as_str().unwrap_or("?")
            } else {
                "-"
            };
            (key, m.to_string())
        })
        .collect()
}

/// Probe methods on this host, for the support table's last column.
fn host_probes() -> BTreeMap<String, String> {
    let bin = root().join("target/x86_64-unknown-linux-musl/release/copyscope");
    let Ok(out) = Command::new(bin).args(["probes", "--json"]).output() else {
        return BTreeMap::new();
    };
    probe_methods(&serde_json::from_slice(&out.stdout).unwrap_or_default())
}

/// A Markdown table: per probe, the method each kernel used.
pub fn support_table(
    results: &[GuestResult],
    host: &BTreeMap<String, String>,
    host_release: &str,
) -> String {
    let mut keys: Vec<&String> = results
        .iter()
        .flat_map(|r| r.probes.keys())
        .chain(host.keys())
        .collect();
    keys.sort();
    keys.dedup();
    let mut t = String::from("| probe |");
    for r in results {
        let _ = write!(t, " {} |", r.release);
    }
    let _ = writeln!(t, " {host_release} (host) |");
    t.push_str("|---|");
    for _ in 0..=results.len() {
        t.push_str("---|");
    }
    t.push('\n');
    for k in keys {
        let _ = write!(t, "| {k} |");
        for r in results {
            let _ = write!(t, " {} |", r.probes.get(k).map_or("?", String::as_str));
        }
        let _ = writeln!(t, " {} |", host.get(k).map_or("?", String::as_str));
    }
    t.push_str("| kernel tests passed / failed |");
    for r in results {
        let _ = write!(t, " {} / {} |", r.passed, r.failed);
    }
    t.push_str(" see `cargo xtask test` |\n");
    t
}

/// Run the matrix; returns every guest's result (an error only when the matrix could not
/// run at all). `check` turns failed guests into an error.
pub fn vm(args: VmArgs) -> Result<Vec<GuestResult>> {
    let wanted: Vec<(&str, &str)> = if args.kernels.is_empty() {
        KERNELS.to_vec()
    } else {
        args.kernels
            .iter()
            .map(|k| {
                KERNELS
                    .iter()
                    .find(|(v, _)| v == k)
                    .copied()
                    .with_context(|| {
                        format!(
                            "unknown kernel {k}: choose from {:?}",
                            KERNELS.iter().map(|k| k.0).collect::<Vec<_>>()
                        )
                    })
            })
            .collect::<Result<_>>()?
    };
    let t0 = Instant::now();
    let mirror = mirror()?;
    host_packages(&mirror)?;
    let mut releases = Vec::new();
    for (series, suite) in &wanted {
        let rel = fetch_kernel(&mirror, suite)?;
        eprintln!("xtask: kernel {series}: {rel} ({suite})");
        releases.push((series.to_string(), rel));
    }
    let (copyscope, mut tests) = build_payload()?;
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
        cpios.push(build_initramfs(rel, &tests, &copyscope, i == 0)?);
    }
    eprintln!(
        "xtask: prepared in {:.0} s; booting {} guests, {} at a time",
        t0.elapsed().as_secs_f64(),
        releases.len(),
        args.parallel
    );
    let mut results: Vec<GuestResult> = Vec::new();
    for chunk in releases
        .iter()
        .zip(&cpios)
        .collect::<Vec<_>>()
        .chunks(args.parallel.max(1))
    {
        let handles: Vec<_> = chunk
            .iter()
            .map(|((series, rel), cpio)| {
                let (series, rel, cpio, timeout, tests) = (
                    series.clone(),
                    rel.clone(),
                    (*cpio).clone(),
                    args.timeout,
                    tests.clone(),
                );
                std::thread::spawn(move || {
                    let wide = (series == WIDE_SERIES).then_some(WIDE_CPUS);
                    boot(&rel, &cpio, timeout, &tests, wide).map(|mut r| {
                        r.series = series;
                        r
                    })
                })
            })
            .collect();
        for h in handles {
            let r = h
                .join()
                .map_err(|_| anyhow::anyhow!("a guest thread panicked"))??;
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
            results.push(r);
        }
    }
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
