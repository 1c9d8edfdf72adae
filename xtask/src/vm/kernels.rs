//! The Debian kernels the guests boot: the mirror, the packages, the kernel image and
//! the modules the guest needs.

use super::*;
use crate::image::Arch;

pub(super) fn work() -> PathBuf {
    root().join("target/vm")
}

/// The Debian mirror this machine's apt uses.
pub(super) fn mirror() -> Result<String> {
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
pub(super) fn apt_conf(name: &str, sources: &str) -> Result<Vec<String>> {
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

pub(super) fn source_line(mirror: &str, suite: &str) -> String {
    if suite.ends_with("-security") {
        format!("deb [signed-by={KEYRING}] {mirror}-security {suite} main\n")
    } else {
        format!("deb [signed-by={KEYRING}] {mirror} {suite} main\n")
    }
}

pub(super) fn have(cmd: &str) -> bool {
    succeeds(Command::new("sh").args(["-c", &format!("command -v {cmd}")]))
}

/// qemu, busybox, kmod, decompressors and mkfs on the host (and the cross compiler, for
/// arm64 guests).
pub(super) fn host_packages(mirror: &str, arch: Arch) -> Result<()> {
    if arch == Arch::Arm64 {
        crate::image::prepare_cross(arch)?;
    }
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
    let (qemu_command, qemu_package) = match arch {
        Arch::Amd64 => ("qemu-system-x86_64", "qemu-system-x86"),
        Arch::Arm64 => ("qemu-system-aarch64", "qemu-system-arm"),
    };
    let qemu = !have(qemu_command);
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
            install(&["-t", "bookworm-backports"], &[qemu_package])?;
        } else {
            install(&[], &[qemu_package])?;
        }
    }
    Ok(())
}

/// apt's options for one suite's packages of one architecture (its own lists).
fn suite_apt(mirror: &str, suite: &str, arch: Arch) -> Result<Vec<String>> {
    let mut apt = match arch {
        Arch::Amd64 => apt_conf(suite, &source_line(mirror, suite))?,
        a => apt_conf(
            &format!("{suite}-{}", a.name()),
            &source_line(mirror, suite),
        )?,
    };
    if arch != Arch::Amd64 {
        for o in [
            format!("APT::Architecture={}", arch.name()),
            format!("APT::Architectures={}", arch.name()),
        ] {
            apt.extend(["-o".to_string(), o]);
        }
    }
    Ok(apt)
}

/// Download and unpack the kernel of one Debian suite; returns its release string.
pub(super) fn fetch_kernel(mirror: &str, suite: &str, arch: Arch) -> Result<String> {
    let apt = suite_apt(mirror, suite, arch)?;
    run(Command::new("apt-get").args(&apt).args(["update", "-qq"]))?;
    let image = format!("linux-image-{}", arch.name());
    let madison = output(
        Command::new("apt-cache")
            .args(&apt)
            .args(["madison", &image]),
    )?;
    let meta = madison
        .lines()
        .find(|l| l.contains(&format!(" {suite}/main")))
        .and_then(|l| l.split('|').nth(1))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("no {image} in {suite}"))?;
    let show_meta = output(
        Command::new("apt-cache")
            .args(&apt)
            .args(["show", &format!("{image}={meta}")]),
    )?;
    let pkg = depends(&show_meta)
        .into_iter()
        .find(|d| {
            d.starts_with("linux-image-") && d.as_bytes().get(12).is_some_and(u8::is_ascii_digit)
        })
        .with_context(|| format!("{image} depends on no versioned image"))?;
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

/// The guest's busybox: the host's (busybox-static) for amd64 guests; Debian bookworm's
/// busybox-static of the guest's architecture otherwise, unpacked under target/vm.
pub(super) fn busybox(mirror: &str, arch: Arch) -> Result<PathBuf> {
    if arch == Arch::Amd64 {
        return Ok(PathBuf::from("/bin/busybox"));
    }
    let dir = work().join(format!("busybox-{}", arch.name()));
    let bin = dir.join("bin/busybox");
    if bin.is_file() {
        return Ok(bin);
    }
    let apt = suite_apt(mirror, "bookworm", arch)?;
    run(Command::new("apt-get").args(&apt).args(["update", "-qq"]))?;
    let dl = work().join(format!("busybox-{}-download", arch.name()));
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::create_dir_all(&dl)?;
    run(Command::new("apt-get")
        .args(&apt)
        .args(["download", "-qq", "busybox-static"])
        .current_dir(&dl))?;
    for deb in std::fs::read_dir(&dl)?.flatten() {
        run(Command::new("dpkg").arg("-x").arg(deb.path()).arg(&dir))?;
    }
    let _ = std::fs::remove_dir_all(&dl);
    if !bin.is_file() {
        bail!("busybox-static ({}) has no bin/busybox", arch.name());
    }
    Ok(bin)
}

/// Package names in a `Depends:` field.
pub(super) fn depends(show: &str) -> Vec<String> {
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

pub(super) fn vmlinuz(release: &str) -> Result<PathBuf> {
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
pub(super) fn module_path(release: &str, name: &str) -> Option<PathBuf> {
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
pub(super) fn resolve_modules(release: &str) -> Vec<PathBuf> {
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
