//! The Prometheus text format (version 0.0.4), written directly.

use std::collections::BTreeMap;

use super::specs::Spec;

/// The families of an exposition, each with its samples already written, in the order
/// they were added; written out by name.
#[derive(Default)]
pub(super) struct Families {
    by_name: BTreeMap<&'static str, (Spec, &'static str, String)>,
}

impl Families {
    /// One sample, labelled with `labels` then `extra`.
    pub(super) fn add(
        &mut self,
        spec: Spec,
        kind: &'static str,
        labels: &[(&str, &str)],
        extra: &[(&str, &str)],
        v: f64,
    ) {
        let out = &mut self
            .by_name
            .entry(spec.0)
            .or_insert_with(|| (spec, kind, String::new()))
            .2;
        out.push_str(spec.0);
        let mut sep = '{';
        for (k, v) in labels.iter().chain(extra) {
            out.push(sep);
            out.push_str(k);
            out.push_str("=\"");
            escape(out, v, true);
            out.push('"');
            sep = ',';
        }
        if sep == ',' {
            out.push('}');
        }
        out.push(' ');
        write_value(out, v);
        out.push('\n');
    }

    pub(super) fn counter(&mut self, spec: Spec, labels: &[(&str, &str)], v: f64) {
        self.add(spec, "counter", labels, &[], v)
    }

    pub(super) fn gauge(&mut self, spec: Spec, labels: &[(&str, &str)], v: f64) {
        self.add(spec, "gauge", labels, &[], v)
    }

    pub(super) fn finish(self) -> String {
        let len = self.by_name.values().map(|(_, _, b)| b.len() + 256).sum();
        let mut out = String::with_capacity(len);
        for ((name, help), kind, body) in self.by_name.into_values() {
            if !help.is_empty() {
                out.push_str("# HELP ");
                out.push_str(name);
                out.push(' ');
                escape(&mut out, help, false);
                out.push('\n');
            }
            out.push_str("# TYPE ");
            out.push_str(name);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            out.push_str(&body);
        }
        out
    }
}

/// The text format's escapes: `\\` and a new line always, `"` in label values.
fn escape(out: &mut String, v: &str, quote: bool) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// A sample value as Rust's `Display` writes an f64 (what the text encoder uses), whole
/// numbers the fast way.
fn write_value(out: &mut String, v: f64) {
    use std::fmt::Write as _;
    // Below 2^53 every whole f64 is exact in a u64 and displays as its digits.
    if v.fract() == 0.0 && v.is_sign_positive() && v < 9_007_199_254_740_992.0 {
        let mut buf = [0u8; 20];
        let mut n = v as u64;
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.push_str(std::str::from_utf8(&buf[i..]).expect("ASCII digits"));
    } else {
        let _ = write!(out, "{v}");
    }
}
