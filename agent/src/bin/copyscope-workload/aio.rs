//! Linux AIO: reads submitted with io_submit and reaped with io_getevents.

use super::*;

/// include/uapi/linux/aio_abi.h, little-endian.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub(super) struct Iocb {
    data: u64,
    key: u32,
    rw_flags: i32,
    opcode: u16,
    reqprio: i16,
    fildes: u32,
    buf: u64,
    nbytes: u64,
    offset: i64,
    reserved2: u64,
    flags: u32,
    resfd: u32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
pub(super) struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

/// `aio FILE COUNT SIZE BATCH`: COUNT IOCB_CMD_PREAD of SIZE from FILE (the i-th at
/// offset i*SIZE, wrapping at the file's end), BATCH iocbs per io_submit, each batch
/// reaped with io_getevents.
pub(super) fn aio(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let path = a(1).unwrap_or_else(|| die("aio FILE COUNT SIZE BATCH"));
    let (count, size, batch) = (
        num(a(2), "COUNT"),
        num(a(3), "SIZE") as usize,
        num(a(4), "BATCH") as usize,
    );
    if batch == 0 || !count.is_multiple_of(batch as u64) {
        die("COUNT must be a multiple of BATCH");
    }
    let fd = open(path, libc::O_RDONLY);
    // SAFETY: fstat into a zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(fd, &mut st) } as isize, "fstat");
    let blocks = (st.st_size as u64 / size as u64).max(1);
    let mut ctx: libc::c_ulong = 0;
    // SAFETY: io_setup writes the context id into ctx.
    if unsafe { libc::syscall(libc::SYS_io_setup, batch as libc::c_long, &mut ctx) } != 0 {
        let e = std::io::Error::last_os_error();
        println!(r#"{{"unsupported":"io_setup: {e}"}}"#);
        std::process::exit(3);
    }
    let mut bufs = vec![vec![0u8; size]; batch];
    let mut iocbs = vec![Iocb::default(); batch];
    let mut events = vec![IoEvent::default(); batch];
    let (mut submits, mut reaps, mut asked, mut completed) = (0u64, 0u64, 0u64, 0u64);
    let mut next = 0u64;
    // io_getevents' min_nr: wait for at least one event.
    const ONE: libc::c_long = 1;
    for _ in 0..count / batch as u64 {
        for (cb, buf) in iocbs.iter_mut().zip(bufs.iter_mut()) {
            *cb = Iocb {
                opcode: 0, // IOCB_CMD_PREAD
                fildes: fd as u32,
                buf: buf.as_mut_ptr() as u64,
                nbytes: size as u64,
                offset: ((next % blocks) * size as u64) as i64,
                ..Iocb::default()
            };
            next += 1;
            asked += size as u64;
        }
        let mut ptrs: Vec<*mut Iocb> = iocbs.iter_mut().map(|c| c as *mut Iocb).collect();
        // SAFETY: BATCH pointers to live iocbs whose buffers outlive their completion.
        let k = unsafe {
            libc::syscall(
                libc::SYS_io_submit,
                ctx,
                batch as libc::c_long,
                ptrs.as_mut_ptr(),
            )
        };
        if k != batch as libc::c_long {
            die(&format!(
                "io_submit: {k} ({})",
                std::io::Error::last_os_error()
            ));
        }
        submits += 1;
        let mut got = 0;
        while got < batch {
            // SAFETY: room for BATCH events; no timeout (waits for at least one).
            let k = unsafe {
                libc::syscall(
                    libc::SYS_io_getevents,
                    ctx,
                    ONE,
                    (batch - got) as libc::c_long,
                    events.as_mut_ptr(),
                    std::ptr::null_mut::<libc::timespec>(),
                )
            };
            if k <= 0 {
                die(&format!(
                    "io_getevents: {k} ({})",
                    std::io::Error::last_os_error()
                ));
            }
            reaps += 1;
            for e in &events[..k as usize] {
                if e.res < 0 {
                    die(&format!("an AIO read failed: {}", e.res));
                }
                completed += e.res as u64;
            }
            got += k as usize;
        }
    }
    // SAFETY: the context is ours and idle.
    unsafe { libc::syscall(libc::SYS_io_destroy, ctx) };
    unsafe { libc::close(fd) };
    format!(
        r#"{{"calls":{count},"bytes":{asked},"submits":{submits},"getevents":{reaps},"completed":{completed}}}"#
    )
}
