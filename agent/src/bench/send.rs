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
    io::{check, write_all},
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
        Method::Sendfile => {
            let mut off: libc::off_t = 0;
            while (off as u64) < size {
                let left = (size - off as u64).min(1 << 30) as usize;
                // SAFETY: sendfile with our own descriptors and offset.
                let n = check(
                    unsafe { libc::sendfile(ofd, fd, &mut off, left) },
                    "sendfile",
                )?;
                if n == 0 {
                    break;
                }
            }
            Ok(off as u64)
        }
        Method::Splice => splice(fd, ofd, size),
        Method::CopyFileRange => {
            let mut total = 0u64;
            while total < size {
                let left = (size - total).min(1 << 30) as usize;
                // SAFETY: copy_file_range between our descriptors at their file offsets.
                let n = check(
                    unsafe {
                        libc::copy_file_range(
                            fd,
                            std::ptr::null_mut(),
                            ofd,
                            std::ptr::null_mut(),
                            left,
                            0,
                        )
                    },
                    "copy_file_range",
                )?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            Ok(total)
        }
        Method::DirectUring => super::uring::send_direct(fd, size, ofd, buffer),
    }
}

/// file -> pipe -> destination, a pipe's worth (1 MiB) at a time.
fn splice(fd: RawFd, ofd: RawFd, size: u64) -> Result<u64> {
    let mut pipe = [0; 2];
    // SAFETY: pipe2 fills two descriptors we own and close below.
    check(
        unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } as isize,
        "pipe2",
    )?;
    let (r, w) = (pipe[0], pipe[1]);
    // A larger pipe means fewer calls; the default (64 KiB) if the system refuses.
    let cap = unsafe { libc::fcntl(w, libc::F_SETPIPE_SZ, 1 << 20) };
    let chunk = if cap > 0 { cap as usize } else { 64 << 10 };
    let result = (|| {
        let mut total = 0u64;
        while total < size {
            let want = ((size - total) as usize).min(chunk);
            // SAFETY: splice between our descriptors.
            let mut inpipe = check(
                unsafe {
                    libc::splice(
                        fd,
                        std::ptr::null_mut(),
                        w,
                        std::ptr::null_mut(),
                        want,
                        libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE,
                    )
                },
                "splice file->pipe",
            )?;
            if inpipe == 0 {
                break;
            }
            total += inpipe as u64;
            while inpipe > 0 {
                let n = check(
                    unsafe {
                        libc::splice(
                            r,
                            std::ptr::null_mut(),
                            ofd,
                            std::ptr::null_mut(),
                            inpipe,
                            libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE,
                        )
                    },
                    "splice pipe->out",
                )?;
                inpipe -= n;
            }
        }
        Ok(total)
    })();
    // SAFETY: closing the pipe we opened.
    unsafe {
        libc::close(r);
        libc::close(w);
    }
    result
}
