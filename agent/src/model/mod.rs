//! Plain data: cumulative counts from the kernel, and the `Snapshot` derived from two of
//! them. Pure: no maps, no I/O except the comm lookup passed in.

mod counts;
mod rows;
mod shapes;
#[cfg(test)]
mod tests;

pub use counts::{
    Counts, CountsSaved, MISSED_RUNS, Tally, add, delta, delta_by_pid, dropped, lookup, sorted,
};
pub use rows::{CopySources, Window, fd_label, processes};
pub use shapes::{
    Calibration, CommandRun, CpuCopy, Evidence, Finding, PagecacheRow, PodRef, ProbeRow,
    ProcessAdvice, ProcessRow, SchedRow, Snapshot, SyscallRow,
};
