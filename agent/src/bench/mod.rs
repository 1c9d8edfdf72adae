//! `copyscope bench`: the seeds' experiment on this machine. One file, transferred with
//! each method to a receiver over loopback TCP (or /dev/null, or a second file), cold and
//! warm; per method the throughput, the sender's CPU time and, with BPF permission,
//! copyscope's own counts of the sender's syscalls, mode switches, CPU copies, zero-copy
//! bytes, page-cache hits and misses and context switches. The summary compares each
//! method with read()+write() and says which of the seeds' claims held here.

pub mod io;
mod plot;
pub mod send;
pub mod summary;
mod uring;

use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    thread::JoinHandle,
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::{
    args::parse_size,
    collect::{follow, syscalls::Collector, window::window_snapshot},
    loader::{self, LoadOptions},
};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Bytes to transfer (suffixes K, M, G: powers of 1024).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub size: u64,

    /// Transfers per method and cache state; the table shows the median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,

    /// Page-cache state of the file before each transfer: cold (only the test file is
    /// dropped from the cache), warm (read once before), or both.
    #[arg(long, value_enum, default_value_t = Cache::Both)]
    pub cache: Cache,

    /// Where the bytes go: a receiver over loopback TCP, /dev/null, or a second file.
    #[arg(long, value_enum, default_value_t = Sink::Tcp)]
    pub to: Sink,

    /// Methods to run, comma-separated [default: every method the destination allows]:
    /// read-write, mmap-write, sendfile, splice, direct-uring, copy-file-range.
    #[arg(long, value_delimiter = ',', value_parser = Method::parse)]
    pub methods: Vec<Method>,

    /// Buffer of read()+write() and mmap()+write(), and the O_DIRECT read size.
    #[arg(long, default_value = "128K", value_parser = parse_size)]
    pub buffer: u64,

    /// Directory for the test file (a disk-backed file system: tmpfs has no O_DIRECT
    /// and no page cache to miss).
    #[arg(long, default_value = ".")]
    pub dir: std::path::PathBuf,

    /// One JSON document on stdout instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Also draw throughput and CPU per method to this file (.svg or .png).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<std::path::PathBuf>,
}

/// A way to move the file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    ReadWrite,
    MmapWrite,
    Sendfile,
    Splice,
    DirectUring,
    CopyFileRange,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Method::ReadWrite,
        Method::MmapWrite,
        Method::Sendfile,
        Method::Splice,
        Method::DirectUring,
        Method::CopyFileRange,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::ReadWrite => "read-write",
            Method::MmapWrite => "mmap-write",
            Method::Sendfile => "sendfile",
            Method::Splice => "splice",
            Method::DirectUring => "direct-uring",
            Method::CopyFileRange => "copy-file-range",
        }
    }

    pub fn parse(s: &str) -> Result<Method, String> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown method {s:?}: choose from {}",
                    Method::ALL.map(Method::name).join(", ")
                )
            })
    }

    /// Why this method cannot write to this destination, if it cannot.
    pub fn refuses(self, sink: Sink) -> Option<&'static str> {
        (self == Method::CopyFileRange && sink != Sink::File)
            .then_some("copy-file-range copies between files: use --to file")
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cache {
    Cold,
    Warm,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sink {
    Tcp,
    Null,
    File,
}

/// What the sender reports of its transfer.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Sent {
    pub bytes: u64,
    /// From its first system call to the receiver's last byte.
    pub seconds: f64,
    pub user_seconds: f64,
    pub system_seconds: f64,
}

/// copyscope's counts of the sender process.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    pub syscalls: u64,
    pub mode_switches: u64,
    pub cpu_copy_to_user: u64,
    pub cpu_copy_from_user: u64,
    pub zero_copy: u64,
    pub direct_io: u64,
    pub page_cache_hits: u64,
    pub page_cache_misses: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
}

impl Counts {
    pub fn cpu_copied(&self) -> u64 {
        self.cpu_copy_to_user + self.cpu_copy_from_user
    }
}

/// One transfer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub method: Method,
    /// cold or warm.
    pub cache: String,
    pub run: u32,
    pub sent: Sent,
    /// Whether the destination got exactly the file's bytes (None for /dev/null).
    pub verified: Option<bool>,
    pub counts: Option<Counts>,
}

/// The test file, removed when the benchmark ends however it ends.
struct TestFile {
    path: PathBuf,
    crc: u32,
}

impl Drop for TestFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub fn run(args: &BenchArgs) -> Result<i32> {
    let methods: Vec<Method> = if args.methods.is_empty() {
        Method::ALL
            .into_iter()
            .filter(|m| m.refuses(args.to).is_none())
            .collect()
    } else {
        let mut m = args.methods.clone();
        m.dedup();
        m
    };
    if let Some(why) = methods.iter().find_map(|m| m.refuses(args.to)) {
        bail!("{why}");
    }
    if let Some(p) = &args.plot {
        plot::check_path(p)?;
    }
    let caches: Vec<&str> = match args.cache {
        Cache::Cold => vec!["cold"],
        Cache::Warm => vec!["warm"],
        Cache::Both => vec!["cold", "warm"],
    };
    let file = create_file(&args.dir, args.size, args.to == Sink::File)?;

    // The counts: the programs count only the senders (watch-only), nothing else.
    let mut loaded = match loader::load(&LoadOptions {
        watch_only: true,
        debug_log: false,
        pin: None,
        disabled_families: Vec::new(),
    })
    .and_then(|l| loader::require_all(&l.probes).map(|_| l))
    {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!(
                "copyscope: measuring without copyscope's counts ({e:#}); run as root (or with \
                 CAP_BPF and CAP_PERFMON) for them"
            );
            None
        }
    };
    let mut collector = loaded.as_mut().map(Collector::new).transpose()?;
    let exe = std::env::current_exe().context("finding copyscope's own executable")?;

    let total = args.size * methods.len() as u64 * caches.len() as u64 * args.runs as u64;
    let progress = progress_bar(total, args.json);
    let mut runs = Vec::new();
    for cache in &caches {
        for &method in &methods {
            for run in 1..=args.runs {
                progress.set_message(format!("{method} {cache} {run}/{}", args.runs));
                prepare_cache(&file.path, cache)?;
                // The sender's own code, read back from disk, would be its page-cache
                // misses.
                io::warm_executables(&[&exe])?;
                let r = transfer(
                    &exe,
                    &file,
                    args,
                    method,
                    cache,
                    run,
                    collector.as_mut(),
                    loaded.as_ref(),
                    &progress,
                )?;
                if r.verified == Some(false) {
                    bail!(
                        "{method} ({cache}, run {run}) delivered bytes that differ from the file"
                    );
                }
                runs.push(r);
            }
        }
    }
    progress.finish_and_clear();

    let report = summary::Report::new(
        summary::Setup {
            size: args.size,
            runs: args.runs,
            to: args.to,
            buffer: args.buffer,
            dir: args.dir.display().to_string(),
            kernel: crate::loader::kernel_release(),
            counted: loaded.is_some(),
        },
        runs,
    );
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.table())?;
    }
    if let Some(p) = &args.plot {
        plot::draw(&report, p)?;
        eprintln!("copyscope: plot written to {}", p.display());
    }
    Ok(0)
}

fn progress_bar(total: u64, hidden: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal as _;
    if hidden || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:24} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

/// The test file: `size` bytes of a pattern that compresses poorly, on disk, with its CRC.
fn create_file(dir: &Path, size: u64, and_copy: bool) -> Result<TestFile> {
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("{}: give --dir an existing directory", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let cpath = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs fills the struct we pass.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    if unsafe { libc::statfs(cpath.as_ptr(), &mut fs) } == 0 && fs.f_type as i64 == TMPFS_MAGIC {
        bail!(
            "{} is tmpfs: it has no O_DIRECT and no page cache to miss; give --dir a directory on a disk",
            dir.display()
        );
    }
    let path = dir.join(format!("copyscope-bench-{}.dat", std::process::id()));
    let mut f = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| {
            format!(
                "cannot create the test file in {}: give --dir a writable directory on a disk",
                dir.display()
            )
        })?;
    let mut file = TestFile { path, crc: 0 };
    // Room for the file (and its copy) with 5% to spare.
    // SAFETY: statvfs fills the struct we pass.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(cpath.as_ptr(), &mut st) } == 0 {
        let free = st.f_bavail as u64 * st.f_frsize as u64;
        let need = size * if and_copy { 2 } else { 1 };
        if free < need + need / 20 {
            bail!(
                "{} has {} MiB free; the benchmark needs {} MiB: give a smaller --size or another --dir",
                dir.display(),
                free >> 20,
                need >> 20
            );
        }
    }
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut left = size;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            // xorshift64: cheap, and no two blocks alike.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])
            .with_context(|| format!("writing {}", file.path.display()))?;
        crc.update(&buf[..n]);
        left -= n as u64;
    }
    f.sync_all()?;
    file.crc = crc.finalize();
    Ok(file)
}

/// Cold: only this file leaves the page cache (its pages are clean after the fsync).
/// Warm: it is read once, here, uncounted.
fn prepare_cache(path: &Path, cache: &str) -> Result<()> {
    let mut f = std::fs::File::open(path)?;
    if cache == "cold" {
        f.sync_all()?;
        // SAFETY: an advice on our own descriptor.
        let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if r != 0 {
            return Err(std::io::Error::from_raw_os_error(r)).context("posix_fadvise(DONTNEED)");
        }
    } else {
        let mut buf = vec![0u8; 1 << 20];
        while f.read(&mut buf)? > 0 {}
    }
    Ok(())
}

/// The loopback receiver: one connection, every byte read, counted and checksummed.
fn receiver(progress: indicatif::ProgressBar) -> Result<(String, JoinHandle<(u64, u32)>)> {
    let l = TcpListener::bind("127.0.0.1:0").context("listening on 127.0.0.1")?;
    let addr = l.local_addr()?.to_string();
    let h = std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else {
            return (0, 0);
        };
        let mut crc = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            crc.update(&buf[..n]);
            bytes += n as u64;
            progress.inc(n as u64);
        }
        (bytes, crc.finalize())
    });
    Ok((addr, h))
}

#[allow(clippy::too_many_arguments)]
fn transfer(
    exe: &Path,
    file: &TestFile,
    args: &BenchArgs,
    method: Method,
    cache: &str,
    run: u32,
    mut collector: Option<&mut Collector>,
    loaded: Option<&loader::Loaded>,
    progress: &indicatif::ProgressBar,
) -> Result<Run> {
    let out_path = file.path.with_extension("out");
    let (to, rx) = match args.to {
        Sink::Tcp => {
            let (addr, h) = receiver(progress.clone())?;
            (format!("tcp:{addr}"), Some(h))
        }
        Sink::Null => ("null".to_string(), None),
        Sink::File => (format!("file:{}", out_path.display()), None),
    };
    let argv: Vec<String> = [
        exe.to_string_lossy().into_owned(),
        "bench-send".into(),
        "--method".into(),
        method.name().into(),
        "--file".into(),
        file.path.to_string_lossy().into_owned(),
        "--to".into(),
        to,
        "--buffer".into(),
        args.buffer.to_string(),
    ]
    .into();
    // The sender's one line of JSON comes back through a pipe.
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors, owned right away.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::fs::File::from(r).read_to_string(&mut s);
        s
    });
    let before = collector
        .as_deref_mut()
        .map(Collector::harvest)
        .transpose()?;
    let started = Instant::now();
    let exit = follow::run_held(collector.as_deref_mut(), &argv, Some(w.as_raw_fd()));
    // Our copy of the pipe's write end closes, so the reader sees the sender's end.
    drop(w);
    let exit = exit?;
    let after = collector.map(Collector::harvest).transpose()?;
    let elapsed = started.elapsed().as_secs_f64();
    let line = reader
        .join()
        .map_err(|_| anyhow!("the sender's output reader panicked"))?;
    if exit.code != 0 {
        bail!(
            "{method} failed (exit status {}): see its error above",
            exit.code
        );
    }
    let sent: Sent = serde_json::from_str(line.trim())
        .with_context(|| format!("the sender's report {line:?} is not JSON"))?;
    let verified = verify(args, rx, file, &out_path, progress, &sent)?;
    let counts = sender_counts(before, after, loaded, exit.pid, elapsed, method)?;
    Ok(Run {
        method,
        cache: cache.to_string(),
        run,
        sent,
        verified,
        counts,
    })
}

/// Whether the bytes arrived whole: the receiver's count and CRC, or the output file's;
/// None when nothing can tell (/dev/null).
fn verify(
    args: &BenchArgs,
    rx: Option<JoinHandle<(u64, u32)>>,
    file: &TestFile,
    out_path: &Path,
    progress: &indicatif::ProgressBar,
    sent: &Sent,
) -> Result<Option<bool>> {
    Ok(match (args.to, rx) {
        (Sink::Tcp, Some(h)) => {
            let (bytes, crc) = h.join().map_err(|_| anyhow!("the receiver panicked"))?;
            Some(bytes == args.size && crc == file.crc)
        }
        (Sink::File, _) => {
            let mut crc = crc32fast::Hasher::new();
            let mut f = std::fs::File::open(out_path)?;
            let mut buf = vec![0u8; 1 << 20];
            let mut bytes = 0u64;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                crc.update(&buf[..n]);
                bytes += n as u64;
            }
            std::fs::remove_file(out_path)?;
            progress.inc(bytes);
            Some(bytes == args.size && crc.finalize() == file.crc)
        }
        _ => {
            progress.inc(sent.bytes);
            None
        }
    })
}

/// What copyscope counted of the sender (`pid`) between two harvests.
fn sender_counts(
    before: Option<crate::model::Counts>,
    after: Option<crate::model::Counts>,
    loaded: Option<&loader::Loaded>,
    pid: u32,
    elapsed: f64,
    method: Method,
) -> Result<Option<Counts>> {
    Ok(match (before, after, loaded) {
        (Some(before), Some(after), Some(loaded)) => {
            let snap = window_snapshot(
                loaded,
                &before,
                &after,
                elapsed,
                &|tgid| tgid == pid,
                true,
                0,
            );
            let p = snap
                .processes
                .iter()
                .find(|p| p.pid == pid)
                .with_context(|| format!("copyscope counted nothing of the {method} sender"))?;
            Some(Counts {
                syscalls: p.calls,
                mode_switches: p.mode_switches,
                cpu_copy_to_user: p.cpu_copy_bytes.to_user,
                cpu_copy_from_user: p.cpu_copy_bytes.from_user,
                zero_copy: p.zero_copy_bytes,
                direct_io: p.direct_io_bytes,
                page_cache_hits: p.pagecache.hits,
                page_cache_misses: p.pagecache.misses,
                voluntary_switches: p.context_switches.voluntary,
                involuntary_switches: p.context_switches.involuntary,
            })
        }
        _ => None,
    })
}
