//! One guest: its initramfs (busybox, the modules, an /init that runs the kernel tests),
//! the static test binaries it runs, and its boot under QEMU.

use super::*;
use crate::image::Arch;

/// The guest's /init (busybox sh). @ROOT@, @RUNS@, @GUARD@, @COPYSCOPE@ are filled in.
pub(super) const INIT: &str = r#"#!/bin/busybox sh
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
@HOSTUSR@
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
  # RUSTC_BOOTSTRAP lets libtest take --report-time: each test's time in the log.
  COPYSCOPE_TEST_SCRATCH=/scratch COPYSCOPE_REQUIRE_KERNEL_TESTS=1 COPYSCOPE_TEST_GUEST=1 \
    RUST_BACKTRACE=0 COPYSCOPE_SKIP_LOG="$OUT/$name.skips" RUSTC_BOOTSTRAP=1 \
    "$@" --ignored --test-threads=1 --show-output -Z unstable-options --report-time \
    > "$OUT/$name.log" 2>&1 || rc=1
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
/// In an amd64 guest: the host's /usr, read-only: the tools some kernel tests check
/// against (fio, python3, strace), with their libraries, behind the busybox applets. Its
/// dynamic loader is named by /lib64 and /lib/x86_64-linux-gnu paths (merged /usr), which
/// lead there. A guest of another architecture could not run them: the tests that need
/// them skip there, naming the tool.
const HOST_USR: &str = r#"mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostusr /usr \
  && ln -s usr/lib64 /lib64 && ln -s /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu \
  || echo "GUEST /usr mount failed""#;

pub(super) fn guard_script(binary: &Path) -> String {
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

pub(super) fn build_initramfs(
    release: &str,
    tests: &[TestRun],
    copyscope: &Path,
    guard: bool,
    busybox: &Path,
    arch: Arch,
) -> Result<PathBuf> {
    let dir = work().join("initramfs").join(release);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bin"))?;
    std::fs::create_dir_all(dir.join("lib/modules"))?;
    std::fs::create_dir_all(dir.join("dev"))?;
    std::fs::copy(busybox, dir.join("bin/busybox"))
        .with_context(|| format!("copying {} (busybox-static)", busybox.display()))?;
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
        .replace("@COPYSCOPE@", &copyscope.display().to_string())
        .replace(
            "@HOSTUSR@",
            match arch {
                Arch::Amd64 => HOST_USR,
                Arch::Arm64 => "",
            },
        );
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
pub(super) fn build_payload(arch: Arch) -> Result<(PathBuf, Vec<TestRun>)> {
    let target = arch.target();
    let _ = Command::new("rustup")
        .args(["target", "add", target])
        .status();
    let r = root();
    let mut bins = Command::new("cargo");
    bins.args([
        "build",
        "--release",
        "--target",
        target,
        "-p",
        "copyscope",
        "--bins",
    ])
    .current_dir(&r);
    crate::image::cross_env(arch, &mut bins);
    run(&mut bins)?;
    let mut cmd = Command::new("cargo");
    crate::image::cross_env(arch, &mut cmd);
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
    // Listed here: on this host, or under qemu-user for another architecture.
    let mut lister = match arch.runner() {
        Some(runner) => {
            let mut c = Command::new(runner);
            c.arg(path);
            c
        }
        None => Command::new(path),
    };
    let list = output(lister.args(["--list", "--ignored", "--format", "terse"]))?;
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

pub(super) fn boot(
    release: &str,
    cpio: &Path,
    timeout: u64,
    tests: &[TestRun],
    possible_cpus: Option<u32>,
    arch: Arch,
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
    // The machine, its CPU and its serial console, by architecture. arm64: QEMU's virt
    // machine; the pointer-authentication of `max` with QEMU's cheaper algorithm.
    let (qemu, machine, cpu, append) = match arch {
        Arch::Amd64 => ("qemu-system-x86_64", "pc", "max", append),
        Arch::Arm64 => (
            "qemu-system-aarch64",
            "virt",
            "max,pauth-impdef=on",
            append.replace("console=ttyS0", "console=ttyAMA0"),
        ),
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
        .args(["--foreground", "-k", "10", &timeout.to_string(), qemu])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-machine",
            machine,
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            cpu,
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
        .args(match arch {
            // The guest's exit status, through QEMU's.
            Arch::Amd64 => &["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"][..],
            // No such device: the status is read from the rc file the guest writes.
            Arch::Arm64 => &[],
        })
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=workspace,security_model=none,id=workspace",
            root().display()
        ))
        .args(match arch {
            Arch::Amd64 => &[
                "-virtfs",
                "local,path=/usr,mount_tag=hostusr,security_model=none,readonly=on,id=hostusr",
            ][..],
            Arch::Arm64 => &[],
        })
        .stdout(std::fs::File::create(out.join("qemu.out"))?)
        .stderr(std::fs::File::create(out.join("qemu.err"))?)
        .status()?;
    let _ = std::fs::remove_file(&disk);
    read_results(&out, release, started, status, timeout, tests)
}

/// What a guest left in its output directory: its exit status, each test binary's log and
/// skips, its `copyscope probes`, the guard's verdict.
fn read_results(
    out: &Path,
    release: &str,
    started: Instant,
    status: std::process::ExitStatus,
    timeout: u64,
    tests: &[TestRun],
) -> Result<GuestResult> {
    let mut r = GuestResult {
        series: String::new(),
        release: release.to_string(),
        seconds: started.elapsed().as_secs_f64(),
        ..Default::default()
    };
    // The rc file the guest writes last, before it powers off.
    let rc = std::fs::read_to_string(out.join("rc")).ok();
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
        // Powered off without isa-debug-exit (arm64): the rc file says.
        Some(0) if rc.is_some() => match rc.as_deref().map(str::trim) {
            Some("0") => "ok".into(),
            _ => "tests failed".into(),
        },
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
            skipped: crate::results::read_skips(&crate::results::skip_log(out, &t.name)),
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
