//! pagecache family on the running kernel: cold and warm reads of a file with a known
//! number of pages, mmap faults, dirtied pages.

mod common;

use std::process::Command;

use common::*;

const PAGES: u64 = 512;

/// Tolerance, in pages, for a whole-file read. filemap_get_pages() is traced once per call,
/// and a read that waits for readahead I/O calls it again for the same range, so a cold
/// read can count a few more lookups than pages; the binary's own start-up is subtracted
/// with a run that reads nothing.
const TOLERANCE: u64 = PAGES / 10;

fn drop_cache(path: &str) {
    let s = Command::new(WORKLOAD)
        .args(["drop-cache", path])
        .output()
        .unwrap();
    assert_ok(&s, "drop-cache");
}

fn cache(p: &serde_json::Value, what: &str) -> u64 {
    num(p, &["page_cache", what])
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn cold_read_misses_and_warm_read_hits() {
    require_kernel!();
    if let Some(why) =
        probe_missing("pagecache", "lookups").or_else(|| probe_missing("pagecache", "misses"))
    {
        skip!(format!("no page-cache probe on this kernel: {why}"));
    }
    let d = scratch("pagecache");
    let f = d.join("data");
    write_file(&f, (PAGES * 4096) as usize);
    let empty = d.join("empty");
    write_file(&empty, 0);
    let path = f.to_str().unwrap();
    let (base, _) = run_workload(&d, &["read", empty.to_str().unwrap()]);
    let b = command_process(&base);
    // Before 6.12 lookups come from fentry/kprobe on mark_page_accessed/folio_mark_accessed:
    // page accesses, which the kernel skips for some freshly read-ahead pages, so the
    // figure is looser there.
    let lookup_tolerance = match probe_method(&base, "pagecache", "lookups").as_deref() {
        Some("tracepoint") => TOLERANCE,
        _ => PAGES / 4,
    };

    drop_cache(path);
    let (cold, res) = run_workload(&d, &["read", path]);
    assert_eq!(res["pages"], PAGES);
    let c = command_process(&cold);
    let misses = cache(c, "misses").saturating_sub(cache(b, "misses"));
    let lookups = cache(c, "lookups") - cache(b, "lookups");
    assert!(
        misses > 0,
        "a cold read must miss (cachestat's 'always 0 misses' bug): {c:#}"
    );
    assert!(
        misses.abs_diff(PAGES) <= TOLERANCE,
        "cold read: {misses} misses for {PAGES} pages"
    );
    assert!(
        lookups.abs_diff(PAGES) <= lookup_tolerance,
        "cold read: {lookups} lookups"
    );
    assert!(
        lookups - misses.min(lookups) <= TOLERANCE,
        "cold read: almost no hits"
    );

    let (warm, _) = run_workload(&d, &["read", path]);
    let w = command_process(&warm);
    // The read's own figures: the process totals also hold its start-up, whose misses
    // (loading the binary through mmap faults) have no lookups, so hits are taken from the
    // differences of lookups and misses, not from the clamped per-process hits.
    let lookups = cache(w, "lookups").saturating_sub(cache(b, "lookups"));
    let misses = cache(w, "misses").saturating_sub(cache(b, "misses"));
    let hits = lookups.saturating_sub(misses);
    assert!(
        hits.abs_diff(PAGES) <= lookup_tolerance,
        "warm read: {hits} hits for {PAGES} pages: {w:#}"
    );
    assert!(misses <= TOLERANCE, "warm read: {misses} misses");
    // The read's own ratio (the process's includes its start-up, e.g. loading the binary).
    assert!(
        hits as f64 / (hits + misses) as f64 > 0.9,
        "warm read: {hits} hits, {misses} misses"
    );
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn mmap_reads_fault_through_the_page_cache() {
    require_kernel!();
    if let Some(why) = probe_missing("pagecache", "mmap_faults") {
        skip!(format!(
            "no filemap:mm_filemap_fault tracepoint on this kernel: {why}"
        ));
    }
    let d = scratch("pagecache-mmap");
    // Large enough that read-around (read_ahead_kb, 8 MiB on some hosts) takes many windows.
    const MAPPED: u64 = 32_768;
    let f = d.join("data");
    std::fs::write(&f, vec![7u8; (MAPPED * 4096) as usize]).unwrap();
    let small = d.join("small");
    write_file(&small, 4096);
    let (base, _) = run_workload(&d, &["mmap-read", small.to_str().unwrap()]);
    drop_cache(f.to_str().unwrap());
    let (snap, res) = run_workload(&d, &["mmap-read", f.to_str().unwrap()]);
    assert_eq!(res["pages"], MAPPED);
    let (p, b) = (command_process(&snap), command_process(&base));
    let faults = cache(p, "mmap_faults").saturating_sub(cache(b, "mmap_faults"));
    // filemap_fault() runs only for pages fault-around could not map from the cache: on a
    // cold mapping about once per read-around window (128 KiB to 8 MiB), never once a page.
    // The start-up of the binary (a handful of faults, varying by a few) is subtracted.
    assert!(
        (8..=MAPPED / 16).contains(&faults),
        "{faults} faults for a cold mapping of {MAPPED} pages: {p:#}"
    );
    let misses = cache(p, "misses").saturating_sub(cache(b, "misses"));
    assert!(
        misses.abs_diff(MAPPED) <= MAPPED / 100,
        "the cold mapping was read into the cache: {misses} misses"
    );
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn buffered_writes_dirty_pages() {
    require_kernel!();
    if let Some(why) = probe_missing("pagecache", "dirtied") {
        skip!(format!(
            "no writeback dirty tracepoint on this kernel: {why}"
        ));
    }
    let d = scratch("pagecache-dirty");
    let (base, _) = run_workload(&d, &["write-file", d.join("none").to_str().unwrap(), "0"]);
    let (snap, _) = run_workload(
        &d,
        &[
            "write-file",
            d.join("out").to_str().unwrap(),
            &PAGES.to_string(),
        ],
    );
    let dirtied = cache(command_process(&snap), "dirtied")
        .saturating_sub(cache(command_process(&base), "dirtied"));
    // One event per folio: large folios make it fewer than the pages written, never more
    // (but for the few the binary's start-up dirties, which vary by a page or two).
    assert!(
        (1..=PAGES + 8).contains(&dirtied),
        "{dirtied} folios dirtied for {PAGES} pages"
    );
}
