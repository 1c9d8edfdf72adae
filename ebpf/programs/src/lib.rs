#![no_std]
// Present so the agent can declare a build-dependency on this crate; the programs are in main.rs.
