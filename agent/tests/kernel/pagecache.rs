//! pagecache family on the running kernel: cold and warm reads of a file with a known
//! number of pages, mmap faults, dirtied pages.

use crate::common;

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

/// The patterns the advisor found for the snapshot's command.
fn patterns(snap: &serde_json::Value) -> Vec<String> {
    let pid = snap["command"]["pid"].as_u64().unwrap();
    snap["advice"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["pid"].as_u64() == Some(pid))
        .map(|a| a["pattern"].as_str().unwrap().to_string())
        .collect()
}

/// A field of the command's page-cache row, less the same field of a baseline run (the
/// binary's own start-up).
fn cache_diff(snap: &serde_json::Value, base: &serde_json::Value, what: &str) -> u64 {
    cache(command_process(snap), what).saturating_sub(cache(command_process(base), what))
}

/// Pages a few start-up reads and writes of the binary may differ by between two runs.
const STARTUP: u64 = 8;

/// Pages of the file system's own metadata (a block bitmap, an extent block, journal
/// buffers: pages of the block device's cache) that a run of writes may read or dirty,
/// varying by a page or two from run to run. Data pages are counted exactly.
const FS_METADATA: u64 = 8;

/// `got` pages must be `want`, give or take the file system's metadata, and the pages a
/// skipped program run may have lost (a folio of at most 512 pages each).
fn assert_pages(s: Slack, got: u64, want: u64, what: &str) {
    let tol = FS_METADATA + (s.below + s.above) * 512;
    assert!(
        got.abs_diff(want) <= tol,
        "{what}: {got} pages, want {want} within {tol} ({s:?} skipped program runs)"
    );
}

/// Why the first of these page-cache probes is missing, if one is.
fn missing(hooks: &[&str]) -> Option<String> {
    hooks.iter().find_map(|h| probe_missing("pagecache", h))
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn a_pure_writer_adds_pages_by_writes_not_read_misses() {
    require_kernel!();
    if let Some(why) = missing(&["misses", "dirtied"]) {
        skip!(format!(
            "no page-cache add or dirty probe on this kernel: {why}"
        ));
    }
    let d = scratch("pagecache-writer");
    let (base, _) = run_workload(&d, &["write-file", d.join("none").to_str().unwrap(), "0"]);
    let (snap, res) = run_workload(
        &d,
        &[
            "write-file",
            d.join("out").to_str().unwrap(),
            &PAGES.to_string(),
        ],
    );
    assert_eq!(res["pages"], PAGES);
    let s = slack_diff(&snap, &base);
    // Every page of the new file was added by a write and dirtied, and none of it is a
    // read miss: no 0% hit ratio, no O_DIRECT advice (dd of=FILE had both).
    assert_pages(
        s,
        cache_diff(&snap, &base, "added_by_writes"),
        PAGES,
        "pages added by writes",
    );
    assert_pages(
        s,
        cache_diff(&snap, &base, "dirtied"),
        PAGES,
        "pages dirtied",
    );
    let misses = cache_diff(&snap, &base, "misses");
    assert!(
        misses <= STARTUP,
        "a pure writer: {misses} read misses: {snap:#}"
    );
    assert!(
        !patterns(&snap).contains(&"direct_io".to_string()),
        "a pure writer was told to use O_DIRECT: {:#}",
        snap["advice"]
    );
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn a_copy_of_a_cached_file_hits_the_cache_and_adds_its_copy_by_writes() {
    require_kernel!();
    if let Some(why) = missing(&["misses", "dirtied", "lookups"]) {
        skip!(format!("no page-cache probe on this kernel: {why}"));
    }
    let d = scratch("pagecache-copy");
    let src = d.join("src");
    write_file(&src, (PAGES * 4096) as usize);
    let empty = d.join("empty");
    write_file(&empty, 0);
    let (base, _) = run_workload(
        &d,
        &[
            "copy-file-range",
            empty.to_str().unwrap(),
            d.join("none").to_str().unwrap(),
        ],
    );
    // The source is in the cache (just written, then read).
    run_workload(&d, &["read", src.to_str().unwrap()]);
    let dst = d.join("dst");
    let (snap, _) = run_workload(
        &d,
        &[
            "copy-file-range",
            src.to_str().unwrap(),
            dst.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
    eprintln!(
        "DEBUG base {} snap {}",
        command_process(&base)["page_cache"],
        command_process(&snap)["page_cache"]
    );
    let s = slack_diff(&snap, &base);
    assert_pages(
        s,
        cache_diff(&snap, &base, "added_by_writes"),
        PAGES,
        "pages added by writes",
    );
    let misses = cache_diff(&snap, &base, "misses");
    assert!(
        misses <= STARTUP,
        "a copy of a cached file: {misses} read misses: {snap:#}"
    );
    // Hits from the differences of lookups and misses, not from the per-process hits,
    // which are clamped at zero: a process's start-up may miss pages it looks up nowhere
    // (its binary faulted in, as from the QEMU guests' 9p share).
    let hits = cache_diff(&snap, &base, "lookups").saturating_sub(misses);
    if probe_method(&snap, "pagecache", "lookups").as_deref() == Some("tracepoint") {
        assert!(
            hits.abs_diff(PAGES) <= TOLERANCE,
            "a copy of a cached file: {hits} hits for {PAGES} pages"
        );
    } else {
        // Page accesses (mark_page_accessed) are no count of pages looked up: the copy's
        // write side marks pages too, some more than once (5.10 and 6.1 counted over twice
        // the pages). The source's pages, all found, are the bound that holds.
        assert!(
            hits >= PAGES - PAGES / 4,
            "a copy of a cached file: {hits} page accesses for {PAGES} pages read"
        );
    }
    assert!(
        !patterns(&snap).contains(&"direct_io".to_string()),
        "a copy of a cached file was told to use O_DIRECT: {:#}",
        snap["advice"]
    );
}

/// How far lookups (and so hits) may be from the pages read: the tracepoint counts each
/// page a read asks for; before 6.12 lookups come from fentry/kprobe on
/// mark_page_accessed/folio_mark_accessed, page accesses, which the kernel skips for some
/// pages, so the figure is looser there (as in the cold and warm read test).
fn lookup_tolerance(snap: &serde_json::Value) -> u64 {
    match probe_method(snap, "pagecache", "lookups").as_deref() {
        Some("tracepoint") => TOLERANCE,
        _ => PAGES / 4,
    }
}

/// Pages dirtied by overwriting every page of the file (folios read in, so the dirty
/// was not matched to an add): exact where the BTF-typed program reads each folio's size;
/// with the plain tracepoint (no folio in its record) a large folio counts one page, so
/// the figure is at most the pages.
fn assert_dirtied(snap: &serde_json::Value, s: Slack, dirtied: u64, what: &str) {
    if probe_method(snap, "pagecache", "dirtied").as_deref() == Some("tp_btf") {
        assert_pages(s, dirtied, PAGES, &format!("pages dirtied ({what})"));
    } else {
        assert!(
            (1..=PAGES + FS_METADATA).contains(&dirtied),
            "{what}: {dirtied} dirtied (folios, by the tracepoint) for {PAGES} pages"
        );
    }
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn read_modify_write_misses_only_what_it_reads_and_dirties_what_it_writes() {
    require_kernel!();
    if let Some(why) = missing(&["misses", "dirtied", "lookups"]) {
        skip!(format!("no page-cache probe on this kernel: {why}"));
    }
    let d = scratch("pagecache-rmw");
    let f = d.join("data");
    write_file(&f, (PAGES * 4096) as usize);
    let empty = d.join("empty");
    write_file(&empty, 0);
    let path = f.to_str().unwrap();
    // The baseline (the binary's own start-up) is taken right before each run it is
    // subtracted from: between two runs further apart, the binary's pages may have left
    // the cache (other tests read and write hundreds of MiB) and be missed again.
    let base_run = || run_workload(&d, &["read-modify-write", empty.to_str().unwrap()]).0;

    // Cold: every page is a read miss, none is added by a write, every page is dirtied.
    drop_cache(path);
    let base = base_run();
    let (cold, res) = run_workload(&d, &["read-modify-write", path]);
    assert_eq!(res["pages"], PAGES);
    let s = slack_diff(&cold, &base);
    let misses = cache_diff(&cold, &base, "misses");
    assert!(
        misses.abs_diff(PAGES) <= TOLERANCE,
        "cold read-modify-write: {misses} read misses for {PAGES} pages: {cold:#}"
    );
    let written = cache_diff(&cold, &base, "added_by_writes");
    assert!(
        written <= STARTUP,
        "cold read-modify-write: {written} pages added by writes"
    );
    assert_dirtied(&cold, s, cache_diff(&cold, &base, "dirtied"), "cold");

    // Warm (and written back, so that the writes dirty clean pages): hits, no misses, no
    // pages added, every page dirtied; no O_DIRECT advice.
    std::fs::File::open(&f).unwrap().sync_all().unwrap();
    let base = base_run();
    let (warm, _) = run_workload(&d, &["read-modify-write", path]);
    let s = slack_diff(&warm, &base);
    let misses = cache_diff(&warm, &base, "misses");
    assert!(
        misses <= STARTUP,
        "warm read-modify-write: {misses} read misses: {warm:#}"
    );
    assert!(cache_diff(&warm, &base, "added_by_writes") <= STARTUP);
    let hits = cache_diff(&warm, &base, "lookups").saturating_sub(misses);
    assert!(
        hits.abs_diff(PAGES) <= lookup_tolerance(&warm),
        "warm read-modify-write: {hits} hits for {PAGES} pages"
    );
    assert_dirtied(&warm, s, cache_diff(&warm, &base, "dirtied"), "warm");
    assert!(
        !patterns(&warm).contains(&"direct_io".to_string()),
        "a warm read-modify-write was told to use O_DIRECT: {:#}",
        warm["advice"]
    );
}
