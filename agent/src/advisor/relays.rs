//! The rules for data relayed through user memory between files and sockets: sendfile,
//! splice and copy_file_range.

use super::{
    Advice, Scan,
    flows::{PAGE, human},
};

/// file -> socket through read() + write()/send(): sendfile.
pub(super) fn sendfile(s: &mut Scan) -> Option<Advice> {
    let b = s.matched(s.file_read, s.socket_write)?;
    let f = s.f;
    // Each read() goes; each write() becomes a sendfile(): two copies and the reads'
    // mode switches avoided.
    let reads = f.file_read_calls as f64 * (b / f.file_read as f64);
    let saved = (s.copy_s(2.0 * b) + s.calls_s(reads)) / s.window;
    s.file_read -= b;
    s.socket_write -= b;
    Some(Advice {
        recommendation: "serve files to sockets with sendfile() (nginx `sendfile on;`, Java FileChannel.transferTo, Go io.Copy from *os.File to *net.TCPConn) instead of read() + write()".into(),
        evidence: s.ev(
            format!(
                "reads {} from files and writes {} to sockets through user memory ({:.0}% alike) over {}; {:.0} read() calls/s",
                human(s.rate(f.file_read as f64)),
                human(s.rate(f.socket_write as f64)),
                100.0 * b / f.file_read.max(f.socket_write) as f64,
                s.span,
                reads / s.window,
            ),
            &[
                ("file_read_bytes_per_second", s.rate(f.file_read as f64)),
                ("socket_write_bytes_per_second", s.rate(f.socket_write as f64)),
                ("copied_bytes_avoidable_per_second", s.rate(2.0 * b)),
                ("syscalls_avoidable_per_second", reads / s.window),
            ],
        ),
        saved,
    })
}

pub(super) fn splice_socket_to_socket(s: &mut Scan) -> Option<Advice> {
    splice(s, true)
}

pub(super) fn splice_socket_to_file(s: &mut Scan) -> Option<Advice> {
    splice(s, false)
}

/// socket -> socket and socket -> file relays through recv() + write()/send(): splice.
fn splice(s: &mut Scan, to_socket: bool) -> Option<Advice> {
    let sink = if to_socket {
        s.socket_write
    } else {
        s.file_write
    };
    let b = s.matched(s.socket_read, sink)?;
    let f = s.f;
    // splice() needs a call per hop too: copies avoided, not mode switches.
    let saved = s.copy_s(2.0 * b) / s.window;
    let (what, rec) = if to_socket {
        (
            "sockets",
            "relay socket to socket with splice() through a pipe (HAProxy `option splice-auto`, Linux `splice(2)`) instead of recv() + send()",
        )
    } else {
        (
            "files",
            "write received data to files with splice() through a pipe instead of recv() + write()",
        )
    };
    let written = if to_socket {
        f.socket_write
    } else {
        f.file_write
    } as f64;
    s.socket_read -= b;
    if to_socket {
        s.socket_write -= b;
    } else {
        s.file_write -= b;
    }
    Some(Advice {
        recommendation: rec.into(),
        evidence: s.ev(
            format!(
                "receives {} from sockets and writes {} to {what} through user memory over {}",
                human(s.rate(f.socket_read as f64)),
                human(s.rate(written)),
                s.span,
            ),
            &[
                ("socket_read_bytes_per_second", s.rate(f.socket_read as f64)),
                (
                    if to_socket {
                        "socket_write_bytes_per_second"
                    } else {
                        "file_write_bytes_per_second"
                    },
                    s.rate(written),
                ),
                ("copied_bytes_avoidable_per_second", s.rate(2.0 * b)),
            ],
        ),
        saved,
    })
}

/// file -> file through read() + write(): copy_file_range.
pub(super) fn copy_file_range(s: &mut Scan) -> Option<Advice> {
    let b = s.matched(s.file_read, s.file_write)?;
    let f = s.f;
    // One copy_file_range() replaces a read() + write() pair, and the filesystem may
    // share extents (reflink) or copy in the kernel.
    let reads = f.file_read_calls as f64 * (b / f.file_read as f64);
    s.file_read -= b;
    Some(Advice {
        recommendation: "copy files with copy_file_range() (or FICLONE on btrfs/XFS) instead of read() + write()".into(),
        evidence: s.ev(
            format!(
                "reads {} from files and writes {} to files through user memory over {}",
                human(s.rate(f.file_read as f64)),
                human(s.rate(f.file_write as f64)),
                s.span,
            ),
            &[
                ("file_read_bytes_per_second", s.rate(f.file_read as f64)),
                ("file_write_bytes_per_second", s.rate(f.file_write as f64)),
                ("copied_bytes_avoidable_per_second", s.rate(2.0 * b)),
                ("syscalls_avoidable_per_second", reads / s.window),
            ],
        ),
        saved: (s.copy_s(2.0 * b) + s.calls_s(reads)) / s.window,
    })
}

/// mmap() + write() to a socket: the write copies the mapped pages once; sendfile not.
/// It claims the socket writes it covers.
pub(super) fn mmap_sendfile(s: &mut Scan) -> Option<Advice> {
    let mapped = s.p.pagecache.mmap_faults as f64 * PAGE;
    let socket_write = s.socket_write;
    if !(mapped > 0.0
        && socket_write > 0.0
        && s.rate(socket_write) >= s.th.min_bytes_per_second
        && s.rate(mapped) >= s.th.min_bytes_per_second * s.th.min_ratio)
    {
        return None;
    }
    s.socket_write = 0.0;
    Some(Advice {
        recommendation: "send mapped files with sendfile() instead of mmap() + write(): the write still copies every page from user memory".into(),
        evidence: s.ev(
            format!(
                "faults in {} of mapped file pages and writes {} to sockets over {}",
                human(s.rate(mapped)),
                human(s.rate(s.f.socket_write as f64)),
                s.span,
            ),
            &[
                ("mmap_fault_bytes_per_second", s.rate(mapped)),
                ("socket_write_bytes_per_second", s.rate(s.f.socket_write as f64)),
                ("copied_bytes_avoidable_per_second", s.rate(socket_write)),
            ],
        ),
        saved: s.copy_s(socket_write) / s.window,
    })
}
