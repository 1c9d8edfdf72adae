pub mod probes;
pub mod snapshot;
