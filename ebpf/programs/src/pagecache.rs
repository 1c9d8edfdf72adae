//! pagecache family: pages looked up by buffered reads, pages added (misses), mmap faults
//! and dirtied folios, per process. Tracepoints where the kernel has them (6.12+ for the
//! lookups); else fentry, else kprobe, on the folio-era functions, with the pre-5.16 names
//! as the last fallback.
use aya_ebpf::{
    macros::{fentry, kprobe, tracepoint},
    programs::{FEntryContext, ProbeContext, TracePointContext},
};

use crate::{
    global,
    maps::{CACHE_STATS, current_tgid, proc_row},
};

#[unsafe(no_mangle)]
static OFF_GETPAGES_INDEX: u64 = 0;
#[unsafe(no_mangle)]
static OFF_GETPAGES_LAST: u64 = 0;
#[unsafe(no_mangle)]
static OFF_ADD_ORDER: u64 = 0;

#[inline(always)]
fn add(f: impl FnOnce(&mut copyscope_common::CacheStats)) {
    if let Some(v) = proc_row(&CACHE_STATS, current_tgid()) {
        f(unsafe { &mut *v });
    }
}

// mm/filemap.c: filemap_get_pages() -> trace_mm_filemap_get_pages(mapping, index, last_index - 1)
#[tracepoint]
pub fn pagecache_get(ctx: TracePointContext) -> i32 {
    let first: u64 = unsafe { ctx.read_at(global(&OFF_GETPAGES_INDEX) as usize) }.unwrap_or(0);
    let last: u64 = unsafe { ctx.read_at(global(&OFF_GETPAGES_LAST) as usize) }.unwrap_or(0);
    if last >= first {
        add(|s| s.lookups += last - first + 1);
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
    add(|s| s.misses += pages);
    0
}

// mm/filemap.c: filemap_fault() -> trace_mm_filemap_fault(mapping, index)
#[tracepoint]
pub fn pagecache_fault(_ctx: TracePointContext) -> i32 {
    add(|s| s.mmap_faults += 1);
    0
}

// mm/page-writeback.c: folio_account_dirtied() -> trace_writeback_dirty_folio(folio, mapping)
#[tracepoint]
pub fn pagecache_dirty(_ctx: TracePointContext) -> i32 {
    add(|s| s.dirtied += 1);
    0
}

// mm/swap.c: folio_mark_accessed() (mark_page_accessed() before 5.16): one folio touched
// by a read, the classic cachestat "access".
#[fentry]
pub fn pagecache_acc_f(_ctx: FEntryContext) -> i32 {
    add(|s| s.lookups += 1);
    0
}

#[kprobe]
pub fn pagecache_acc_k(_ctx: ProbeContext) -> u32 {
    add(|s| s.lookups += 1);
    0
}

// mm/filemap.c: filemap_add_folio() (add_to_page_cache_lru() before 5.16): one miss.
#[fentry]
pub fn pagecache_add_f(_ctx: FEntryContext) -> i32 {
    add(|s| s.misses += 1);
    0
}

#[kprobe]
pub fn pagecache_add_k(_ctx: ProbeContext) -> u32 {
    add(|s| s.misses += 1);
    0
}
