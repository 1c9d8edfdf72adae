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
