//! The system-call loops a transfer is made of.

use std::os::fd::RawFd;

use anyhow::{Context as _, Result};

/// A system call's byte count, or its error with the call's name.
pub fn check(r: isize, what: &str) -> Result<usize> {
    if r < 0 {
        return Err(std::io::Error::last_os_error()).context(what.to_string());
    }
    Ok(r as usize)
}

/// write() all of `buf` (a socket may take less than asked).
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> Result<()> {
    while !buf.is_empty() {
        // SAFETY: writing from a live slice.
        let n = check(
            unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) },
            "write",
        )?;
        buf = &buf[n..];
    }
    Ok(())
}

/// What a transfer loop did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Bytes moved.
    pub bytes: u64,
    /// Calls that moved bytes (for splice, those from the file into the pipe).
    pub calls: u64,
    /// The most one call moved.
    pub max_call: u64,
}

impl Moved {
    fn add(&mut self, n: usize) {
        self.bytes += n as u64;
        self.calls += 1;
        self.max_call = self.max_call.max(n as u64);
    }
}

/// sendfile() `size` bytes of `fd` to `out`, at most `per_call` bytes a call, until they
/// are all sent or a call sends nothing: from offset 0 through an offset of its own with
/// `own_offset` (the file's stays where it is), else from and moving the file's offset.
pub fn sendfile_all(
    out: RawFd,
    fd: RawFd,
    size: u64,
    per_call: u64,
    own_offset: bool,
) -> Result<Moved> {
    let mut moved = Moved::default();
    let mut off: libc::off_t = 0;
    while moved.bytes < size {
        let left = (size - moved.bytes).min(per_call) as usize;
        let offset = if own_offset {
            &mut off as *mut libc::off_t
        } else {
            std::ptr::null_mut()
        };
        // SAFETY: sendfile with our own descriptors, and our offset or none.
        let n = check(unsafe { libc::sendfile(out, fd, offset, left) }, "sendfile")?;
        if n == 0 {
            break;
        }
        moved.add(n);
    }
    Ok(moved)
}

/// copy_file_range() `size` bytes from `fd` to `out` at their file offsets, at most
/// `per_call` bytes a call, until they are all copied or a call copies nothing.
pub fn copy_file_range_all(fd: RawFd, out: RawFd, size: u64, per_call: u64) -> Result<Moved> {
    let mut moved = Moved::default();
    while moved.bytes < size {
        let left = (size - moved.bytes).min(per_call) as usize;
        // SAFETY: copy_file_range between our descriptors at their file offsets.
        let n = check(
            unsafe {
                libc::copy_file_range(fd, std::ptr::null_mut(), out, std::ptr::null_mut(), left, 0)
            },
            "copy_file_range",
        )?;
        if n == 0 {
            break;
        }
        moved.add(n);
    }
    Ok(moved)
}

/// The pipe [`splice_all`] moves the bytes through.
#[derive(Debug, Clone, Copy)]
pub struct SplicePipe {
    /// Grow the pipe to this many bytes (F_SETPIPE_SZ; 64 KiB if the system refuses) and
    /// ask for no more than it holds a call; None: the default pipe, and each call asks
    /// for all that is left.
    pub size: Option<libc::c_int>,
    /// The flags of both splices.
    pub flags: libc::c_uint,
}

/// file -> pipe -> `out`: `size` bytes of `fd` from its file offset, until they are all
/// moved or a splice from the file moves nothing.
pub fn splice_all(fd: RawFd, out: RawFd, size: u64, pipe: SplicePipe) -> Result<Moved> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we own and close below.
    check(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as isize,
        "pipe2",
    )?;
    let (r, w) = (fds[0], fds[1]);
    let chunk = match pipe.size {
        // SAFETY: F_SETPIPE_SZ on the pipe we own.
        Some(want) => match unsafe { libc::fcntl(w, libc::F_SETPIPE_SZ, want) } {
            cap if cap > 0 => cap as usize,
            _ => 64 << 10,
        },
        None => usize::MAX,
    };
    let result = (|| {
        let mut moved = Moved::default();
        while moved.bytes < size {
            let want = ((size - moved.bytes) as usize).min(chunk);
            // SAFETY: splice between our descriptors.
            let mut inpipe = check(
                unsafe {
                    libc::splice(
                        fd,
                        std::ptr::null_mut(),
                        w,
                        std::ptr::null_mut(),
                        want,
                        pipe.flags,
                    )
                },
                "splice file->pipe",
            )?;
            if inpipe == 0 {
                break;
            }
            moved.add(inpipe);
            while inpipe > 0 {
                // SAFETY: splice between our descriptors.
                let n = check(
                    unsafe {
                        libc::splice(
                            r,
                            std::ptr::null_mut(),
                            out,
                            std::ptr::null_mut(),
                            inpipe,
                            pipe.flags,
                        )
                    },
                    "splice pipe->out",
                )?;
                inpipe -= n;
            }
        }
        Ok(moved)
    })();
    // SAFETY: closing the pipe we opened.
    unsafe {
        libc::close(r);
        libc::close(w);
    }
    result
}

/// Bring every page of the executables and libraries mapped into this process, and of
/// `more`, into the page cache (pages already there cost a minor fault each). A process
/// started from them then reads none of its code from disk while it is measured: clean
/// pages may be dropped from the cache at any time, and a page read back in a measured
/// process's context is that process's page-cache miss, not its workload's.
pub fn warm_executables(more: &[&std::path::Path]) -> Result<()> {
    for p in more {
        warm(p).with_context(|| format!("reading {} into the page cache", p.display()))?;
    }
    // What this process has mapped: a file gone since (a binary rebuilt while it runs, a
    // memfd) is left alone.
    let maps = std::fs::read_to_string("/proc/self/maps").context("reading /proc/self/maps")?;
    let mut mapped: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/'))
        .collect();
    mapped.sort_unstable();
    mapped.dedup();
    for p in mapped {
        let _ = warm(std::path::Path::new(p));
    }
    Ok(())
}

/// Every page of one file into the page cache: mapped, and one byte read per page.
fn warm(path: &std::path::Path) -> Result<()> {
    use std::os::fd::AsRawFd as _;
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len() as usize;
    if len == 0 {
        return Ok(());
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    // SAFETY: a private read-only mapping of a file we hold open, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error()).context("mmap");
    }
    let mut sum = 0u8;
    for off in (0..len).step_by(page) {
        // SAFETY: off < len, inside the mapping.
        sum ^= unsafe { std::ptr::read_volatile(p.cast::<u8>().add(off)) };
    }
    std::hint::black_box(sum);
    // SAFETY: the mapping made above, of len bytes.
    unsafe { libc::munmap(p, len) };
    Ok(())
}
