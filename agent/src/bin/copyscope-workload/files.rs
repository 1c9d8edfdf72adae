//! Workloads on files: reads, writes, O_DIRECT, page-cache states, copy_file_range.

use super::*;

/// `count` pwrite(size) at offset 0 of `fd`: the bytes written.
pub(super) fn pwrites(fd: RawFd, count: u64, size: usize) -> u64 {
    let buf = vec![5u8; size];
    let mut bytes = 0;
    for _ in 0..count {
        // SAFETY: write from our buffer.
        bytes += check(
            unsafe { libc::pwrite(fd, buf.as_ptr().cast(), size, 0) },
            "pwrite",
        ) as u64;
    }
    bytes
}

/// The same with pwritev2 (one iovec, no flags).
pub(super) fn pwritev2s(fd: RawFd, count: u64, size: usize) -> u64 {
    let buf = vec![5u8; size];
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: size,
    };
    let mut bytes = 0;
    for _ in 0..count {
        // SAFETY: write from our buffer, described by one iovec.
        bytes += check(unsafe { libc::pwritev2(fd, &iov, 1, 0, 0) }, "pwritev2") as u64;
    }
    bytes
}

/// `pread FILE COUNT SIZE`: COUNT pread(SIZE) at offset 0.
pub(super) fn pread(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let fd = open(
        a(1).unwrap_or_else(|| die("pread FILE COUNT SIZE")),
        libc::O_RDONLY,
    );
    let (count, size) = (num(a(2), "COUNT"), num(a(3), "SIZE") as usize);
    let mut buf = vec![0u8; size];
    let mut bytes = 0;
    for _ in 0..count {
        // SAFETY: read into our buffer.
        bytes += check(
            unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), size, 0) },
            "pread",
        ) as u64;
    }
    format!(r#"{{"calls":{count},"bytes":{bytes}}}"#)
}

/// `drop-cache FILE`: fsync, then drop FILE (only) from the page cache.
pub(super) fn drop_cache(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let fd = open(
        a(1).unwrap_or_else(|| die("drop-cache FILE")),
        libc::O_RDONLY,
    );
    check(unsafe { libc::fsync(fd) } as isize, "fsync");
    let r = unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r != 0 {
        die(&format!("posix_fadvise: error {r}"));
    }
    r#"{"dropped":true}"#.to_string()
}

/// `read FILE`: read() FILE to the end, 64 KiB at a time.
pub(super) fn read(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let fd = open(a(1).unwrap_or_else(|| die("read FILE")), libc::O_RDONLY);
    let mut buf = vec![0u8; 65536];
    let mut total = 0u64;
    loop {
        let n = check(
            unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) },
            "read",
        );
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    format!(r#"{{"bytes":{total},"pages":{}}}"#, total.div_ceil(4096))
}

/// `mmap-read FILE`: mmap FILE and touch every page.
pub(super) fn mmap_read(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let fd = open(
        a(1).unwrap_or_else(|| die("mmap-read FILE")),
        libc::O_RDONLY,
    );
    let size = file_size(fd) as usize;
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        die("mmap failed");
    }
    let mut sum = 0u64;
    for off in (0..size).step_by(4096) {
        sum += unsafe { std::ptr::read_volatile((p as *const u8).add(off)) } as u64;
    }
    unsafe { libc::munmap(p, size) };
    format!(r#"{{"pages":{},"sum":{sum}}}"#, size.div_ceil(4096))
}

/// `write-file FILE PAGES`: write PAGES pages of 4 KiB to a new FILE.
pub(super) fn write_file(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let fd = open(
        a(1).unwrap_or_else(|| die("write-file FILE PAGES")),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
    );
    let pages = num(a(2), "PAGES");
    let buf = vec![3u8; 4096];
    for _ in 0..pages {
        check(
            unsafe { libc::write(fd, buf.as_ptr().cast(), 4096) },
            "write",
        );
    }
    format!(r#"{{"pages":{pages}}}"#)
}

/// `read-modify-write FILE`: pread each 4 KiB page of FILE, change its first byte, pwrite
/// it back.
pub(super) fn read_modify_write(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let fd = open(
        a(1).unwrap_or_else(|| die("read-modify-write FILE")),
        libc::O_RDWR,
    );
    let pages = file_size(fd).div_ceil(4096);
    let mut buf = vec![0u8; 4096];
    for page in 0..pages {
        let off = (page * 4096) as libc::off_t;
        // SAFETY: read into and write from our buffer.
        let n = check(
            unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), 4096, off) },
            "pread",
        );
        buf[0] = buf[0].wrapping_add(1);
        check(
            unsafe { libc::pwrite(fd, buf.as_ptr().cast(), n as usize, off) },
            "pwrite",
        );
    }
    format!(r#"{{"pages":{pages}}}"#)
}

/// `direct FILE COUNT SIZE`: COUNT O_DIRECT pread(SIZE).
pub(super) fn direct(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let path = a(1).unwrap_or_else(|| die("direct FILE COUNT SIZE"));
    let c = CString::new(path.as_str()).unwrap();
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECT | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        println!(r#"{{"unsupported":"O_DIRECT open: {e}"}}"#);
        std::process::exit(3);
    }
    let (count, size) = (num(a(2), "COUNT"), num(a(3), "SIZE") as usize);
    let layout = std::alloc::Layout::from_size_align(size.max(4096), 4096).unwrap();
    // SAFETY: non-zero size layout; freed below.
    let buf = unsafe { std::alloc::alloc(layout) };
    let mut bytes = 0;
    for _ in 0..count {
        bytes += check(
            unsafe { libc::pread(fd, buf.cast(), size, 0) },
            "O_DIRECT pread",
        ) as u64;
    }
    unsafe { std::alloc::dealloc(buf, layout) };
    format!(r#"{{"calls":{count},"bytes":{bytes}}}"#)
}

/// `badfd COUNT`: COUNT read() on a closed fd (EBADF).
pub(super) fn badfd(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let count = num(a(1), "COUNT");
    let mut buf = [0u8; 16];
    for _ in 0..count {
        // fd 987654 is far above anything open here.
        let r = unsafe { libc::read(987_654, buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            die("read on a closed fd succeeded");
        }
    }
    format!(r#"{{"calls":{count},"errors":{count}}}"#)
}

/// `threads THREADS COUNT FILE`: THREADS threads, COUNT pread(1) each.
pub(super) fn threads(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let (threads, count) = (num(a(1), "THREADS"), num(a(2), "COUNT"));
    let fd = open(
        a(3).unwrap_or_else(|| die("threads THREADS COUNT FILE")),
        libc::O_RDONLY,
    );
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            thread::spawn(move || {
                let mut b = [0u8; 1];
                for _ in 0..count {
                    check(
                        unsafe { libc::pread(fd, b.as_mut_ptr().cast(), 1, 0) },
                        "pread",
                    );
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    format!(
        r#"{{"calls":{},"bytes":{}}}"#,
        threads * count,
        threads * count
    )
}

/// `pwrite-on-cpus FILE COUNT CPUS`: one thread per CPU of the list, pinned to it, COUNT
/// pwrite(1) each.
pub(super) fn pwrite_on_cpus(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let usage = "pwrite-on-cpus FILE COUNT CPUS";
    let fd = open(
        a(1).unwrap_or_else(|| die(usage)),
        libc::O_WRONLY | libc::O_CREAT,
    );
    let count = num(a(2), "COUNT");
    let cpus: Vec<usize> = a(3)
        .unwrap_or_else(|| die(usage))
        .split(',')
        .map(|c| num(Some(&c.to_string()), "CPUS") as usize)
        .collect();
    let hs: Vec<_> = cpus
        .iter()
        .map(|&cpu| {
            thread::spawn(move || {
                pin(cpu);
                pwrites(fd, count, 1);
                // SAFETY: sched_getcpu has no preconditions.
                unsafe { libc::sched_getcpu() }
            })
        })
        .collect();
    let ended: Vec<String> = hs
        .into_iter()
        .map(|h| h.join().unwrap().to_string())
        .collect();
    format!(
        r#"{{"calls":{},"cpus":[{}]}}"#,
        count * cpus.len() as u64,
        ended.join(",")
    )
}

/// `pwrite FILE COUNT SIZE`: COUNT pwrite(SIZE) at offset 0.
pub(super) fn pwrite(args: &[String]) -> String {
    pwrite_with(args, pwrites)
}

/// `pwritev2 FILE COUNT SIZE`: the same with pwritev2.
pub(super) fn pwritev2(args: &[String]) -> String {
    pwrite_with(args, pwritev2s)
}

/// COUNT writes of SIZE at offset 0 of FILE with `write`.
pub(super) fn pwrite_with(args: &[String], write: fn(RawFd, u64, usize) -> u64) -> String {
    let a = |i: usize| args.get(i);
    let fd = open(
        a(1).unwrap_or_else(|| die("pwrite|pwritev2 FILE COUNT SIZE")),
        libc::O_WRONLY | libc::O_CREAT,
    );
    let (count, size) = (num(a(2), "COUNT"), num(a(3), "SIZE") as usize);
    let bytes = write(fd, count, size);
    format!(r#"{{"calls":{count},"bytes":{bytes}}}"#)
}

/// `copy-file-range SRC DST`: copy_file_range SRC -> DST, each call asking for all that is
/// left.
pub(super) fn copy_file_range(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let src = open(
        a(1).unwrap_or_else(|| die("copy-file-range SRC DST")),
        libc::O_RDONLY,
    );
    let dst = open(
        a(2).unwrap_or_else(|| die("copy-file-range SRC DST")),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
    );
    let size = file_size(src);
    let moved = or_die(copy_file_range_all(src, dst, size, u64::MAX));
    if moved.bytes < size {
        die("copy_file_range made no progress");
    }
    format!(
        r#"{{"calls":{},"bytes":{size},"max_call":{}}}"#,
        moved.calls, moved.max_call
    )
}
