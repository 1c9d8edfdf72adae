pub mod probes;
pub mod run;
pub mod snapshot;
pub mod unpin;
