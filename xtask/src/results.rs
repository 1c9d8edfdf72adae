//! What a test run gave, for `cargo xtask test` and the guests of `cargo xtask vm`: tiers,
//! the counts of `cargo test`'s summaries, skip logs, and the guard's verdict.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// The kernel tests the guard runs with a required program broken on purpose: this test
/// binary's tests whose names match this filter.
pub const GUARD_BINARY: &str = "kernel";
pub const GUARD_FILTER: &str = "sched::";
/// The probe the guard breaks, and what its failure must name.
pub const GUARD_PROBE: &str = "syscalls/sys_enter";

/// What one tier did.
#[derive(Debug, Default)]
pub struct Tier {
    pub name: String,
    /// Tests (or checks) that ran to the end.
    pub ran: u64,
    pub failed: u64,
    /// Skipped tests: (test, reason).
    pub skipped: Vec<(String, String)>,
    /// Why the whole tier did not run, if it did not.
    pub not_run: Option<String>,
    pub seconds: f64,
}

/// The counts of `cargo test`'s `test result:` lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.ignored += o.ignored;
    }
}

/// The guard holds when the run failed, every test of it failed, and the failures name
/// the broken probe and the verifier's rejection.
pub fn guard_verdict(success: bool, output: &str) -> Result<()> {
    let counts = output
        .lines()
        .filter_map(parse_result)
        .fold(Counts::default(), |mut a, c| {
            a += c;
            a
        });
    if success || counts.passed > 0 || counts.failed == 0 {
        bail!(
            "the guard did not hold: with {GUARD_PROBE} rejected on purpose the kernel tier \
             gave {} passed, {} failed",
            counts.passed,
            counts.failed
        );
    }
    let named = format!("required probe {GUARD_PROBE} is not there (rejected)");
    if !output.contains(&named) || !output.contains("invalid mem access") {
        bail!(
            "the guard did not hold: the kernel tier failed, but without naming {named:?} and \
             the verifier's message"
        );
    }
    eprintln!(
        "xtask: guard held: {} kernel tests failed, naming {GUARD_PROBE} and the verifier's rejection",
        counts.failed
    );
    Ok(())
}

/// The skips recorded in a skip log: `binary<TAB>test<TAB>reason` lines.
pub fn read_skips(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            let (bin, test, why) = (f.next()?, f.next()?, f.next()?);
            Some((format!("{bin}::{test}"), why.to_string()))
        })
        .collect()
}

/// `test result: ok. 18 passed; 0 failed; 2 ignored; ...` -> counts.
pub fn parse_result(line: &str) -> Option<Counts> {
    let rest = line.strip_prefix("test result: ")?;
    let mut passed = None;
    let mut failed = None;
    let mut ignored = 0;
    for part in rest.split(';') {
        let mut words = part.split_whitespace().rev();
        let (what, n) = (words.next()?, words.next()?);
        match what {
            "passed" => passed = n.parse().ok(),
            "failed" => failed = n.parse().ok(),
            "ignored" => ignored = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    Some(Counts {
        passed: passed?,
        failed: failed?,
        ignored,
    })
}

/// Where `cargo xtask vm` keeps a guest's skip logs (one per family of kernel tests).
pub fn skip_log(dir: &Path, family: &str) -> PathBuf {
    dir.join(format!("{family}.skips"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cargo_test_summaries() {
        assert_eq!(
            parse_result(
                "test result: ok. 18 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.08s"
            ),
            Some(Counts {
                passed: 18,
                failed: 0,
                ignored: 3
            })
        );
        assert_eq!(
            parse_result("test result: FAILED. 10 passed; 1 failed; 0 ignored"),
            Some(Counts {
                passed: 10,
                failed: 1,
                ignored: 0
            })
        );
        assert_eq!(parse_result("running 3 tests"), None);
    }

    #[test]
    fn the_guard_holds_only_when_every_test_fails_naming_the_probe() {
        let named = "panicked: the kernel tier cannot run, and not for want of a kernel feature: \
                     the required probe syscalls/sys_enter is not there (rejected): tp_btf: ... \
                     R2 invalid mem access 'scalar'\n";
        let failed = format!("{named}test result: FAILED. 0 passed; 2 failed; 0 ignored\n");
        assert!(guard_verdict(false, &failed).is_ok());
        // Passing, or any test passing, or failing for another reason, does not hold.
        let passed = "test result: ok. 2 passed; 0 failed; 0 ignored\n";
        assert!(guard_verdict(true, passed).is_err());
        let half = format!("{named}test result: FAILED. 1 passed; 1 failed; 0 ignored\n");
        assert!(guard_verdict(false, &half).is_err());
        let other = "test result: FAILED. 0 passed; 2 failed; 0 ignored\n";
        assert!(guard_verdict(false, other).is_err());
    }

    #[test]
    fn skip_logs_name_the_test_and_keep_the_reason() {
        let d = std::env::temp_dir().join(format!("xtask-skips-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = skip_log(&d, "copies");
        std::fs::write(
            &f,
            "kernel\tcopies::pipe_copies\tpipe_read: not_in_kernel\tstill the reason\n",
        )
        .unwrap();
        assert_eq!(
            read_skips(&f),
            vec![(
                "kernel::copies::pipe_copies".to_string(),
                "pipe_read: not_in_kernel\tstill the reason".to_string()
            )]
        );
        assert!(read_skips(&d.join("absent")).is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
