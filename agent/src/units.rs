//! Sizes in words: bytes with a binary unit.

/// How many decimals [`bytes_with`] gives a size of 1 KiB and over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decimals {
    /// Three significant figures: 1.5 KiB, 200 MiB (the snapshot table).
    ThreeFigures,
    /// Always one: 1.5 KiB, 200.0 MiB (the benchmark's table and plot).
    One,
}

/// Bytes with a binary unit, three significant figures: 512 B, 1.5 KiB, 200 MiB.
pub fn bytes(n: u64) -> String {
    bytes_with(n, Decimals::ThreeFigures)
}

/// Bytes with a binary unit (B, KiB, MiB, GiB, TiB): whole bytes below 1 KiB, then
/// `decimals`.
pub fn bytes_with(n: u64, decimals: Decimals) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else if v >= 100.0 && decimals == Decimals::ThreeFigures {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(200 * 1024 * 1024), "200 MiB");
        // The benchmark's: always one decimal.
        assert_eq!(bytes_with(512, Decimals::One), "512 B");
        assert_eq!(bytes_with(3 << 29, Decimals::One), "1.5 GiB");
        assert_eq!(bytes_with(200 * 1024 * 1024, Decimals::One), "200.0 MiB");
    }
}
