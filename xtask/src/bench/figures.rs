//! Figures: medians, spreads, ratios and verdicts, as the benchmarks print them.

/// The median of some values (the mean of the middle two for an even count); NaN if none.
pub(super) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => s[n / 2],
        _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Median and spread of some values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Spread {
    pub(super) min: f64,
    pub(super) p10: f64,
    pub(super) median: f64,
    pub(super) p90: f64,
    pub(super) max: f64,
}

impl Spread {
    pub(super) fn of(v: &[f64]) -> Spread {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        Spread {
            min: quantile(&s, 0.0),
            p10: quantile(&s, 0.1),
            median: median(&s),
            p90: quantile(&s, 0.9),
            max: quantile(&s, 1.0),
        }
    }
}

/// `a / b` where that means something: NaN unless `b` is above zero (an added cost the
/// noise left at or below zero measures nothing).
pub(super) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

/// `value` against an upper bound.
pub(super) fn verdict(value: f64, goal: f64) -> &'static str {
    if value.is_nan() {
        "n/a"
    } else if value <= goal {
        "PASS"
    } else {
        "FAIL"
    }
}

/// A number for the tables with `places` decimals, a dash for none.
pub(super) fn fixed(x: f64, places: usize) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.places$}")
    }
}

pub(super) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub(super) const MIB: f64 = 1024.0 * 1024.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_spreads() {
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        let v: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        let s = Spread::of(&v);
        assert_eq!(
            s,
            Spread {
                min: 1.0,
                p10: 2.0,
                median: 10.5,
                p90: 18.0,
                max: 20.0
            }
        );
        let one = Spread::of(&[7.0]);
        assert_eq!(
            (one.min, one.p10, one.median, one.p90, one.max),
            (7.0, 7.0, 7.0, 7.0, 7.0)
        );
        assert!(Spread::of(&[]).median.is_nan());
        assert_eq!(verdict(0.3, 0.3), "PASS");
        assert_eq!(verdict(0.31, 0.3), "FAIL");
        assert_eq!(verdict(f64::NAN, 0.3), "n/a");
        assert_eq!(ratio(1.0, 4.0), 0.25);
        assert_eq!(ratio(-1.0, 4.0), -0.25);
        assert!(ratio(-1.0, -4.0).is_nan());
        assert!(ratio(1.0, 0.0).is_nan());
        assert!(ratio(f64::NAN, 1.0).is_nan());
    }
}
