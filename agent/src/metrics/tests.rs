//! Tests of the process figures and of the text format against the prometheus crate.

use std::collections::BTreeMap;

use prometheus::{
    Encoder as _, TextEncoder,
    proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
};

use super::{
    exposition::Families,
    page_size,
    process::{ProcessStats, parse_btime, parse_stat},
    specs::Spec,
};

#[test]
fn process_figures_are_read_from_stat_whatever_the_comm() {
    // A comm with spaces and parentheses; utime 250, stime 50 ticks; starttime 1000
    // ticks after boot; vsize 100 MiB; rss 300 pages.
    let stat = "4242 (a) (b c) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 3 0 \
1000 104857600 300 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
    let p = parse_stat(stat, 100.0, 4096, 1_700_000_000).unwrap();
    assert_eq!(p.cpu_seconds, 3.0);
    assert_eq!(p.start_time_seconds, 1_700_000_010.0);
    assert_eq!(p.virtual_bytes, 100 << 20);
    assert_eq!(p.resident_bytes, 300 * 4096);
    assert!(parse_stat("4242 (truncated", 100.0, 4096, 0).is_none());
    assert_eq!(
        parse_btime("cpu 1 2 3\nbtime 1700000000\nprocesses 9\n"),
        Some(1_700_000_000)
    );
    assert_eq!(parse_btime("cpu 1 2 3\n"), None);
}

#[test]
fn this_process_figures_agree_with_proc_status_and_getconf() {
    let p = ProcessStats::of_self().unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let vm = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    // Read moments apart: the same within a few MiB.
    let (rss, vsz) = (vm("VmRSS:"), vm("VmSize:"));
    assert!(
        p.resident_bytes.abs_diff(rss) < 8 << 20,
        "{p:?} VmRSS {rss}"
    );
    assert!(
        p.virtual_bytes.abs_diff(vsz) < 64 << 20,
        "{p:?} VmSize {vsz}"
    );
    assert!(p.open_fds >= 3, "{p:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 3600.0);
    let getconf = std::process::Command::new("getconf")
        .arg("PAGESIZE")
        .output()
        .unwrap();
    let want: u64 = String::from_utf8_lossy(&getconf.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_eq!(page_size(), want);
}

#[test]
fn exposition_is_byte_for_byte_what_the_prometheus_text_encoder_writes() {
    let values = [
        0.0,
        1.0,
        42.0,
        0.1,
        1e-7,
        123_456_789.125,
        1e21,
        9_007_199_254_740_992.0,
        9_007_199_254_740_994.0,
        -3.5,
        -0.0,
        -7.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    let texts = ["plain", "a\"b", "back\\slash", "new\nline", "ünïcode", ""];
    let specs: [(Spec, MetricType); 3] = [
        (
            ("b_total", "Help with a \\ and a\nnew line."),
            MetricType::COUNTER,
        ),
        (("a_gauge", ""), MetricType::GAUGE),
        (("c_gauge", "Plain \"help\"."), MetricType::GAUGE),
    ];
    let mut ours = Families::default();
    let mut theirs: BTreeMap<&str, MetricFamily> = BTreeMap::new();
    for (i, v) in values.iter().enumerate() {
        let (spec, t) = specs[i % specs.len()];
        let text = texts[i % texts.len()];
        let labels: Vec<(&str, &str)> = match i % 3 {
            0 => vec![],
            1 => vec![("l", text)],
            _ => vec![("l", text), ("m", "x")],
        };
        match t {
            MetricType::COUNTER => ours.counter(spec, &labels, *v),
            _ => ours.gauge(spec, &labels, *v),
        }
        let mut m = Metric::default();
        m.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut p = LabelPair::default();
                    p.set_name(k.to_string());
                    p.set_value(v.to_string());
                    p
                })
                .collect(),
        );
        if t == MetricType::COUNTER {
            let mut c = Counter::default();
            c.set_value(*v);
            m.set_counter(c);
        } else {
            let mut g = Gauge::default();
            g.set_value(*v);
            m.set_gauge(g);
        }
        let fam = theirs.entry(spec.0).or_insert_with(|| {
            let mut f = MetricFamily::default();
            f.set_name(spec.0.to_string());
            f.set_help(spec.1.to_string());
            f.set_field_type(t);
            f
        });
        fam.mut_metric().push(m);
    }
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&theirs.into_values().collect::<Vec<_>>(), &mut buf)
        .unwrap();
    assert_eq!(ours.finish(), String::from_utf8(buf).unwrap());
}
