//! The rules for large I/O through user memory with no relay to pair it with:
//! MSG_ZEROCOPY sends and O_DIRECT reads.

use super::{
    Advice, Scan, directio_threshold,
    flows::{PAGE, human, human_bytes, human_size},
};

/// The bytes per call above which a send is worth MSG_ZEROCOPY: the kernel's
/// Documentation/networking/msg_zerocopy.rst puts the break-even around 10 KB (pinning
/// pages and reading the completion cost more than a copy below it).
pub const MSG_ZEROCOPY_MIN_SEND: f64 = 10.0 * 1024.0;

/// Large sends from user memory to sockets that no rule above claimed (their data was
/// not read from a file or a socket: computed, or from anonymous memory): MSG_ZEROCOPY
/// or io_uring SEND_ZC. Sends already made zero-copy are not socket writes.
pub(super) fn msg_zerocopy(s: &mut Scan) -> Option<Advice> {
    let f = s.f;
    let per_call = f.socket_write as f64 / f.socket_write_calls.max(1) as f64;
    let b = s.socket_write;
    if !(b > 0.0 && per_call > MSG_ZEROCOPY_MIN_SEND && s.rate(b) >= s.th.min_bytes_per_second) {
        return None;
    }
    s.socket_write = 0.0;
    Some(Advice {
        recommendation: "send large buffers to TCP and UDP sockets with MSG_ZEROCOPY (SO_ZEROCOPY, completions read from the error queue) or io_uring SEND_ZC instead of copying them into the socket".into(),
        evidence: s.ev(
            format!(
                "writes {} to sockets from user memory, {} per call on average, over {}",
                human(s.rate(b)),
                human_bytes(per_call),
                s.span,
            ),
            &[
                ("socket_write_bytes_per_second", s.rate(f.socket_write as f64)),
                ("socket_write_bytes_per_call", per_call),
                ("copied_bytes_avoidable_per_second", s.rate(b)),
            ],
        ),
        // The copy into the socket goes; the calls stay (and the completions add a few).
        saved: s.copy_s(b) / s.window,
    })
}

/// Large files streamed through the page cache with little reuse: O_DIRECT + AIO.
pub(super) fn direct_io(s: &mut Scan) -> Option<Advice> {
    let pc = &s.p.pagecache;
    let missed = pc.misses as f64 * PAGE;
    let ratio = pc.hit_ratio?;
    if !(ratio <= s.th.directio_max_hit_ratio
        && s.f.file_read > 0
        && s.rate(missed) >= s.th.min_bytes_per_second)
    {
        return None;
    }
    let size = directio_threshold(s.open_file_sizes);
    // Direct I/O lands in the user buffer: the page-cache -> user copy of every missed
    // page goes (and the cache is not churned).
    let avoided = missed.min(s.f.file_read as f64);
    Some(Advice {
        recommendation: format!(
            "read files of {} and more with O_DIRECT and asynchronous I/O (nginx `directio {}; aio on;`): they stream through the page cache with little reuse",
            human_size(size),
            human_size(size)
        ),
        evidence: s.ev(
            format!(
                "page-cache hit ratio {:.0}% while missing {} over {}{}",
                100.0 * ratio,
                human(s.rate(missed)),
                s.span,
                if s.open_file_sizes.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; largest open file {}",
                        human_size(*s.open_file_sizes.iter().max().unwrap())
                    )
                }
            ),
            &[
                ("page_cache_hit_ratio", ratio),
                ("page_cache_miss_bytes_per_second", s.rate(missed)),
                ("file_read_bytes_per_second", s.rate(s.f.file_read as f64)),
                ("suggested_directio_bytes", size as f64),
            ],
        ),
        saved: s.copy_s(avoided) / s.window,
    })
}
