//! The kernel's view of a process's BPF objects: /proc/PID/fdinfo, and what the maps
//! would hold with more CPUs.

use super::*;

/// A program's run-time statistics from its fdinfo (`prog_id:`, `run_cnt:`,
/// `run_time_ns:`); None for anything else, links (which name a `prog_id:` too) included.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct ProgStat {
    pub(super) id: u32,
    pub(super) runs: u64,
    pub(super) ns: u64,
}

/// A map's kernel memory from its fdinfo (`map_id:`, `map_type:`, `max_entries:`,
/// `memlock:`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct MapStat {
    pub(super) id: u32,
    pub(super) map_type: u32,
    pub(super) max_entries: u64,
    pub(super) memlock: u64,
}

/// The value of `key:` in an fdinfo text, parsed.
pub(super) fn fdinfo_field<T: std::str::FromStr>(text: &str, key: &str) -> Option<T> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().parse().ok())?
    })
}

pub(super) fn parse_prog_fdinfo(text: &str) -> Option<ProgStat> {
    Some(ProgStat {
        id: fdinfo_field(text, "prog_id")?,
        runs: fdinfo_field(text, "run_cnt")?,
        ns: fdinfo_field(text, "run_time_ns")?,
    })
}

pub(super) fn parse_map_fdinfo(text: &str) -> Option<MapStat> {
    Some(MapStat {
        id: fdinfo_field(text, "map_id")?,
        map_type: fdinfo_field(text, "map_type")?,
        max_entries: fdinfo_field(text, "max_entries")?,
        memlock: fdinfo_field(text, "memlock")?,
    })
}

/// The fdinfo text of every fd of `pid` (fds that close meanwhile are passed over).
pub(super) fn fdinfos(pid: u32) -> Result<Vec<String>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let entries = std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))?;
    Ok(entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect())
}

/// The programs `pid` holds, by id.
pub(super) fn prog_stats(pid: u32) -> Result<BTreeMap<u32, ProgStat>> {
    Ok(fdinfos(pid)?
        .iter()
        .filter_map(|t| parse_prog_fdinfo(t))
        .map(|p| (p.id, p))
        .collect())
}

/// The maps `pid` holds, by id (a map open on several fds counted once).
pub(super) fn map_stats(pid: u32) -> Result<BTreeMap<u32, MapStat>> {
    Ok(fdinfos(pid)?
        .iter()
        .filter_map(|t| parse_map_fdinfo(t))
        .map(|m| (m.id, m))
        .collect())
}

/// The `name` bpftool gives program or map `id` (`kind`: "prog" or "map").
pub(super) fn bpftool_name(kind: &str, id: u32) -> Result<String> {
    let out = output(Command::new("bpftool").args([kind, "show", "id", &id.to_string(), "-j"]))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v["name"].as_str().unwrap_or("").to_string())
}

/// The tracing programs loaded on the machine (`bpftool prog show`), by id: "name (type)".
pub(super) fn tracing_programs() -> Result<BTreeMap<u32, String>> {
    let out = output(Command::new("bpftool").args(["prog", "show", "-j"]))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let kind = p["type"].as_str()?;
            let tracing = [
                "tracepoint",
                "raw_tracepoint",
                "raw_tracepoint_writable",
                "tracing",
                "kprobe",
                "perf_event",
            ]
            .contains(&kind);
            let name = p["name"].as_str().unwrap_or("");
            tracing.then(|| Some((p["id"].as_u64()? as u32, format!("{name} ({kind})"))))?
        })
        .collect())
}

/// The number of CPUs in a kernel CPU list such as "0-1,4-7".
pub(super) fn cpu_count(list: &str) -> Result<usize> {
    let mut n = 0;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (
            a.trim()
                .parse()
                .with_context(|| format!("CPU list {list:?}"))?,
            b.trim()
                .parse()
                .with_context(|| format!("CPU list {list:?}"))?,
        );
        if b < a {
            bail!("CPU list {list:?}: {part} runs backwards");
        }
        n += b - a + 1;
    }
    if n == 0 {
        bail!("empty CPU list {list:?}");
    }
    Ok(n)
}

/// Whether a map type holds a value (or an entry) per possible CPU.
pub(super) fn per_cpu_map(map_type: u32) -> bool {
    // PERF_EVENT_ARRAY (one entry per CPU), PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH,
    // PERCPU_CGROUP_STORAGE.
    matches!(map_type, 4 | 5 | 6 | 10 | 21)
}

/// A map's memory on a machine with `target` possible CPUs, from `memlock` on this one
/// with `possible`: per-CPU maps scaled whole (an upper bound: their shared part is
/// scaled too), the others as they are.
pub(super) fn projected(memlock: u64, map_type: u32, possible: usize, target: usize) -> f64 {
    if per_cpu_map(map_type) {
        memlock as f64 * target as f64 / possible as f64
    } else {
        memlock as f64
    }
}

pub(super) fn map_type_name(t: u32) -> String {
    let name = match t {
        1 => "hash",
        2 => "array",
        3 => "prog_array",
        4 => "perf_event_array",
        5 => "percpu_hash",
        6 => "percpu_array",
        7 => "stack_trace",
        9 => "lru_hash",
        10 => "lru_percpu_hash",
        11 => "lpm_trie",
        12 => "array_of_maps",
        13 => "hash_of_maps",
        27 => "ringbuf",
        30 => "bloom_filter",
        _ => return format!("type {t}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROG: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\nprog_type:\t5\n\
        prog_jited:\t1\nprog_tag:\t70ec59ab8792a92a\nmemlock:\t4096\nprog_id:\t26540\n\
        run_time_ns:\t25557\nrun_cnt:\t66\nrecursion_misses:\t0\nverified_insns:\t21\n";
    const LINK: &str = "pos:\t0\nflags:\t02000000\nmnt_id:\t16\nino:\t1057\nlink_type:\traw_tracepoint\n\
        link_id:\t812\nprog_tag:\t70ec59ab8792a92a\nprog_id:\t26540\ntp_name:\tsys_enter\n";
    const MAP: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\nmap_type:\t5\n\
        key_size:\t8\nvalue_size:\t64\nmax_entries:\t32768\nmap_flags:\t0x0\nmap_extra:\t0x0\n\
        memlock:\t4719552\nmap_id:\t29062\nfrozen:\t0\n";

    #[test]
    fn fdinfo_of_programs_maps_and_links() {
        assert_eq!(
            parse_prog_fdinfo(PROG),
            Some(ProgStat {
                id: 26540,
                runs: 66,
                ns: 25557
            })
        );
        // A link names its program but has no counters; a map is no program.
        assert_eq!(parse_prog_fdinfo(LINK), None);
        assert_eq!(parse_prog_fdinfo(MAP), None);
        assert_eq!(
            parse_map_fdinfo(MAP),
            Some(MapStat {
                id: 29062,
                map_type: 5,
                max_entries: 32768,
                memlock: 4_719_552
            })
        );
        assert_eq!(parse_map_fdinfo(PROG), None);
        assert_eq!(parse_map_fdinfo(LINK), None);
        assert_eq!(
            parse_prog_fdinfo("prog_id:\tx\nrun_cnt:\t1\nrun_time_ns:\t1\n"),
            None
        );
        assert_eq!(parse_prog_fdinfo(""), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_count("0-1\n").unwrap(), 2);
        assert_eq!(cpu_count("0").unwrap(), 1);
        assert_eq!(cpu_count("0-1,4-7").unwrap(), 6);
        assert_eq!(cpu_count("0,2,4-5").unwrap(), 4);
        assert_eq!(cpu_count("0-191").unwrap(), 192);
        for bad in ["", "\n", "a", "3-1", "0-", "1,,x"] {
            assert!(cpu_count(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn projection_to_more_cpus() {
        // Per-CPU maps grow with the CPUs: 2 possible here, 192 there.
        for per_cpu in [4, 5, 6, 10] {
            assert_eq!(projected(1000, per_cpu, 2, 192), 96_000.0);
        }
        for shared in [1, 2, 9, 27] {
            assert_eq!(projected(1000, shared, 2, 192), 1000.0);
        }
        assert_eq!(projected(1000, 6, 192, 192), 1000.0);
    }
}
