//! Tests that need no root for most of what they check: the binary's answers to bad
//! input and broken environments, the golden expositions, the HTTP server, the dashboards
//! and the Prometheus rules, pod labels. Those of their tests that run the real agent are
//! marked for the kernel tier like any other.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod cli;
mod dashboards;
mod http;
mod metrics;
mod pods;
