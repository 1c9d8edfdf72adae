//! Harvesting the kernel maps into plain [`Counts`].

pub mod syscalls;
