//! The kind of an fd of the current task (file, O_DIRECT file, socket, pipe, memory
//! device, other): task->files->fdt->fd[fd]->f_inode->i_mode, ->f_flags.

use super::*;

/// Classify an fd of the current task: task->files->fdt->fd[fd]->f_inode->i_mode, f_flags.
#[inline(always)]
pub(super) fn classify(fd: u64) -> Result<FdKind, i64> {
    if fd > i32::MAX as u64 {
        return Ok(FdKind::Other);
    }
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let files: *const u8 = read(task, global(&OFF_TASK_FILES))?;
        let fdt: *const u8 = read(files, global(&OFF_FILES_FDT))?;
        let max_fds: u32 = read(fdt, global(&OFF_FDT_MAX_FDS))?;
        if fd >= max_fds as u64 {
            return Ok(FdKind::Other);
        }
        let fds: *const u8 = read(fdt, global(&OFF_FDT_FD))?;
        classify_slot(fds, fd)
    }
}

#[inline(always)]
unsafe fn read<T>(base: *const u8, off: u64) -> Result<T, i64> {
    if base.is_null() {
        return Err(-1);
    }
    unsafe { bpf_probe_read_kernel(base.add(off as usize) as *const T) }.map_err(|e| e as i64)
}

/// [`classify`] for BTF-typed programs: task, files and fdtable are typed pointers the
/// verifier lets us load from directly; the fd array holds untyped pointers, so from
/// there on it is bpf_probe_read_kernel.
#[inline(always)]
pub(super) fn classify_btf(fd: u64) -> Result<FdKind, i64> {
    if fd > i32::MAX as u64 {
        return Ok(FdKind::Other);
    }
    unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        let files: *const u8 = load(task, global(&OFF_TASK_FILES));
        if files.is_null() {
            return Ok(FdKind::Other);
        }
        let fdt: *const u8 = load(files, global(&OFF_FILES_FDT));
        if fdt.is_null() {
            return Ok(FdKind::Other);
        }
        let max_fds: u32 = load(fdt, global(&OFF_FDT_MAX_FDS));
        if fd >= max_fds as u64 {
            return Ok(FdKind::Other);
        }
        let fds: *const u8 = load(fdt, global(&OFF_FDT_FD));
        classify_slot(fds, fd)
    }
}

/// The common tail of both walks: fdt->fd[fd]->f_inode->i_mode and ->f_flags. The fd
/// array holds untyped pointers, so these are bpf_probe_read_kernel in every program type.
#[inline(always)]
unsafe fn classify_slot(fds: *const u8, fd: u64) -> Result<FdKind, i64> {
    unsafe {
        let file: *const u8 = read(fds, fd * 8)?;
        if file.is_null() {
            return Ok(FdKind::Other);
        }
        classify_file(file)
    }
}

/// The kind of an open file: file->f_inode->i_mode (and i_rdev), file->f_flags.
#[inline(always)]
pub(crate) unsafe fn classify_file(file: *const u8) -> Result<FdKind, i64> {
    unsafe {
        let inode: *const u8 = read(file, global(&OFF_FILE_INODE))?;
        let flags: u32 = read(file, global(&OFF_FILE_FLAGS))?;
        let mode: u16 = read(inode, global(&OFF_INODE_MODE))?;
        if FdKind::is_char_device(mode) {
            // Only character devices pay for the second read.
            let rdev: u32 = read(inode, global(&OFF_INODE_RDEV))?;
            return Ok(FdKind::classify_device(rdev));
        }
        Ok(FdKind::classify(mode, flags))
    }
}

/// A direct load through a BTF-typed kernel pointer (the verifier checks the offset
/// against the type and turns the load into a fault-safe one).
#[inline(always)]
pub(super) unsafe fn load<T: Copy>(base: *const u8, off: u64) -> T {
    unsafe { core::ptr::read(base.add(off as usize) as *const T) }
}
