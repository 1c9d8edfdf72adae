//! O_DIRECT reads with io_uring (nginx's `directio` + `aio` on Linux): several aligned
//! reads in flight, the disk's DMA straight into user buffers, no page cache; each buffer
//! is then written to the destination in file order.

use std::{collections::BTreeMap, os::fd::RawFd};

use anyhow::{Context as _, Result, bail};
use io_uring::{IoUring, opcode, types};

/// Reads in flight.
const DEPTH: usize = 8;
/// O_DIRECT wants buffers, offsets and lengths aligned to the device's logical block.
const ALIGN: usize = 4096;

/// A heap buffer aligned for O_DIRECT.
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len, ALIGN).expect("a valid layout");
        // SAFETY: a non-zero size (len >= ALIGN).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        Aligned { ptr, layout }
    }

    fn slice(&self, n: usize) -> &[u8] {
        // SAFETY: n <= len, and the buffer is initialised (zeroed, then read into).
        unsafe { std::slice::from_raw_parts(self.ptr, n.min(self.layout.size())) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in new().
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// Send `size` bytes of the O_DIRECT file `fd` to `out`, `chunk` bytes per read.
pub fn send_direct(fd: RawFd, size: u64, out: RawFd, chunk: usize) -> Result<u64> {
    let chunk = chunk.div_ceil(ALIGN).max(1) * ALIGN;
    let mut ring = IoUring::new(DEPTH as u32)
        .context("io_uring_setup (io_uring disabled by kernel.io_uring_disabled, or seccomp?)")?;
    let bufs: Vec<Aligned> = (0..DEPTH).map(|_| Aligned::new(chunk)).collect();
    let mut next_off = 0u64;
    let mut send_off = 0u64;
    let mut in_flight = 0usize;
    // Completed reads waiting for their turn: offset -> (slot, bytes).
    let mut done: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    // The offset each slot is reading.
    let mut reading = [0u64; DEPTH];

    let submit = |ring: &mut IoUring, slot: usize, off: u64, reading: &mut [u64; DEPTH]| {
        let e = opcode::Read::new(types::Fd(fd), bufs[slot].ptr, chunk as u32)
            .offset(off)
            .build()
            .user_data(slot as u64);
        reading[slot] = off;
        // SAFETY: the buffer outlives the read: it is only reused after its completion.
        unsafe { ring.submission().push(&e) }.map_err(|_| anyhow::anyhow!("io_uring queue full"))
    };
    for slot in 0..DEPTH {
        if next_off >= size {
            break;
        }
        submit(&mut ring, slot, next_off, &mut reading)?;
        next_off += chunk as u64;
        in_flight += 1;
    }
    while send_off < size {
        if in_flight == 0 {
            bail!("O_DIRECT reads ended at {send_off} of {size} bytes");
        }
        ring.submit_and_wait(1).context("io_uring_enter")?;
        let completed: Vec<(usize, i32)> = ring
            .completion()
            .map(|c| (c.user_data() as usize, c.result()))
            .collect();
        for (slot, res) in completed {
            in_flight -= 1;
            if res < 0 {
                let err = std::io::Error::from_raw_os_error(-res);
                let hint = if -res == libc::EINVAL {
                    " (this file system may not support O_DIRECT: tmpfs does not)"
                } else {
                    ""
                };
                return Err(err).context(format!("O_DIRECT read at {}{hint}", reading[slot]));
            }
            done.insert(reading[slot], (slot, res as usize));
        }
        // Send what is next in file order; each sent buffer reads further ahead.
        while let Some((slot, n)) = done.remove(&send_off) {
            if n == 0 {
                bail!("the file ended at {send_off} of {size} bytes");
            }
            super::io::write_all(out, bufs[slot].slice(n))?;
            send_off += n as u64;
            if n < chunk && send_off < size {
                bail!(
                    "a short O_DIRECT read at {} ({n} bytes)",
                    send_off - n as u64
                );
            }
            if next_off < size {
                submit(&mut ring, slot, next_off, &mut reading)?;
                next_off += chunk as u64;
                in_flight += 1;
            }
        }
    }
    Ok(send_off)
}
