//! Harvesting the kernel maps into plain [`Counts`](crate::model::Counts).

pub mod follow;
pub mod footprint;
pub mod procstats;
pub mod syscalls;
pub mod window;
