//! The agent end to end, as root, with the programs around it: `copyscope run` scraped by
//! a real Prometheus, `top` in tmux, `bench`, pinned restarts, the DaemonSet's
//! capabilities, churn, and kernels or systems that are not what copyscope needs.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod agent_run;
mod bad_situations;
mod bench;
mod capabilities;
mod churn;
mod restart;
mod top;
