//! pagecache family: pages looked up by buffered reads, pages added (misses), mmap faults
//! and dirtied folios, per process. Tracepoints where the kernel has them (6.12+ for the
//! lookups); else fentry, else kprobe, on the folio-era functions, with the pre-5.16 names
//! as the last fallback.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fentry, kprobe, map, tracepoint},
    maps::LruHashMap,
    programs::{FEntryContext, ProbeContext, TracePointContext},
};
use copyscope_common::limits;

use crate::{
    global,
    maps::{CACHE_STATS, INFLIGHT, bump, current_tgid, proc_row},
};

#[unsafe(no_mangle)]
static OFF_GETPAGES_INDEX: u64 = 0;
#[unsafe(no_mangle)]
static OFF_GETPAGES_LAST: u64 = 0;
#[unsafe(no_mangle)]
static OFF_ADD_ORDER: u64 = 0;
#[unsafe(no_mangle)]
static OFF_GETPAGES_INO: u64 = 0;

#[inline(always)]
fn add(f: impl FnOnce(&mut copyscope_common::CacheStats)) {
    if let Some(v) = proc_row(&CACHE_STATS, current_tgid()) {
        f(unsafe { &mut *v });
    }
}

/// The last range a thread's current syscall looked up.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct LastRange {
    /// Start of the syscall (from INFLIGHT), telling one syscall's retries from the next call.
    syscall_start: u64,
    ino: u64,
    end: u64,
}

/// By thread: filemap_get_pages() is called again for the rest of a range after waiting
/// for readahead I/O; pages already counted in the same syscall are not counted twice.
#[map]
static LOOKUP_LAST: LruHashMap<u32, LastRange> = LruHashMap::with_max_entries(8192, 0);

// mm/filemap.c: filemap_get_pages() -> trace_mm_filemap_get_pages(mapping, index, last_index - 1)
#[tracepoint]
pub fn pagecache_get(ctx: TracePointContext) -> i32 {
    let first: u64 = unsafe { ctx.read_at(global(&OFF_GETPAGES_INDEX) as usize) }.unwrap_or(0);
    let last: u64 = unsafe { ctx.read_at(global(&OFF_GETPAGES_LAST) as usize) }.unwrap_or(0);
    let ino: u64 = unsafe { ctx.read_at(global(&OFF_GETPAGES_INO) as usize) }.unwrap_or(0);
    if last < first {
        return 0;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let start = INFLIGHT
        .get(tid & (limits::INFLIGHT_SLOTS - 1))
        .filter(|s| s.tid == tid)
        .map_or(0, |s| s.start_ns);
    let mut pages = last - first + 1;
    if start != 0 {
        let mut end = last;
        let prev = unsafe { LOOKUP_LAST.get(&tid) }.copied();
        if let Some(p) = prev.filter(|p| p.syscall_start == start && p.ino == ino) {
            if first <= p.end {
                pages = last.saturating_sub(p.end);
            }
            end = end.max(p.end);
        }
        let _ = LOOKUP_LAST.insert(
            &tid,
            &LastRange {
                syscall_start: start,
                ino,
                end,
            },
            0,
        );
    }
    if pages > 0 {
        add(|s| bump(&raw mut s.lookups, pages));
    }
    0
}

// mm/filemap.c: __filemap_add_folio() -> trace_mm_filemap_add_to_page_cache(folio)
#[tracepoint]
pub fn pagecache_add(ctx: TracePointContext) -> i32 {
    let off = global(&OFF_ADD_ORDER);
    let order: u8 = if off != 0 {
        unsafe { ctx.read_at(off as usize) }.unwrap_or(0)
    } else {
        0
    };
    let pages = 1u64 << (order & 31);
    add(|s| bump(&raw mut s.misses, pages));
    0
}

// mm/filemap.c: filemap_fault() -> trace_mm_filemap_fault(mapping, index)
#[tracepoint]
pub fn pagecache_fault(_ctx: TracePointContext) -> i32 {
    add(|s| bump(&raw mut s.mmap_faults, 1));
    0
}

// mm/page-writeback.c: folio_account_dirtied() -> trace_writeback_dirty_folio(folio, mapping)
#[tracepoint]
pub fn pagecache_dirty(_ctx: TracePointContext) -> i32 {
    add(|s| bump(&raw mut s.dirtied, 1));
    0
}

// mm/swap.c: folio_mark_accessed() (mark_page_accessed() before 5.16): one folio touched
// by a read, the classic cachestat "access".
#[fentry]
pub fn pagecache_acc_f(_ctx: FEntryContext) -> i32 {
    add(|s| bump(&raw mut s.lookups, 1));
    0
}

#[kprobe]
pub fn pagecache_acc_k(_ctx: ProbeContext) -> u32 {
    add(|s| bump(&raw mut s.lookups, 1));
    0
}

// mm/filemap.c: filemap_add_folio() (add_to_page_cache_lru() before 5.16): one miss.
#[fentry]
pub fn pagecache_add_f(_ctx: FEntryContext) -> i32 {
    add(|s| bump(&raw mut s.misses, 1));
    0
}

#[kprobe]
pub fn pagecache_add_k(_ctx: ProbeContext) -> u32 {
    add(|s| bump(&raw mut s.misses, 1));
    0
}
