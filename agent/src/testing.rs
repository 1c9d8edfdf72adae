//! Process rows for tests (the TUI's fixture window, the exposition's golden files), built
//! from syscall rows by one builder, so that every test derives its totals the same way.

use crate::model::{CpuCopy, ProcessRow, SyscallRow};

/// Calls that copy bytes from the kernel into user memory.
const TO_USER: &[&str] = &["read", "pread64", "readv", "preadv", "recvfrom", "recvmsg"];
/// Calls that copy bytes from user memory into the kernel.
const FROM_USER: &[&str] = &[
    "write", "pwrite64", "writev", "pwritev", "sendto", "sendmsg",
];

/// A process row from its syscall rows: calls, two mode switches per call, the time in
/// calls, and each row's bytes as O_DIRECT (`file_direct`), zero-copy (a `from->to` kind,
/// or a call that copies through no user memory), or copied to or from user memory.
pub struct RowBuilder {
    row: ProcessRow,
    seconds_per_call: f64,
}

impl RowBuilder {
    pub fn new(pid: u32, comm: &str) -> RowBuilder {
        RowBuilder {
            row: ProcessRow::empty(pid, comm.into(), false),
            seconds_per_call: 0.0,
        }
    }

    /// The time each call of the rows added after this takes (none unless given).
    pub fn seconds_per_call(mut self, seconds: f64) -> RowBuilder {
        self.seconds_per_call = seconds;
        self
    }

    /// One syscall row: `calls` calls on `fd_kind` that moved `bytes` in all.
    pub fn syscall(mut self, syscall: &str, fd_kind: &str, calls: u64, bytes: u64) -> RowBuilder {
        let seconds = calls as f64 * self.seconds_per_call;
        let r = &mut self.row;
        r.calls += calls;
        r.mode_switches += 2 * calls;
        r.syscall_seconds += seconds;
        if fd_kind == "file_direct" {
            r.direct_io_bytes += bytes;
        } else if fd_kind.contains("->") {
            r.zero_copy_bytes += bytes;
        } else if TO_USER.contains(&syscall) {
            r.cpu_copy_bytes.to_user += bytes;
        } else if FROM_USER.contains(&syscall) {
            r.cpu_copy_bytes.from_user += bytes;
        } else {
            r.zero_copy_bytes += bytes;
        }
        r.syscalls.push(SyscallRow {
            syscall: syscall.to_string().into(),
            fd_kind: fd_kind.to_string().into(),
            calls,
            bytes,
            errors: 0,
            seconds,
        });
        self
    }

    /// The row; its copies derived from the syscalls are the copies.
    pub fn build(mut self) -> ProcessRow {
        self.row.cpu_copy_bytes_syscalls = CpuCopy {
            to_user: self.row.cpu_copy_bytes.to_user,
            from_user: self.row.cpu_copy_bytes.from_user,
        };
        self.row
    }
}
