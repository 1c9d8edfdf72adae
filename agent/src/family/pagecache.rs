//! The pagecache family: pages looked up by buffered reads, pages added (read misses, and
//! pages added by writes told apart), mmap faults and dirtied pages, per process (kernel
//! side: `ebpf/programs/src/pagecache.rs`).

use copyscope_common::{globals as g, programs};

use super::{
    Attach, Family, Method, Need, Offset, ProbeSpec, Source, Target, Unit, func, record, tp,
};

/// Folio-era names first, then the pre-5.16 ones.
const ACCESSED: &[&str] = &["folio_mark_accessed", "mark_page_accessed"];
const ADDED: &[&str] = &["filemap_add_folio", "add_to_page_cache_lru"];

pub static UNIT: Unit = Unit {
    family: Family::Pagecache,
    probes: PROBES,
    offsets: OFFSETS,
};

const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        family: Family::Pagecache,
        hook: "lookups",
        methods: &[
            tp(
                programs::PAGECACHE_LOOKUP_TP,
                "filemap",
                "mm_filemap_get_pages",
            ),
            func(Method::FEntry, programs::PAGECACHE_LOOKUP_FENTRY, ACCESSED),
            func(Method::KProbe, programs::PAGECACHE_LOOKUP_KPROBE, ACCESSED),
        ],
        required: false,
        syscall_fallback: false,
        needs: &[],
    },
    ProbeSpec {
        family: Family::Pagecache,
        hook: "misses",
        methods: &[
            tp(
                programs::PAGECACHE_ADD_TP,
                "filemap",
                "mm_filemap_add_to_page_cache",
            ),
            func(Method::FEntry, programs::PAGECACHE_ADD_FENTRY, ADDED),
            func(Method::KProbe, programs::PAGECACHE_ADD_KPROBE, ADDED),
        ],
        required: false,
        syscall_fallback: false,
        needs: &[],
    },
    ProbeSpec {
        family: Family::Pagecache,
        hook: "mmap_faults",
        methods: &[tp(
            programs::PAGECACHE_FAULT_TP,
            "filemap",
            "mm_filemap_fault",
        )],
        required: false,
        syscall_fallback: false,
        needs: &[],
    },
    ProbeSpec {
        family: Family::Pagecache,
        hook: "dirtied",
        methods: &[
            Attach {
                method: Method::TpBtf,
                program: programs::PAGECACHE_DIRTY_BTF,
                target: Target::Raw("writeback_dirty_folio"),
            },
            tp(
                programs::PAGECACHE_DIRTY_TP,
                "writeback",
                "writeback_dirty_folio",
            ),
            tp(
                programs::PAGECACHE_DIRTY_TP,
                "writeback",
                "writeback_dirty_page",
            ),
        ],
        required: false,
        syscall_fallback: false,
        needs: &[],
    },
];

const fn folio(
    global: &'static str,
    member: &'static [(&'static str, &'static str)],
    group: &'static str,
) -> Offset {
    Offset {
        global,
        from: Source::Member(member, 0),
        need: Need::Group(group),
    }
}

const GET_PAGES: &[(&str, &str)] = &[("filemap", "mm_filemap_get_pages")];
const ADD: &[(&str, &str)] = &[("filemap", "mm_filemap_add_to_page_cache")];
/// The dirty tracepoint's record, whichever of the two this kernel has.
const DIRTY: &[(&str, &str)] = &[
    ("writeback", "writeback_dirty_folio"),
    ("writeback", "writeback_dirty_page"),
];

const OFFSETS: &[Offset] = &[
    // What the BTF-typed dirty program reads of a folio. Kernels without folios (before
    // 5.16) lack that program's tracepoint too, so nothing here is required.
    folio(g::OFF_FOLIO_FLAGS, &[("folio", "flags")], "folio"),
    folio(g::OFF_FOLIO_INDEX, &[("folio", "index")], "folio"),
    folio(g::OFF_MAPPING_HOST, &[("address_space", "host")], "folio"),
    folio(g::OFF_INODE_INO, &[("inode", "i_ino")], "folio"),
    // folio_nr_pages(): `_nr_pages` from 6.9, `_folio_nr_pages` before (64-bit). Without
    // it (or the head-page flag), a folio counts one page.
    folio(
        g::OFF_FOLIO_NR_PAGES,
        &[("folio", "_nr_pages"), ("folio", "_folio_nr_pages")],
        "folio/nr",
    ),
    Offset {
        global: g::FOLIO_HEAD_BIT,
        from: Source::EnumBit("pageflags", "PG_head"),
        need: Need::Group("folio/nr"),
    },
    record(g::OFF_GETPAGES_INDEX, GET_PAGES, "index"),
    record(g::OFF_GETPAGES_LAST, GET_PAGES, "last_index"),
    record(g::OFF_GETPAGES_INO, GET_PAGES, "i_ino"),
    // Large folios (6.x) carry their order; before, every add is one page.
    Offset {
        global: g::OFF_ADD_ORDER,
        from: Source::Field(ADD, "order"),
        need: Need::Optional,
    },
    record(g::OFF_ADD_INO, ADD, "i_ino"),
    record(g::OFF_ADD_INDEX, ADD, "index"),
    record(g::OFF_DIRTY_INO, DIRTY, "ino"),
    record(g::OFF_DIRTY_INDEX, DIRTY, "index"),
];
