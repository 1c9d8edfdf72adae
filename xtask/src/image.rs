//! `cargo xtask image`: the container image. A static (musl) copyscope with its eBPF
//! programs embedded, built without the tui and bench features, stripped, in a FROM-scratch
//! image built by buildah (vfs storage, chroot isolation: no daemon, no registry), exported
//! as an OCI archive, then checked: the size goal, the entry point, the architecture, and
//! the binary inside answering `--version` and `probes` (which loads the embedded programs).
//!
//! `--arch amd64,arm64` builds both, and a manifest list of the two: the arm64 binary is
//! cross-built (Debian's gcc-aarch64-linux-gnu for ring's C parts and the link) and run
//! under qemu-user; its `probes` needs an arm64 kernel, which this host is not.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{is_root, output, root, run};

/// The goal for the image (its one layer, uncompressed).
const MAX_BYTES: u64 = 20_000_000;

/// What `image()` built.
pub struct Built {
    pub tag: String,
    pub archive: PathBuf,
    pub layer_bytes: u64,
}

fn buildah() -> Command {
    let mut c = Command::new("buildah");
    c.args(["--storage-driver", "vfs"]);
    c
}

fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// A CPU architecture the image is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// Its name in OCI image configurations.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    pub(crate) fn target(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-unknown-linux-musl",
            Arch::Arm64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The C compiler for ring's C parts (rustls, for the Kubernetes API), and the linker
    /// when rustc's default cannot link for this target.
    fn cc(self) -> (&'static str, Option<&'static str>) {
        match self {
            Arch::Amd64 => ("musl-gcc", None),
            Arch::Arm64 => ("aarch64-linux-gnu-gcc", Some("aarch64-linux-gnu-gcc")),
        }
    }

    fn strip(self) -> &'static str {
        match self {
            Arch::Amd64 => "strip",
            Arch::Arm64 => "aarch64-linux-gnu-strip",
        }
    }

    /// How this (x86_64) host runs the binary: itself, or under qemu-user.
    pub(crate) fn runner(self) -> Option<&'static str> {
        match self {
            Arch::Amd64 => None,
            Arch::Arm64 => Some("qemu-aarch64-static"),
        }
    }

    /// Debian packages the cross build and its check need: (package, a command it has).
    fn packages(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Arch::Amd64 => &[],
            Arch::Arm64 => &[
                ("gcc-aarch64-linux-gnu", "aarch64-linux-gnu-gcc"),
                ("libc6-dev-arm64-cross", "aarch64-linux-gnu-gcc"),
                ("qemu-user-static", "qemu-aarch64-static"),
            ],
        }
    }

    /// The image's tag: the version for amd64 (what the chart deploys by default), with
    /// the architecture after it otherwise.
    fn tag(self) -> String {
        match self {
            Arch::Amd64 => format!("localhost/copyscope:{}", version()),
            a => format!("localhost/copyscope:{}-{}", version(), a.name()),
        }
    }
}

/// Build, export and check one image per architecture and, with more than one, a manifest
/// list of them exported as one OCI archive.
pub fn images(arches: &[Arch]) -> Result<Vec<Built>> {
    if arches.is_empty() {
        bail!("no architecture asked for: --arch amd64,arm64");
    }
    if !is_root() {
        bail!("building the image needs root (buildah with vfs storage and chroot isolation)");
    }
    let mut built = Vec::new();
    for &a in arches {
        built.push(image_for(a)?);
    }
    if built.len() > 1 {
        multi_arch(&built, arches)?;
    }
    Ok(built)
}

/// The amd64 image, as `cargo xtask test` checks it.
pub fn image() -> Result<Built> {
    image_for(Arch::Amd64)
}

/// A manifest list of the images, exported with all of them as one OCI archive, and
/// checked to name every architecture.
fn multi_arch(built: &[Built], arches: &[Arch]) -> Result<()> {
    let list = format!("localhost/copyscope:{}-multiarch", version());
    let _ = buildah().args(["manifest", "rm", &list]).output();
    run(buildah().args(["manifest", "create", &list]))?;
    for b in built {
        run(buildah().args(["manifest", "add", &list, &b.tag]))?;
    }
    let archive = root().join(format!(
        "target/image/copyscope-{}-multiarch.oci.tar",
        version()
    ));
    let _ = std::fs::remove_file(&archive);
    run(buildah()
        .args(["manifest", "push", "--all", &list])
        .arg(format!("oci-archive:{}:{list}", archive.display())))?;
    let inspect: serde_json::Value =
        serde_json::from_str(&output(buildah().args(["manifest", "inspect", &list]))?)
            .context("buildah manifest inspect is not JSON")?;
    let mut listed: Vec<String> = inspect["manifests"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|e| e["platform"]["architecture"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    listed.sort();
    let mut want: Vec<String> = arches.iter().map(|a| a.name().to_string()).collect();
    want.sort();
    if listed != want {
        bail!("the manifest list {list} names {listed:?}, expected {want:?}");
    }
    eprintln!(
        "xtask: manifest list {list}: {} ({:.1} MB, {})",
        listed.join(", "),
        std::fs::metadata(&archive)?.len() as f64 / 1e6,
        archive.display()
    );
    Ok(())
}

fn image_for(arch: Arch) -> Result<Built> {
    if !is_root() {
        bail!("building the image needs root (buildah with vfs storage and chroot isolation)");
    }
    let context = root().join("target/image").join(arch.name());
    std::fs::create_dir_all(&context)?;
    let bin = build_static(arch)?;
    let staged = context.join("copyscope");
    std::fs::copy(&bin, &staged).with_context(|| format!("copying {}", bin.display()))?;
    run(Command::new(arch.strip()).arg(&staged))?;
    let layer_bytes = std::fs::metadata(&staged)?.len();

    let tag = arch.tag();
    run(buildah()
        .args(["bud", "--isolation", "chroot", "--platform"])
        .arg(format!("linux/{}", arch.name()))
        .arg("--build-arg")
        .arg(format!("VERSION={}", version()))
        .arg("-f")
        .arg(root().join("deploy/Containerfile"))
        .args(["-t", &tag])
        .arg(&context))?;
    let name = tag.rsplit(':').next().unwrap_or_default();
    let archive = root().join(format!("target/image/copyscope-{name}.oci.tar"));
    let _ = std::fs::remove_file(&archive);
    run(buildah()
        .args(["push", &tag])
        .arg(format!("oci-archive:{}:{tag}", archive.display())))?;
    let built = Built {
        tag,
        archive,
        layer_bytes,
    };
    check(&built, arch)?;
    Ok(built)
}

/// The Debian packages and the Rust target a static build for `arch` needs.
pub(crate) fn prepare_cross(arch: Arch) -> Result<()> {
    for (package, command) in arch.packages() {
        if !crate::util::succeeds(
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {command}")),
        ) {
            run(Command::new("apt-get").args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                package,
            ]))?;
        }
    }
    let target = arch.target();
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !installed.lines().any(|l| l.trim() == target) {
        run(Command::new("rustup").args(["target", "add", target]))?;
    }
    Ok(())
}

/// A cargo command's C compiler and linker for a static build for `arch`.
pub(crate) fn cross_env(arch: Arch, cmd: &mut Command) {
    let env_target = arch.target().replace('-', "_");
    let (cc, linker) = arch.cc();
    cmd.env(format!("CC_{env_target}"), cc);
    if let Some(l) = linker {
        cmd.env(
            format!("CARGO_TARGET_{}_LINKER", env_target.to_uppercase()),
            l,
        );
    }
}

/// The static binary, with the eBPF object embedded (agent/build.rs builds it).
fn build_static(arch: Arch) -> Result<PathBuf> {
    prepare_cross(arch)?;
    let target = arch.target();
    let mut cmd = Command::new("cargo");
    cmd.args([
        "build",
        "--release",
        "--package",
        "copyscope",
        "--bin",
        "copyscope",
        // No tui and no bench: no terminal view, no plotting, no image codecs or
        // fonts in the privileged agent.
        "--no-default-features",
    ])
    .args(["--target", target])
    .current_dir(root());
    cross_env(arch, &mut cmd);
    run(&mut cmd)?;
    let bin = root().join("target").join(target).join("release/copyscope");
    if !is_static(&bin)? {
        bail!("{} is not statically linked", bin.display());
    }
    Ok(bin)
}

/// An ELF file with no program interpreter (PT_INTERP) needs no dynamic loader.
fn is_static(path: &Path) -> Result<bool> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if data.get(..4) != Some(b"\x7fELF") || data.get(4) != Some(&2) {
        bail!("{} is not a 64-bit ELF file", path.display());
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into()?) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    Ok((0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(data[o..o + 4].try_into().unwrap()) != PT_INTERP
    }))
}

/// The image holds what the DaemonSet expects, and its binary runs.
fn check(b: &Built, arch: Arch) -> Result<()> {
    let archive_bytes = std::fs::metadata(&b.archive)?.len();
    eprintln!(
        "xtask: image {}: layer {:.1} MB, OCI archive {:.1} MB ({})",
        b.tag,
        b.layer_bytes as f64 / 1e6,
        archive_bytes as f64 / 1e6,
        b.archive.display()
    );
    if b.layer_bytes > MAX_BYTES || archive_bytes > MAX_BYTES {
        bail!(
            "the image is over the {} MB goal: layer {} bytes, archive {archive_bytes} bytes",
            MAX_BYTES / 1_000_000,
            b.layer_bytes
        );
    }
    let inspect: serde_json::Value = serde_json::from_str(&output(
        buildah().args(["inspect", "--type", "image", &b.tag]),
    )?)
    .context("buildah inspect is not JSON")?;
    if inspect["OCIv1"]["architecture"] != arch.name() {
        bail!(
            "the image {} is for {}, expected {}",
            b.tag,
            inspect["OCIv1"]["architecture"],
            arch.name()
        );
    }
    let config = &inspect["OCIv1"]["config"];
    if config["Entrypoint"] != serde_json::json!(["/copyscope"])
        || config["Cmd"] != serde_json::json!(["run"])
    {
        bail!(
            "the image's entry point is {} {}, expected [\"/copyscope\"] [\"run\"]",
            config["Entrypoint"],
            config["Cmd"]
        );
    }
    // Containers cannot run here, so run the binary from the mounted image.
    let ctr = output(buildah().args(["from", &b.tag]))?;
    let r = (|| {
        let mnt = PathBuf::from(output(buildah().args(["mount", &ctr]))?);
        let files: Vec<String> = std::fs::read_dir(&mnt)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if files != ["copyscope"] {
            bail!("the image holds {files:?}, expected only copyscope");
        }
        let bin = mnt.join("copyscope");
        let copyscope = || match arch.runner() {
            None => Command::new(&bin),
            Some(r) => {
                let mut c = Command::new(r);
                c.arg(&bin);
                c
            }
        };
        let v = output(copyscope().arg("--version"))?;
        if v != format!("copyscope {}", version()) {
            bail!("the image's copyscope says {v:?}");
        }
        if arch.runner().is_some() {
            // Under qemu-user the binary runs on this x86_64 kernel, whose BTF has none
            // of arm64's types: it must look for them, and say it finds none.
            let out = copyscope().arg("probes").output()?;
            let err = String::from_utf8_lossy(&out.stderr);
            if out.status.success() || !err.contains("user_pt_regs") {
                bail!(
                    "the {} copyscope's probes on this host: expected it to look for the \
                     {} registers (user_pt_regs) in the kernel's BTF and fail, got: {err}",
                    arch.name(),
                    arch.name()
                );
            }
            eprintln!(
                "xtask: the {} image's copyscope runs under {}: {v}; its probes need an {} \
                 kernel (here it looks for user_pt_regs and says this kernel has none)",
                arch.name(),
                arch.runner().unwrap_or_default(),
                arch.name()
            );
            return Ok(());
        }
        // Loads the embedded programs: the object made it into the static binary.
        let probes = output(copyscope().arg("probes"))?;
        if !probes.contains("attached") {
            bail!("the image's copyscope attached nothing:\n{probes}");
        }
        eprintln!("xtask: the image's copyscope runs: {v}; `copyscope probes` attaches");
        Ok(())
    })();
    let _ = buildah().args(["rm", &ctr]).output();
    r
}
