//! The rules that find zero-copy already in use: they save nothing and are always shown.

use super::{Advice, Scan, flows::human};

/// Already zero-copy.
pub(super) fn zero_copy(s: &mut Scan) -> Option<Advice> {
    let p = s.p;
    let zero = p.zero_copy_bytes as f64;
    let copied = (p.cpu_copy_bytes.to_user + p.cpu_copy_bytes.from_user) as f64;
    if !(zero > 0.0
        && s.rate(zero) >= s.th.min_bytes_per_second
        && zero / (zero + copied) >= s.th.zero_copy_share)
    {
        return None;
    }
    Some(Advice {
        recommendation: "already zero-copy: nothing to change".into(),
        evidence: s.ev(
            format!(
                "moves {} zero-copy ({:.0}% of the bytes it moves) over {}",
                human(s.rate(zero)),
                100.0 * zero / (zero + copied),
                s.span,
            ),
            &[
                ("zero_copy_bytes_per_second", s.rate(zero)),
                ("zero_copy_share", zero / (zero + copied)),
            ],
        ),
        saved: 0.0,
    })
}

/// The asynchronous reads: io_uring's and Linux AIO's.
const ASYNC_READS: &[&str] = &["io_uring_read", "aio_read"];

/// Already reading files with O_DIRECT and asynchronous I/O (io_uring or Linux AIO): what
/// the `direct_io` rule recommends.
pub(super) fn direct_io_async(s: &mut Scan) -> Option<Advice> {
    let direct: u64 =
        s.p.syscalls
            .iter()
            .filter(|r| &*r.fd_kind == "file_direct" && ASYNC_READS.contains(&&*r.syscall))
            .map(|r| r.bytes)
            .sum();
    let direct = direct as f64;
    if !(direct > 0.0 && s.rate(direct) >= s.th.min_bytes_per_second) {
        return None;
    }
    Some(Advice {
        recommendation: "already O_DIRECT with asynchronous I/O: nothing to change".into(),
        evidence: s.ev(
            format!(
                "reads {} from files with O_DIRECT through io_uring or AIO ({} direct I/O in all) over {}",
                human(s.rate(direct)),
                human(s.rate(s.p.direct_io_bytes as f64)),
                s.span,
            ),
            &[
                ("direct_async_read_bytes_per_second", s.rate(direct)),
                ("direct_io_bytes_per_second", s.rate(s.p.direct_io_bytes as f64)),
            ],
        ),
        saved: 0.0,
    })
}
