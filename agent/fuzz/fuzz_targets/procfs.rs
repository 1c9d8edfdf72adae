//! /proc/PID/stat and /proc/PID/comm (copyscope::procfs::{parse_stat, parse_comm}).
#![no_main]

use copyscope::procfs::{parse_comm, parse_stat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As procfs::start_time reads stat: a comm need not be UTF-8.
    let text = String::from_utf8_lossy(data);

    let comm = parse_comm(&text);
    assert!(!comm.ends_with('\n'), "{comm:?}");
    // Lossless but for the trailing newlines.
    assert!(text.starts_with(&comm));
    assert!(text[comm.len()..].bytes().all(|b| b == b'\n'), "{text:?}");

    let Ok(stat) = parse_stat(&text) else {
        return;
    };
    // The comm is the input's, between its parentheses.
    assert!(text.contains(&format!("({})", stat.comm)), "{stat:?}");
    // Written back as a stat line (fields 5 to 21 zero), it reads back the same.
    let again = format!(
        "{} ({}) {} {}{} {}\n",
        stat.pid,
        stat.comm,
        stat.state,
        stat.ppid,
        " 0".repeat(17),
        stat.starttime
    );
    assert_eq!(parse_stat(&again).unwrap(), stat, "{again:?}");
});
