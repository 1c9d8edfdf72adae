//! /proc/PID/stat and /proc/PID/comm, parsed (pure, tested) and read.

use anyhow::{Context as _, Result, bail};

/// The fields of /proc/PID/stat copyscope uses (proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// (1) pid.
    pub pid: u32,
    /// (2) comm, without its parentheses. It may itself hold spaces and parentheses.
    pub comm: String,
    /// (3) state: R, S, D, Z, T, t, X, I, ...
    pub state: char,
    /// (4) ppid.
    pub ppid: u32,
    /// (22) starttime: when the process started, in clock ticks after boot. A pid and
    /// its starttime name one process, even once the pid is reused.
    pub starttime: u64,
}

/// Parse the contents of /proc/PID/stat: `pid (comm) state ppid ... starttime ...`.
/// The comm is everything between the first `(` and the LAST `)`: a process may name
/// itself `a) b (c`, but the fields after the comm hold no parenthesis.
pub fn parse_stat(text: &str) -> Result<Stat> {
    let (pid, rest) = text
        .split_once('(')
        .with_context(|| format!("no '(' before the comm in {text:?}"))?;
    let (comm, rest) = rest
        .rsplit_once(')')
        .with_context(|| format!("no ')' after the comm in {text:?}"))?;
    let pid = pid
        .trim()
        .parse()
        .with_context(|| format!("bad pid in {text:?}"))?;
    // Fields 3 onwards; `fields[i]` is field i + 3.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .copied()
            .with_context(|| format!("field {n} missing in {text:?}"))
    };
    let mut state = field(3)?.chars();
    let (Some(s), None) = (state.next(), state.next()) else {
        bail!("state is not one character in {text:?}");
    };
    Ok(Stat {
        pid,
        comm: comm.to_string(),
        state: s,
        ppid: field(4)?
            .parse()
            .with_context(|| format!("bad ppid in {text:?}"))?,
        starttime: field(22)?
            .parse()
            .with_context(|| format!("bad starttime in {text:?}"))?,
    })
}

/// The comm from the contents of /proc/PID/comm: the kernel's trailing newline removed,
/// anything else (spaces, parentheses) kept.
pub fn parse_comm(text: &str) -> String {
    // A comm set with prctl(PR_SET_NAME) may end in newlines of its own; they go too, so
    // that no label ends in one.
    text.trim_end_matches('\n').to_string()
}

/// When a live process started (field 22 of /proc/PID/stat, clock ticks after boot); None
/// when it is gone or /proc cannot tell. Two readings that differ mean the pid was reused.
pub fn start_time(pid: u32) -> Option<u64> {
    // Not read_to_string: a comm need not be UTF-8, and the fields after it are.
    let bytes = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&String::from_utf8_lossy(&bytes))
        .ok()
        .map(|s| s.starttime)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line (cat's own), fields 1-52.
    const CAT: &str = "19593 (cat) R 19591 19591 16520 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 \
        2732144 3133440 390 18446744073709551615 93947941937152 93947941957033 140735613447584 \
        0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 93947941973040 93947941974656 93948242685952 \
        140735613450977 140735613450997 140735613450997 140735613452267 0\n";

    #[test]
    fn stat_fields_by_their_proc5_numbers() {
        assert_eq!(
            parse_stat(CAT).unwrap(),
            Stat {
                pid: 19593,
                comm: "cat".into(),
                state: 'R',
                ppid: 19591,
                starttime: 2732144,
            }
        );
    }

    #[test]
    fn comm_with_spaces_and_parentheses_splits_at_the_last_paren() {
        let line = CAT.replacen("(cat)", "(a) b (c)", 1);
        let s = parse_stat(&line).unwrap();
        assert_eq!(s.comm, "a) b (c");
        assert_eq!(
            (s.pid, s.state, s.ppid, s.starttime),
            (19593, 'R', 19591, 2732144)
        );
        let s = parse_stat(&CAT.replacen("(cat)", "(x) S 1 2 3)", 1)).unwrap();
        assert_eq!((s.comm.as_str(), s.state), ("x) S 1 2 3", 'R'));
        assert_eq!(
            parse_stat(&CAT.replacen("(cat)", "()", 1)).unwrap().comm,
            ""
        );
    }

    #[test]
    fn malformed_stat_lines_are_errors() {
        for bad in [
            "",
            "1 (x",
            "1 x) R 0",
            "x (cat) R 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5",
            "1 (cat) R 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0",
            "1 (cat) RS 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5",
            "1 (cat) R -1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5",
            "1 (cat) R 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 -5",
        ] {
            assert!(parse_stat(bad).is_err(), "{bad:?}");
        }
        // Field 22 is the last one needed.
        assert_eq!(
            parse_stat("1 (cat) R 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5")
                .unwrap()
                .starttime,
            5
        );
    }

    #[test]
    fn comm_loses_only_the_trailing_newline() {
        assert_eq!(parse_comm("nginx\n"), "nginx");
        assert_eq!(parse_comm("a) b (c\n"), "a) b (c");
        assert_eq!(parse_comm(" kworker \n"), " kworker ");
        assert_eq!(parse_comm("x\n\n"), "x");
        assert_eq!(parse_comm("no newline"), "no newline");
        assert_eq!(parse_comm(""), "");
    }

    #[test]
    fn start_time_of_this_process_is_stable() {
        let me = std::process::id();
        let t = start_time(me).expect("our own /proc/PID/stat");
        assert_eq!(start_time(me), Some(t));
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert_eq!(parse_stat(&stat).unwrap().pid, me);
        assert_eq!(start_time(u32::MAX), None);
    }
}
