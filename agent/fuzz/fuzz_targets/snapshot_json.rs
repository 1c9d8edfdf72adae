//! The snapshot JSON `copyscope top --from` reads from an agent
//! (copyscope::tui::source::parse).
#![no_main]

use copyscope::tui::source::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(snapshot) = parse(text) else {
        return;
    };
    assert!(snapshot.duration_seconds.is_finite() && snapshot.duration_seconds >= 0.0);
    // What the agent would serve for it reads back equal.
    let json = serde_json::to_string(&snapshot).expect("a parsed snapshot serialises");
    assert_eq!(
        parse(&json).expect("its own JSON parses"),
        snapshot,
        "{json}"
    );
});
