//! Harvesting the kernel maps into plain [`Counts`](crate::model::Counts).

pub mod batch;
pub mod follow;
pub mod footprint;
pub mod names;
pub mod procstats;
pub mod syscalls;
pub mod window;
