//! What the kernel says about pinned objects: which kind a pinned file is, and which
//! attached programs count into a pin's maps (so that no event is counted twice).

use std::{collections::BTreeSet, io, os::fd::AsRawFd as _, path::Path};

use aya::programs::{ProgramError, links::LinkError, loaded_links, loaded_programs};

/// What a file on bpffs pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Map,
    /// A program, with its id.
    Program(u32),
    /// A link, with its id.
    Link(u32),
}

/// The kind of a pinned object, from its file descriptor's fdinfo; None when the file is
/// not a BPF object (a directory, say) or cannot be opened.
pub fn pinned_kind(path: &Path) -> Option<Kind> {
    let fd = super::open_pinned(path).ok()?;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    kind_of_fdinfo(&info)
}

/// The kind named in a BPF object's fdinfo (`map_type:`, `prog_type:` with `prog_id:`,
/// or `link_type:` with `link_id:`).
fn kind_of_fdinfo(info: &str) -> Option<Kind> {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
    };
    if field("link_type").is_some() {
        return field("link_id")?.parse().ok().map(Kind::Link);
    }
    if field("prog_type").is_some() {
        return field("prog_id")?.parse().ok().map(Kind::Program);
    }
    field("map_type").map(|_| Kind::Map)
}

/// An attached link whose program uses a pin's maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counting {
    pub link: u32,
    pub program: u32,
    pub name: String,
}

/// `3 links (ids 12, 13, 14) of the programs process_exit, syscalls_enter`: at most
/// five ids, then how many more.
pub fn describe(links: &[Counting]) -> String {
    const SHOWN: usize = 5;
    let mut ids: Vec<String> = links
        .iter()
        .take(SHOWN)
        .map(|c| c.link.to_string())
        .collect();
    if links.len() > SHOWN {
        ids.push(format!("{} more", links.len() - SHOWN));
    }
    let names: BTreeSet<&str> = links.iter().map(|c| c.name.as_str()).collect();
    format!(
        "{} link{} (id{} {}) of the program{} {}",
        links.len(),
        if links.len() == 1 { "" } else { "s" },
        if links.len() == 1 { "" } else { "s" },
        ids.join(", "),
        if names.len() == 1 { "" } else { "s" },
        names.into_iter().collect::<Vec<_>>().join(", ")
    )
}

/// An error of a listing, as the kernel gave it.
fn errno_of_link(e: LinkError) -> io::Error {
    match e {
        LinkError::SyscallError(s) => s.io_error,
        e => io::Error::other(e),
    }
}

fn errno_of_program(e: ProgramError) -> io::Error {
    match e {
        ProgramError::SyscallError(s) => s.io_error,
        e => io::Error::other(e),
    }
}

/// A link or program that went away while being listed.
fn vanished(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOENT)
}

/// Which of the programs `ids` are still loaded. A program is freed only after its last
/// link has detached it, so once none is loaded, none runs: the link ids alone do not say
/// it, because the kernel frees a link's id before it detaches the link's program (which
/// can wait, for tens of milliseconds, on another attach or detach at the same hook).
pub fn still_loaded(ids: &BTreeSet<u32>) -> io::Result<BTreeSet<u32>> {
    let mut alive = BTreeSet::new();
    if ids.is_empty() {
        return Ok(alive);
    }
    for p in loaded_programs() {
        match p.map_err(errno_of_program) {
            Ok(p) if ids.contains(&p.id()) => {
                alive.insert(p.id());
            }
            Ok(_) => {}
            Err(e) if vanished(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(alive)
}

/// Every attached link whose program uses one of `maps` (map ids), except the links in
/// `ours`. An error when the kernel cannot list links (before 5.8: EINVAL) or copyscope
/// may not (listing needs CAP_SYS_ADMIN: EPERM).
pub fn counting_into(maps: &BTreeSet<u32>, ours: &BTreeSet<u32>) -> io::Result<Vec<Counting>> {
    let mut links = Vec::new();
    for l in loaded_links() {
        match l.map_err(errno_of_link) {
            Ok(l) => {
                if !ours.contains(&l.id()) {
                    links.push((l.id(), l.program_id()));
                }
            }
            Err(e) if vanished(&e) => {}
            Err(e) => return Err(e),
        }
    }
    if links.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: BTreeSet<u32> = links.iter().map(|(_, p)| *p).collect();
    let mut using = std::collections::BTreeMap::new();
    for p in loaded_programs() {
        let p = match p.map_err(errno_of_program) {
            Ok(p) => p,
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(e),
        };
        if !wanted.contains(&p.id()) {
            continue;
        }
        let ids = match p.map_ids().map_err(errno_of_program) {
            Ok(ids) => ids.unwrap_or_default(),
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(e),
        };
        if ids.iter().any(|id| maps.contains(id)) {
            let name = p.name_as_str().unwrap_or("?").to_string();
            using.insert(p.id(), name);
        }
    }
    Ok(links
        .into_iter()
        .filter_map(|(link, program)| {
            let name = using.get(&program)?.clone();
            Some(Counting {
                link,
                program,
                name,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_names_the_kind_of_a_pinned_object() {
        let map = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1\nmap_type:\t2\nkey_size:\t4\n\
                   value_size:\t48\nmax_entries:\t1\nmap_flags:\t0x0\nmap_id:\t7\n";
        let prog = "pos:\t0\nflags:\t02000002\nprog_type:\t5\nprog_jited:\t1\nprog_tag:\tab\n\
                    memlock:\t4096\nprog_id:\t40\n";
        let link = "pos:\t0\nflags:\t02000000\nlink_type:\tperf\nlink_id:\t12\nprog_tag:\tab\n\
                    prog_id:\t40\n";
        assert_eq!(kind_of_fdinfo(map), Some(Kind::Map));
        assert_eq!(kind_of_fdinfo(prog), Some(Kind::Program(40)));
        assert_eq!(kind_of_fdinfo(link), Some(Kind::Link(12)));
        assert_eq!(kind_of_fdinfo("pos:\t0\nflags:\t0\n"), None);
    }

    #[test]
    fn stray_links_are_described_by_count_ids_and_programs() {
        let c = |link, name: &str| Counting {
            link,
            program: 40,
            name: name.into(),
        };
        assert_eq!(
            describe(&[c(12, "syscalls_enter")]),
            "1 link (id 12) of the program syscalls_enter"
        );
        let many: Vec<_> = (20..27)
            .map(|i| {
                c(
                    i,
                    if i < 22 {
                        "process_exit"
                    } else {
                        "sched_switch"
                    },
                )
            })
            .collect();
        assert_eq!(
            describe(&many),
            "7 links (ids 20, 21, 22, 23, 24, 2 more) of the programs process_exit, \
             sched_switch"
        );
    }
}
