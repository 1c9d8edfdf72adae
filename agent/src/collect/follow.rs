//! Running a command that copyscope follows from its first system call: it starts held
//! (stopped before exec) until its pid is watched, so that not one of its syscalls is
//! missed and none of copyscope's own are counted.

use std::{ffi::CString, os::fd::RawFd};

use anyhow::{Context as _, Result, bail};

use crate::collect::syscalls::Collector;

/// How a followed command ended.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub pid: u32,
    /// Its exit status, or 128 + the signal that killed it.
    pub code: i32,
    pub user_seconds: f64,
    pub system_seconds: f64,
}

/// Fork `argv`, hold it stopped until `collector` (when given) watches it, let it run and
/// wait for it. `stdout`, when given, becomes the command's standard output.
///
/// fork + SIGSTOP + execvp by hand: `std::process::Command::spawn` waits for the exec,
/// which the held child cannot reach until it is watched.
pub fn run_held(
    collector: Option<&mut Collector>,
    argv: &[String],
    stdout: Option<RawFd>,
) -> Result<Exit> {
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| {
            CString::new(a.as_bytes())
                .with_context(|| format!("argument {a:?} contains a NUL byte"))
        })
        .collect::<Result<_>>()?;
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: the child only calls async-signal-safe functions (dup2, raise, execvp, write,
    // _exit).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if pid == 0 {
        unsafe {
            if let Some(fd) = stdout {
                libc::dup2(fd, 1);
            }
            libc::raise(libc::SIGSTOP);
            libc::execvp(ptrs[0], ptrs.as_ptr());
            let msg = b"copyscope: cannot run the command\n";
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(127);
        }
    }
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
    if r != pid || !libc::WIFSTOPPED(status) {
        bail!("the command did not start (status {status:#x})");
    }
    let watched = match collector {
        Some(c) => c.watch(pid as u32).map(|_| ()),
        None => Ok(()),
    };
    // SAFETY: signalling our own stopped child.
    unsafe {
        libc::kill(
            pid,
            if watched.is_ok() {
                libc::SIGCONT
            } else {
                libc::SIGKILL
            },
        )
    };
    if let Err(e) = watched {
        // Reap the killed child before reporting.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(e);
    }
    // SAFETY: a zeroed rusage for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 on our own child with valid pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("waiting for the command");
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        bail!("the command ended in an unknown way (status {status:#x})")
    };
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    Ok(Exit {
        pid: pid as u32,
        code,
        user_seconds: secs(usage.ru_utime),
        system_seconds: secs(usage.ru_stime),
    })
}
