//! /proc/PID/comm, parsed (pure, tested).

/// The comm from the contents of /proc/PID/comm: the kernel's trailing newline removed,
/// anything else (spaces, parentheses) kept.
pub fn parse_comm(text: &str) -> String {
    // A comm set with prctl(PR_SET_NAME) may end in newlines of its own; they go too, so
    // that no label ends in one.
    text.trim_end_matches('\n').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_loses_only_the_trailing_newline() {
        assert_eq!(parse_comm("nginx\n"), "nginx");
        assert_eq!(parse_comm("a) b (c\n"), "a) b (c");
        assert_eq!(parse_comm(" kworker \n"), " kworker ");
        assert_eq!(parse_comm("x\n\n"), "x");
        assert_eq!(parse_comm("no newline"), "no newline");
        assert_eq!(parse_comm(""), "");
    }
}
