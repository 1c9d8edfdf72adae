//! The raw bpf(2) system call, for what aya does not expose: the pin's lookups and
//! BPF_OBJ_GET, batched map reads, a program's info.

/// bpf(2): `cmd` with `attr` as its attribute (the size passed is `A`'s). Ok with what the
/// call returned (a new fd for some commands), or the errno.
///
/// # Safety
/// `attr` must have the layout the command expects, and every pointer in it must be valid
/// for what the kernel reads or writes through it during the call.
pub unsafe fn sys_bpf<A>(cmd: libc::c_long, attr: &mut A) -> std::io::Result<i64> {
    // SAFETY: the caller vouches for attr (see above).
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, std::mem::size_of::<A>()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}
