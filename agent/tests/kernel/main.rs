//! The kernel tests: each family's programs loaded on the running kernel and driven by
//! workloads with known answers, exact numbers asserted (root; marked for the kernel tier,
//! run with `--ignored`). One module per family, so that `-- --ignored syscalls::` runs
//! one family's tests; `cargo xtask vm` runs them so in each QEMU guest.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod async_io;
mod copies;
mod pagecache;
mod sched;
mod syscalls;
mod uring;
