//! Argument pieces more than one command takes: sizes, durations and intervals, switches
//! settable from the environment, and the advisor's thresholds.

/// `256M` -> 268435456; plain numbers are bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => {
                    return Err(format!(
                        "{s:?}: unknown size suffix {c:?} (use K, M, G or T)"
                    ));
                }
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size: give bytes, e.g. 1048576, 64K, 256M or 2G"))?;
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if v == 0 {
        return Err("the size must be more than 0 bytes".into());
    }
    Ok(v)
}

pub fn parse_interval(s: &str) -> Result<f64, String> {
    let v = parse_duration(s)?;
    if v < 0.1 {
        return Err(format!(
            "the interval must be at least 0.1 s (and at most 86400 s), got {s}"
        ));
    }
    Ok(v)
}

/// The advisor's thresholds (see the README's advisor section).
#[derive(Debug, Clone, clap::Args)]
pub struct AdviceArgs {
    /// Bytes per second both sides of a copy pattern must reach to be flagged.
    #[arg(long, env = "COPYSCOPE_ADVISE_MIN_RATE", default_value_t = 1048576.0, value_parser = parse_nonneg)]
    pub advise_min_rate: f64,
    /// Smaller side over larger side (0-1] for a read and a write to count as one flow.
    #[arg(long, env = "COPYSCOPE_ADVISE_MIN_RATIO", default_value_t = 0.5, value_parser = parse_fraction)]
    pub advise_min_ratio: f64,
    /// Page-cache hit ratio (0-1) at or below which streamed reads are flagged for O_DIRECT.
    #[arg(long, env = "COPYSCOPE_ADVISE_DIRECTIO_HIT_RATIO", default_value_t = 0.5, value_parser = parse_fraction)]
    pub advise_directio_hit_ratio: f64,
    /// Share (0-1) of bytes moved zero-copy at or above which a process is reported zero-copy.
    #[arg(long, env = "COPYSCOPE_ADVISE_ZERO_COPY_SHARE", default_value_t = 0.5, value_parser = parse_fraction)]
    pub advise_zero_copy_share: f64,
    /// CPU seconds per second (0.001: 0.1% of one CPU) a finding must save to be reported.
    #[arg(long, env = "COPYSCOPE_ADVISE_MIN_SAVING", default_value_t = 0.001, value_parser = parse_nonneg)]
    pub advise_min_saving: f64,
    /// Also list the findings below --advise-min-saving in the JSON, marked
    /// `"below_threshold": true` (never in the metrics).
    #[arg(long, env = "COPYSCOPE_ADVISE_ALL", value_parser = boolish())]
    pub advise_all: bool,
}

impl AdviceArgs {
    pub fn thresholds(&self) -> anyhow::Result<crate::advisor::Thresholds> {
        let t = crate::advisor::Thresholds {
            min_bytes_per_second: self.advise_min_rate,
            min_ratio: self.advise_min_ratio,
            directio_max_hit_ratio: self.advise_directio_hit_ratio,
            zero_copy_share: self.advise_zero_copy_share,
            min_cpu_saved: self.advise_min_saving,
            list_below: self.advise_all,
        };
        t.check().map_err(anyhow::Error::msg)?;
        Ok(t)
    }
}

pub fn parse_nonneg(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("must be a number >= 0, got {s}"));
    }
    Ok(v)
}

pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !v.is_finite() || !(0.0..=1.0).contains(&v) {
        return Err(format!("must be between 0 and 1, got {s}"));
    }
    Ok(v)
}

/// A switch that can also be set from the environment: 1/0, yes/no, true/false (and
/// y/n, t/f, on/off); anything else is an error rather than "on".
pub fn boolish() -> clap::builder::BoolishValueParser {
    clap::builder::BoolishValueParser::new()
}

pub fn parse_duration(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 || v > 86_400.0 {
        return Err(format!(
            "duration must be more than 0 and at most 86400 seconds, got {s}"
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("256m"), Ok(256 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("0").unwrap_err().contains("more than 0"));
        assert!(parse_size("1.5G").unwrap_err().contains("not a size"));
        assert!(parse_size("3X").unwrap_err().contains("suffix"));
        assert!(
            parse_size("99999999999T")
                .unwrap_err()
                .contains("too large")
        );
    }
}
