//! /proc/PID/comm (copyscope::procfs::parse_comm).
#![no_main]

use copyscope::procfs::parse_comm;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As the agent reads /proc/PID/comm: a comm need not be UTF-8.
    let text = String::from_utf8_lossy(data);

    let comm = parse_comm(&text);
    assert!(!comm.ends_with('\n'), "{comm:?}");
    // Lossless but for the trailing newlines.
    assert!(text.starts_with(&comm));
    assert!(text[comm.len()..].bytes().all(|b| b == b'\n'), "{text:?}");
});
