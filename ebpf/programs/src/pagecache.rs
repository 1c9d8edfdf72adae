//! pagecache family: pages looked up by buffered reads, pages added (read misses, and
//! pages added by writes told apart), mmap faults and dirtied pages, per process. Tracepoints where the kernel has them (6.12+ for the
//! lookups); else fentry, else kprobe, on the folio-era functions, with the pre-5.16 names
//! as the last fallback.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, fentry, kprobe, map, tracepoint},
    maps::Array,
    programs::{BtfTracePointContext, FEntryContext, ProbeContext, TracePointContext},
};
use copyscope_common::limits;

use crate::{
    field, global,
    maps::{INFLIGHT, PAGECACHE_STATS, bump, current_tgid, proc_row},
};

#[unsafe(no_mangle)]
static OFF_GETPAGES_INDEX: u64 = 0;
#[unsafe(no_mangle)]
static OFF_GETPAGES_LAST: u64 = 0;
#[unsafe(no_mangle)]
static OFF_ADD_ORDER: u64 = 0;
#[unsafe(no_mangle)]
static OFF_GETPAGES_INO: u64 = 0;
#[unsafe(no_mangle)]
static OFF_ADD_INO: u64 = 0;
#[unsafe(no_mangle)]
static OFF_ADD_INDEX: u64 = 0;
#[unsafe(no_mangle)]
static OFF_DIRTY_INO: u64 = 0;
#[unsafe(no_mangle)]
static OFF_DIRTY_INDEX: u64 = 0;
#[unsafe(no_mangle)]
static OFF_FOLIO_FLAGS: u64 = 0;
#[unsafe(no_mangle)]
static FOLIO_HEAD_BIT: u64 = 0;
#[unsafe(no_mangle)]
static OFF_FOLIO_NR_PAGES: u64 = 0;
#[unsafe(no_mangle)]
static OFF_FOLIO_INDEX: u64 = 0;
#[unsafe(no_mangle)]
static OFF_MAPPING_HOST: u64 = 0;
#[unsafe(no_mangle)]
static OFF_INODE_INO: u64 = 0;

#[inline(always)]
fn add(f: impl FnOnce(&mut copyscope_common::PagecacheStats)) {
    if let Some(v) = proc_row(&PAGECACHE_STATS, current_tgid()) {
        f(unsafe { &mut *v });
    }
}

/// A folio a thread added to the cache.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Added {
    /// Start of the syscall in flight (0 outside a counted syscall).
    syscall_start: u64,
    ino: u64,
    index: u64,
    /// 0: no folio (or already matched).
    pages: u64,
}

/// The two folios a thread added last, newest first. A write adds a folio and dirties it
/// before it adds the next one, so a dirty of one of these folios in the same system call
/// makes its pages write-added rather than read misses. Two, because a file system may
/// read a block of its own metadata (a bitmap, an extent block: another page added)
/// between adding a data folio and dirtying it.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct LastAdds {
    /// The thread that owns the slot (slots are shared modulo their number).
    tid: u32,
    _pad: u32,
    added: [Added; 2],
}

/// Per-thread slots, by thread id modulo their number: an array, so that a thread's
/// first add costs no allocation. Two live threads that share a slot take it in turn; a
/// dirty that no longer finds its add counts the pages as read misses.
const ADD_SLOTS: u32 = 8192;
#[map]
static LAST_ADD: Array<LastAdds> = Array::with_max_entries(ADD_SLOTS, 0);

/// The start time of the counted syscall this thread is in, or 0.
#[inline(always)]
fn syscall_start(tid: u32) -> u64 {
    INFLIGHT
        .get(tid & (limits::INFLIGHT_SLOTS - 1))
        .filter(|s| s.tid == tid)
        .map_or(0, |s| s.start_ns)
}

// mm/filemap.c: filemap_get_pages() -> trace_mm_filemap_get_pages(mapping, index, last_index - 1)
#[tracepoint]
pub fn pagecache_get(ctx: TracePointContext) -> i32 {
    let first: u64 = field(&ctx, global(&OFF_GETPAGES_INDEX));
    let last: u64 = field(&ctx, global(&OFF_GETPAGES_LAST));
    if last < first {
        return 0;
    }
    let mut pages = last - first + 1;
    let tid = bpf_get_current_pid_tgid() as u32;
    // Inside a counted syscall, its in-flight slot remembers what this call looked up
    // (filemap_get_pages() runs again for the rest of a range after waiting for
    // readahead): no map but the slot the syscall already holds.
    if let Some(slot) = INFLIGHT
        .get_ptr_mut(tid & (limits::INFLIGHT_SLOTS - 1))
        .filter(|s| unsafe { (**s).tid } == tid)
    {
        let ino: u64 = field(&ctx, global(&OFF_GETPAGES_INO));
        unsafe {
            let mut end = last;
            if (*slot).lookup_ino == ino && ino != 0 {
                let prev = (*slot).lookup_end;
                if first <= prev {
                    pages = last.saturating_sub(prev);
                }
                end = end.max(prev);
            }
            (*slot).lookup_ino = ino;
            (*slot).lookup_end = end;
        }
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
    add(|s| bump(&raw mut s.added, pages));
    let ino: u64 = field(&ctx, global(&OFF_ADD_INO));
    let index: u64 = field(&ctx, global(&OFF_ADD_INDEX));
    let tid = bpf_get_current_pid_tgid() as u32;
    let new = Added {
        syscall_start: syscall_start(tid),
        ino,
        index,
        pages,
    };
    if let Some(slot) = LAST_ADD.get_ptr_mut(tid & (ADD_SLOTS - 1)) {
        unsafe {
            if (*slot).tid == tid {
                (*slot).added[1] = (*slot).added[0];
            } else {
                (*slot).tid = tid;
                (*slot).added[1].pages = 0;
            }
            (*slot).added[0] = new;
        }
    }
    0
}

/// A folio of `pages` pages (`None`: its size is unknown, one page is counted unless it
/// is the folio this thread just added) was dirtied: count its pages, and, when this
/// thread added it in this same syscall, count them as added by a write.
#[inline(always)]
fn dirtied(ino: u64, index: u64, pages: Option<u64>) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let mut added = 0;
    if let Some(slot) = LAST_ADD
        .get_ptr_mut(tid & (ADD_SLOTS - 1))
        .filter(|s| unsafe { (**s).tid } == tid)
    {
        let start = syscall_start(tid);
        for i in 0..2 {
            let a = unsafe { &mut (*slot).added[i] };
            if a.pages != 0 && a.ino == ino && a.index == index && a.syscall_start == start {
                added = a.pages;
                a.pages = 0;
                break;
            }
        }
    }
    if added != 0 {
        add(|s| {
            bump(&raw mut s.write_added, added);
            bump(&raw mut s.dirtied, pages.unwrap_or(added));
        });
    } else {
        add(|s| bump(&raw mut s.dirtied, pages.unwrap_or(1)));
    }
}

// mm/filemap.c: filemap_fault() -> trace_mm_filemap_fault(mapping, index)
#[tracepoint]
pub fn pagecache_fault(_ctx: TracePointContext) -> i32 {
    add(|s| bump(&raw mut s.mmap_faults, 1));
    0
}

// mm/page-writeback.c: folio_account_dirtied() -> trace_writeback_dirty_folio(folio, mapping)
// (writeback_dirty_page(page, mapping) before 5.17): the record has the inode and the
// index, not the folio's size.
#[tracepoint]
pub fn pagecache_dirty(ctx: TracePointContext) -> i32 {
    let ino: u64 = field(&ctx, global(&OFF_DIRTY_INO));
    let index: u64 = field(&ctx, global(&OFF_DIRTY_INDEX));
    dirtied(ino, index, None);
    0
}

// include/trace/events/writeback.h: writeback_dirty_folio(struct folio *, struct
// address_space *) as a BTF tracepoint: the folio itself, so a large folio counts its
// pages (folio_nr_pages(): PG_head set, then the page count kept in the folio).
#[btf_tracepoint(function = "writeback_dirty_folio")]
pub fn pagecache_dirtb(ctx: BtfTracePointContext) -> i32 {
    let folio: *const u8 = ctx.arg(0);
    let mapping: *const u8 = ctx.arg(1);
    if folio.is_null() {
        return 0;
    }
    unsafe {
        let flags: u64 = load(folio, global(&OFF_FOLIO_FLAGS));
        let nr_off = global(&OFF_FOLIO_NR_PAGES);
        let pages = if nr_off != 0 && flags & (1 << (global(&FOLIO_HEAD_BIT) & 63)) != 0 {
            load::<u32>(folio, nr_off).max(1) as u64
        } else {
            1
        };
        let index: u64 = load(folio, global(&OFF_FOLIO_INDEX));
        let ino = if mapping.is_null() {
            0
        } else {
            let host: *const u8 = load(mapping, global(&OFF_MAPPING_HOST));
            if host.is_null() {
                0
            } else {
                load::<u64>(host, global(&OFF_INODE_INO))
            }
        };
        dirtied(ino, index, Some(pages));
    }
    0
}

/// A load through a BTF-typed pointer (a plain load the verifier checks against BTF).
#[inline(always)]
unsafe fn load<T: Copy>(base: *const u8, off: u64) -> T {
    unsafe { core::ptr::read(base.add(off as usize) as *const T) }
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
    add(|s| bump(&raw mut s.added, 1));
    0
}

#[kprobe]
pub fn pagecache_add_k(_ctx: ProbeContext) -> u32 {
    add(|s| bump(&raw mut s.added, 1));
    0
}
