//! One transfer, in its own process (`copyscope bench-send`): the file to a socket,
//! /dev/null or a second file with one method, timed and with its own CPU time. It prints
//! one JSON line ([`Sent`]) on stdout. Everything it does is the method's system calls:
//! copyscope counts this process and nothing else.

use std::{
    fs::File,
    io::Write as _,
    net::TcpStream,
    os::{
        fd::{AsRawFd as _, RawFd},
        unix::fs::OpenOptionsExt as _,
    },
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use super::{
    Method, Sent,
    io::{SplicePipe, check, copy_file_range_all, sendfile_all, splice_all, write_all},
};

#[derive(Debug, clap::Args)]
pub struct BenchSendArgs {
    #[arg(long, value_parser = Method::parse)]
    pub method: Method,
    #[arg(long)]
    pub file: std::path::PathBuf,
    /// tcp:HOST:PORT, null, or file:PATH.
    #[arg(long)]
    pub to: String,
    #[arg(long)]
    pub buffer: u64,
}

/// Where the sender writes.
enum Out {
    Tcp(TcpStream),
    File(File),
}

impl Out {
    fn fd(&self) -> RawFd {
        match self {
            Out::Tcp(s) => s.as_raw_fd(),
            Out::File(f) => f.as_raw_fd(),
        }
    }
}

pub fn run(args: &BenchSendArgs) -> Result<i32> {
    let out = match args.to.split_once(':') {
        Some(("tcp", addr)) => {
            Out::Tcp(TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?)
        }
        Some(("file", path)) => Out::File(
            File::options()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)
                .with_context(|| format!("creating {path}"))?,
        ),
        _ if args.to == "null" => Out::File(File::options().write(true).open("/dev/null")?),
        _ => bail!("--to {}: give tcp:HOST:PORT, null or file:PATH", args.to),
    };
    let before = rusage();
    let t0 = Instant::now();
    let bytes = transfer(args.method, &args.file, &out, args.buffer as usize)?;
    if let Out::Tcp(s) = &out {
        // The transfer ends when the receiver has every byte: it closes after the last.
        s.shutdown(std::net::Shutdown::Write)?;
        let mut b = [0u8; 1];
        // SAFETY: a read into a local buffer.
        while unsafe { libc::read(s.as_raw_fd(), b.as_mut_ptr().cast(), 1) } > 0 {}
    }
    if let Out::File(f) = &out {
        // A file transfer is done when it is on disk, as the page-cache tests expect.
        f.sync_all()?;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let after = rusage();
    let sent = Sent {
        bytes,
        seconds,
        user_seconds: after.0 - before.0,
        system_seconds: after.1 - before.1,
    };
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &sent)?;
    writeln!(stdout)?;
    Ok(0)
}

/// (user, system) CPU seconds of this process so far.
fn rusage() -> (f64, f64) {
    // SAFETY: getrusage fills the struct we pass.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (t(r.ru_utime), t(r.ru_stime))
}

fn transfer(method: Method, path: &std::path::Path, out: &Out, buffer: usize) -> Result<u64> {
    let direct = method == Method::DirectUring;
    let file = File::options()
        .read(true)
        .custom_flags(if direct { libc::O_DIRECT } else { 0 })
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata()?.len();
    let (fd, ofd) = (file.as_raw_fd(), out.fd());
    match method {
        Method::ReadWrite => {
            let mut buf = vec![0u8; buffer];
            let mut total = 0u64;
            loop {
                // SAFETY: reading into our buffer.
                let n = check(
                    unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) },
                    "read",
                )?;
                if n == 0 {
                    break;
                }
                write_all(ofd, &buf[..n])?;
                total += n as u64;
            }
            Ok(total)
        }
        Method::MmapWrite => {
            if size == 0 {
                return Ok(0);
            }
            // SAFETY: a private read-only mapping of the whole file, unmapped below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    size as usize,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    fd,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error()).context("mmap");
            }
            // SAFETY: the mapping is `size` bytes long and lives until munmap.
            let data = unsafe { std::slice::from_raw_parts(p as *const u8, size as usize) };
            unsafe { libc::madvise(p, size as usize, libc::MADV_SEQUENTIAL) };
            let r = data.chunks(buffer).try_for_each(|c| write_all(ofd, c));
            unsafe { libc::munmap(p, size as usize) };
            r.map(|_| size)
        }
        Method::Sendfile => Ok(sendfile_all(ofd, fd, size, 1 << 30, true)?.bytes),
        // A pipe of 1 MiB means fewer calls.
        Method::Splice => Ok(splice_all(
            fd,
            ofd,
            size,
            SplicePipe {
                size: Some(1 << 20),
                flags: libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE,
            },
        )?
        .bytes),
        Method::CopyFileRange => Ok(copy_file_range_all(fd, ofd, size, 1 << 30)?.bytes),
        Method::DirectUring => super::uring::send_direct(fd, size, ofd, buffer),
    }
}
