//! `cargo xtask image`: the container image. A static (musl) copyscope with its eBPF
//! programs embedded, built without the tui and bench features, stripped, in a FROM-scratch
//! image built by buildah (vfs storage, chroot isolation: no daemon, no registry), exported
//! as an OCI archive, then checked: the size goal, the entry point, and the binary inside
//! answering `--version` (and, as root, `probes`, which loads the embedded programs).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{is_root, output, root, run};

const TARGET: &str = "x86_64-unknown-linux-musl";
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

pub fn image() -> Result<Built> {
    if !is_root() {
        bail!("building the image needs root (buildah with vfs storage and chroot isolation)");
    }
    let context = root().join("target/image");
    std::fs::create_dir_all(&context)?;
    let bin = build_static()?;
    let staged = context.join("copyscope");
    std::fs::copy(&bin, &staged).with_context(|| format!("copying {}", bin.display()))?;
    run(Command::new("strip").arg(&staged))?;
    let layer_bytes = std::fs::metadata(&staged)?.len();

    let tag = format!("localhost/copyscope:{}", version());
    run(buildah()
        .args(["bud", "--isolation", "chroot", "--build-arg"])
        .arg(format!("VERSION={}", version()))
        .arg("-f")
        .arg(root().join("deploy/Containerfile"))
        .args(["-t", &tag])
        .arg(&context))?;
    let archive = context.join(format!("copyscope-{}.oci.tar", version()));
    let _ = std::fs::remove_file(&archive);
    run(buildah()
        .args(["push", &tag])
        .arg(format!("oci-archive:{}:{tag}", archive.display())))?;
    let built = Built {
        tag,
        archive,
        layer_bytes,
    };
    check(&built)?;
    Ok(built)
}

/// The static binary, with the eBPF object embedded (agent/build.rs builds it).
fn build_static() -> Result<PathBuf> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !installed.lines().any(|l| l.trim() == TARGET) {
        run(Command::new("rustup").args(["target", "add", TARGET]))?;
    }
    run(Command::new("cargo")
        .args([
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
        .args(["--target", TARGET])
        // ring's C parts (rustls, for the Kubernetes API) need a musl C compiler.
        .env("CC_x86_64_unknown_linux_musl", "musl-gcc")
        .current_dir(root()))?;
    let bin = root().join("target").join(TARGET).join("release/copyscope");
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
fn check(b: &Built) -> Result<()> {
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
        let v = output(Command::new(&bin).arg("--version"))?;
        if v != format!("copyscope {}", version()) {
            bail!("the image's copyscope says {v:?}");
        }
        // Loads the embedded programs: the object made it into the static binary.
        let probes = output(Command::new(&bin).arg("probes"))?;
        if !probes.contains("attached") {
            bail!("the image's copyscope attached nothing:\n{probes}");
        }
        eprintln!("xtask: the image's copyscope runs: {v}; `copyscope probes` attaches");
        Ok(())
    })();
    let _ = buildah().args(["rm", &ctr]).output();
    r
}
