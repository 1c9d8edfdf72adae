//! /proc/PID/cgroup (copyscope::workload::container_id).
#![no_main]

use copyscope::workload::container_id;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Some(id) = container_id(&text) else {
        return;
    };
    // 64 lower-case hex digits, taken from the input (whose case is folded).
    assert_eq!(id.len(), 64, "{id:?}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{id:?}"
    );
    assert!(text.to_ascii_lowercase().contains(&id), "{id:?}");
    // The id reads back from the simplest layout that holds it.
    assert_eq!(container_id(&format!("0::/docker/{id}")), Some(id));
});
