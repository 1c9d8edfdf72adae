//! The standard `process_*` figures of copyscope itself, read from /proc/self.

/// The standard `process_*` figures of a process (what the Prometheus client libraries
/// export for themselves).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    pub start_time_seconds: f64,
}

/// The kernel's page size, in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

/// Ticks per second of the times in /proc/PID/stat.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 { n as f64 } else { 100.0 }
}

impl ProcessStats {
    /// This process's, from /proc/self and getrlimit; None when /proc cannot be read.
    pub fn of_self() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let btime = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_btime(&s))?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        let max_fds = (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0
            && limit.rlim_cur != libc::RLIM_INFINITY)
            .then_some(limit.rlim_cur);
        let mut p = parse_stat(&stat, clock_ticks(), page_size(), btime)?;
        // The directory's own descriptor, open while it was read, is not counted.
        p.open_fds = open_fds.saturating_sub(1);
        p.max_fds = max_fds;
        Some(p)
    }
}

/// The figures of /proc/PID/stat: CPU time (utime + stime), virtual and resident size,
/// start time (ticks after boot, plus the boot time `btime`).
pub(super) fn parse_stat(stat: &str, ticks: f64, page: u64, btime: u64) -> Option<ProcessStats> {
    // The comm, in parentheses, may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts with field 3 (state): field n is f[n - 3].
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let cpu = (field(14)? + field(15)?) as f64 / ticks;
    Some(ProcessStats {
        cpu_seconds: cpu,
        start_time_seconds: btime as f64 + field(22)? as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page,
        open_fds: 0,
        max_fds: None,
    })
}

/// The boot time (Unix seconds) from /proc/stat.
pub(super) fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}
