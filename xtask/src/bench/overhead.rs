//! `cargo xtask bench overhead`: the configurations, the workloads and one measurement
//! of each; the report is in `report.rs`.

use super::fdinfo::*;
use super::*;

mod report;

/// The family of a copyscope program: its name up to the first `_`.
pub(super) fn family(program: &str) -> &str {
    program.split('_').next().unwrap_or(program)
}

pub(super) struct Settings {
    pub(super) bin_dir: PathBuf,
    pub(super) calls: u64,
    pub(super) switch_rounds: u64,
    pub(super) rounds: usize,
    pub(super) copyscope_args: Vec<String>,
}

/// What runs beside the workload.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Config {
    Baseline,
    /// An empty program on sys_enter_pread64: the syscall tracepoint slow path for every
    /// syscall, and one program run per pread.
    Floor,
    Copyscope,
    /// bpftrace counting what copyscope counts for pread.
    Bpftrace,
    /// An empty program on sched_switch.
    SwitchFloor,
}

pub(super) const CONFIGS: [Config; 5] = [
    Config::Baseline,
    Config::Floor,
    Config::Copyscope,
    Config::Bpftrace,
    Config::SwitchFloor,
];

pub(super) const FLOOR_TP: &str = "tracepoint:syscalls:sys_enter_pread64 { }";
pub(super) const SWITCH_FLOOR_TP: &str = "tracepoint:sched:sched_switch { }";
/// What copyscope does for pread, said in bpftrace: time, calls and bytes per pid.
pub(super) const BPFTRACE_COUNT: &str = "tracepoint:syscalls:sys_enter_pread64 { @start[tid] = nsecs; } \
tracepoint:syscalls:sys_exit_pread64 /@start[tid]/ { @calls[pid] = count(); \
@bytes[pid] = sum(args->ret); @ns[pid] = sum(nsecs - @start[tid]); delete(@start[tid]); }";

impl Config {
    pub(super) fn name(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Floor => "floor",
            Config::Copyscope => "copyscope",
            Config::Bpftrace => "bpftrace count",
            Config::SwitchFloor => "empty sched_switch",
        }
    }

    pub(super) fn index(self) -> usize {
        CONFIGS.iter().position(|&c| c == self).unwrap_or(0)
    }
}

/// The timed workloads (copyscope-workload).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Workload {
    Pread1,
    Pread4k,
    Getppid,
    Switch,
}

pub(super) const WORKLOADS: [Workload; 4] = [
    Workload::Pread1,
    Workload::Pread4k,
    Workload::Getppid,
    Workload::Switch,
];

impl Workload {
    pub(super) fn name(self) -> &'static str {
        match self {
            Workload::Pread1 => "pread 1 B",
            Workload::Pread4k => "pread 4 KiB",
            Workload::Getppid => "getppid",
            Workload::Switch => "ping-pong",
        }
    }

    /// What one unit of the workload is.
    pub(super) fn unit(self) -> &'static str {
        match self {
            Workload::Switch => "round",
            _ => "call",
        }
    }

    pub(super) fn index(self) -> usize {
        WORKLOADS.iter().position(|&w| w == self).unwrap_or(0)
    }

    pub(super) fn args(self, s: &Settings, file: &Path, cpu: usize) -> Vec<String> {
        let file = file.to_string_lossy().into_owned();
        let calls = s.calls.to_string();
        match self {
            Workload::Pread1 => vec!["pread-timed".into(), file, calls, "1".into()],
            Workload::Pread4k => vec!["pread-timed".into(), file, calls, "4096".into()],
            Workload::Getppid => vec!["getppid-timed".into(), calls],
            // Both threads on one CPU: each round switches from one to the other and back.
            Workload::Switch => vec![
                "--cpu".into(),
                cpu.to_string(),
                "switch-timed".into(),
                s.switch_rounds.to_string(),
            ],
        }
    }
}

/// One timed workload under one configuration.
#[derive(Clone, Debug, Default)]
pub(super) struct Sample {
    /// Wall-clock ns per call (per round).
    pub(super) ns: f64,
    /// Calls (rounds) timed.
    pub(super) n: u64,
    /// The tracer's programs, by name: (runs, run time in ns) during the timed loop.
    pub(super) progs: BTreeMap<String, (u64, u64)>,
}

impl Sample {
    pub(super) fn runs_per(&self, prog: &str) -> f64 {
        self.progs.get(prog).map_or(0.0, |&(r, _)| r as f64) / self.n as f64
    }

    /// NaN when the program did not run.
    pub(super) fn ns_per_run(&self, prog: &str) -> f64 {
        match self.progs.get(prog) {
            Some(&(r, ns)) if r > 0 => ns as f64 / r as f64,
            _ => f64::NAN,
        }
    }

    pub(super) fn ns_per(&self, prog: &str) -> f64 {
        self.progs.get(prog).map_or(0.0, |&(_, ns)| ns as f64) / self.n as f64
    }

    /// All programs for which `keep` holds: (runs, ns) per call (per round).
    pub(super) fn sum_per(&self, keep: impl Fn(&str) -> bool) -> (f64, f64) {
        let (r, ns) = self
            .progs
            .iter()
            .filter(|(p, _)| keep(p))
            .fold((0u64, 0u64), |(r, ns), (_, &(pr, pns))| (r + pr, ns + pns));
        (r as f64 / self.n as f64, ns as f64 / self.n as f64)
    }
}

/// A tracer running: its process and its programs' names by id.
pub(super) struct Tracer {
    pub(super) proc: Proc,
    pub(super) names: BTreeMap<u32, String>,
}

impl Tracer {
    /// Its programs' counters now, by name.
    pub(super) fn read(&self) -> Result<BTreeMap<String, ProgStat>> {
        Ok(prog_stats(self.proc.pid())?
            .into_values()
            .map(|p| {
                let name = self
                    .names
                    .get(&p.id)
                    .cloned()
                    .unwrap_or_else(|| format!("prog {}", p.id));
                (name, p)
            })
            .collect())
    }
}

pub(super) const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// kernel.bpf_stats_enabled=1 while it lives; the old value back when dropped.
pub(super) struct BpfStatsOn {
    pub(super) old: String,
}

impl BpfStatsOn {
    pub(super) fn new() -> Result<BpfStatsOn> {
        let old = std::fs::read_to_string(BPF_STATS)
            .with_context(|| format!("reading {BPF_STATS}"))?
            .trim()
            .to_string();
        std::fs::write(BPF_STATS, "1").with_context(|| format!("writing 1 to {BPF_STATS}"))?;
        Ok(BpfStatsOn { old })
    }
}

impl Drop for BpfStatsOn {
    fn drop(&mut self) {
        if self.old != "1"
            && let Err(e) = std::fs::write(BPF_STATS, &self.old)
        {
            eprintln!("xtask: restoring {BPF_STATS} to {}: {e}", self.old);
        }
    }
}

/// Start the tracer of `config` and wait until its programs run: None for the baseline.
pub(super) fn start_tracer(config: Config, s: &Settings, file: &Path) -> Result<Option<Tracer>> {
    let script = match config {
        Config::Baseline => return Ok(None),
        Config::Copyscope => None,
        Config::Floor => Some(FLOOR_TP),
        Config::Bpftrace => Some(BPFTRACE_COUNT),
        Config::SwitchFloor => Some(SWITCH_FLOOR_TP),
    };
    let proc = match script {
        None => start_copyscope_run(&s.bin_dir, 5.0, &s.copyscope_args)?.0,
        Some(script) => {
            let mut p = Proc::spawn(
                Command::new("bpftrace")
                    .args(["-B", "line", "-e", script])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null()),
                libc::SIGINT,
            )?;
            let lines = lines_of(p.child.stdout.take().context("no stdout")?);
            wait_for_line(&lines, "bpftrace", Duration::from_secs(60), |l| {
                l.starts_with("Attaching").then_some(())
            })?;
            p
        }
    };
    // Attached once its programs run: for bpftrace every one (it attaches them one by one
    // after "Attaching"), for copyscope (attached before it serves) any. A pread and a
    // sleep set them off.
    let every = script.is_some();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 1];
    let f = std::fs::File::open(file)?;
    loop {
        let stats = prog_stats(proc.pid())?;
        let ran = stats.values().filter(|p| p.runs > 0).count();
        if !stats.is_empty() && (if every { ran == stats.len() } else { ran > 0 }) {
            let mut names = BTreeMap::new();
            let mut taken = BTreeSet::new();
            for id in stats.keys() {
                let base = bpftool_name("prog", *id)?;
                let mut name = base.clone();
                let mut k = 2;
                while !taken.insert(name.clone()) {
                    name = format!("{base}#{k}");
                    k += 1;
                }
                names.insert(*id, name);
            }
            return Ok(Some(Tracer { proc, names }));
        }
        if Instant::now() > deadline {
            bail!(
                "{}: its programs did not run within 30 s of starting",
                config.name()
            );
        }
        std::os::unix::fs::FileExt::read_at(&f, &mut buf, 0)?;
        std::thread::sleep(Duration::from_millis(20));
        check_interrupted()?;
    }
}

/// Run one timed workload, reading the tracer's program counters right around its timed
/// loop (the workload waits at its gate until told to go).
pub(super) fn measure(s: &Settings, args: &[String], tracer: Option<&Tracer>) -> Result<Sample> {
    let mut cmd = Command::new(s.bin_dir.join("copyscope-workload"));
    cmd.args(args)
        .env("COPYSCOPE_WORKLOAD_GATE", "1")
        .env_remove("COPYSCOPE_WORKLOAD_OUT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = show(&cmd);
    let mut p = Proc::spawn(&mut cmd, libc::SIGKILL)?;
    let err = lines_of(p.child.stderr.take().context("no stderr")?);
    let mut out = p.child.stdout.take().context("no stdout")?;
    wait_for_line(&err, &shown, Duration::from_secs(60), |l| {
        (l == "ready").then_some(())
    })?;
    let before = tracer.map(Tracer::read).transpose()?;
    p.child.stdin.take().context("no stdin")?.write_all(b"g")?;
    let mut text = String::new();
    out.read_to_string(&mut text)?;
    let after = tracer.map(Tracer::read).transpose()?;
    let status = p.stop()?;
    if !status.success() {
        let why: Vec<String> = err.try_iter().collect();
        bail!("{shown} failed ({status}): {}", why.join("\n"));
    }
    let v: serde_json::Value =
        serde_json::from_str(text.trim()).with_context(|| format!("{shown} printed {text:?}"))?;
    let (ns, n) = match (&v["ns_per_call"], &v["ns_per_round"]) {
        (serde_json::Value::Number(x), _) => (x.as_f64(), v["calls"].as_u64()),
        (_, serde_json::Value::Number(x)) => (x.as_f64(), v["rounds"].as_u64()),
        _ => (None, None),
    };
    let (Some(ns), Some(n)) = (ns, n) else {
        bail!("{shown} printed no time per call: {text}");
    };
    let mut progs = BTreeMap::new();
    if let (Some(before), Some(after)) = (before, after) {
        for (name, a) in after {
            let b = before.get(&name).copied().unwrap_or(ProgStat {
                id: a.id,
                runs: 0,
                ns: 0,
            });
            progs.insert(
                name,
                (a.runs.saturating_sub(b.runs), a.ns.saturating_sub(b.ns)),
            );
        }
    }
    Ok(Sample {
        ns,
        n: n.max(1),
        progs,
    })
}

/// The first line of `cmd`'s output, or "?" when it cannot run.
pub(super) fn first_line(cmd: &mut Command) -> String {
    output(cmd)
        .ok()
        .and_then(|o| o.lines().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

pub(super) fn overhead(s: &Settings) -> Result<()> {
    if !is_root() {
        bail!(
            "the overhead benchmark loads eBPF programs and sets kernel.bpf_stats_enabled: \
             run it as root"
        );
    }
    if !succeeds(Command::new("bpftrace").arg("--version")) {
        bail!("bpftrace is missing (apt-get install bpftrace)");
    }
    if !succeeds(Command::new("bpftool").arg("version")) {
        bail!("bpftool is missing (apt-get install bpftool)");
    }
    if s.rounds == 0 || s.calls == 0 || s.switch_rounds == 0 {
        bail!("--rounds, --calls and --switch-rounds must be positive");
    }
    let dir = root().join("target/xtask/bench");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("pread-data");
    std::fs::write(&file, vec![1u8; 8192])?;
    let possible_list = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let possible = cpu_count(&possible_list)?;
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    // The ping-pong's CPU: the last one online.
    let switch_cpu = online
        .trim()
        .rsplit([',', '-'])
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);

    catch_signals();
    let load_start = loadavg();
    // Other tracers' programs run in every configuration, the baseline's too.
    let mut others = tracing_programs()?;
    let stats_on = BpfStatsOn::new()?;
    let mut samples: Vec<Vec<Vec<Sample>>> =
        vec![vec![Vec::with_capacity(s.rounds); WORKLOADS.len()]; CONFIGS.len()];
    let mut maps: Vec<(String, MapStat)> = Vec::new();
    let mut prog_ids = BTreeSet::new();
    let t0 = Instant::now();
    for round in 0..s.rounds {
        eprintln!(
            "xtask: overhead round {}/{} ({:.0} s)",
            round + 1,
            s.rounds,
            t0.elapsed().as_secs_f64()
        );
        // Rotate the order each round, so no configuration always follows the same one.
        for k in 0..CONFIGS.len() {
            let config = CONFIGS[(round + k) % CONFIGS.len()];
            check_interrupted()?;
            let tracer = start_tracer(config, s, &file)?;
            if let Some(t) = &tracer {
                prog_ids.extend(t.names.keys().copied());
            }
            for w in WORKLOADS {
                check_interrupted()?;
                let sample = measure(s, &w.args(s, &file, switch_cpu), tracer.as_ref())?;
                samples[config.index()][w.index()].push(sample);
            }
            if let (Config::Copyscope, Some(t)) = (config, &tracer) {
                maps = map_stats(t.proc.pid())?
                    .into_values()
                    .map(|m| Ok((bpftool_name("map", m.id)?, m)))
                    .collect::<Result<_>>()?;
            }
            if let Some(mut t) = tracer {
                let status = t.proc.stop()?;
                if !status.success() && config == Config::Copyscope {
                    eprintln!("xtask: copyscope run ended with {status} on SIGTERM");
                }
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    others.extend(
        tracing_programs()?
            .into_iter()
            .filter(|(id, _)| !prog_ids.contains(id)),
    );
    let old_stats = stats_on.old.clone();
    drop(stats_on);
    // Every program gone once its tracer is (freed after an RCU grace period).
    let deadline = Instant::now() + Duration::from_secs(10);
    let left = loop {
        let left: Vec<u32> = prog_ids
            .iter()
            .copied()
            .filter(|id| {
                succeeds(Command::new("bpftool").args(["prog", "show", "id", &id.to_string()]))
            })
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    report::report(
        s,
        &samples,
        &maps,
        &Header {
            possible,
            possible_list: possible_list.trim().to_string(),
            switch_cpu,
            elapsed,
            old_stats,
            load: (load_start, loadavg()),
            others: others.into_values().collect(),
        },
    );
    if !left.is_empty() {
        bail!("programs still loaded after their tracers stopped: ids {left:?}");
    }
    Ok(())
}

pub(super) struct Header {
    pub(super) possible: usize,
    pub(super) possible_list: String,
    pub(super) switch_cpu: usize,
    pub(super) elapsed: f64,
    pub(super) old_stats: String,
    /// The 1-minute load average at the start and at the end.
    pub(super) load: (String, String),
    /// Tracing programs of others loaded during the run.
    pub(super) others: Vec<String>,
}

/// The 1-minute load average.
pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Per round, `f` of the sample of `config` under `w`.
pub(super) fn per_round(
    samples: &[Vec<Vec<Sample>>],
    config: Config,
    w: Workload,
    f: impl Fn(&Sample) -> f64,
) -> Vec<f64> {
    samples[config.index()][w.index()]
        .iter()
        .map(f)
        .filter(|x| !x.is_nan())
        .collect()
}

/// Every program name of `config` under `w`, ordered by family, then name.
pub(super) fn programs(samples: &[Vec<Vec<Sample>>], config: Config, w: Workload) -> Vec<String> {
    let mut names: Vec<String> = samples[config.index()][w.index()]
        .iter()
        .flat_map(|s| s.progs.keys().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    names.sort_by(|a, b| (family(a), a).cmp(&(family(b), b)));
    names
}

/// Median runs per call, ns per run and ns per call of one program.
pub(super) fn prog_figures(
    samples: &[Vec<Vec<Sample>>],
    config: Config,
    w: Workload,
    prog: &str,
) -> (f64, f64, f64) {
    (
        median(&per_round(samples, config, w, |s| s.runs_per(prog))),
        median(&per_round(samples, config, w, |s| s.ns_per_run(prog))),
        median(&per_round(samples, config, w, |s| s.ns_per(prog))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_sample_sums() {
        assert_eq!(family("syscalls_enter"), "syscalls");
        assert_eq!(family("sched_switch"), "sched");
        assert_eq!(family("pagecache_get"), "pagecache");
        assert_eq!(family("plain"), "plain");
        let s = Sample {
            ns: 100.0,
            n: 10,
            progs: [
                ("syscalls_enter".to_string(), (10, 300)),
                ("syscalls_exit".to_string(), (10, 200)),
                ("sched_switch".to_string(), (0, 0)),
            ]
            .into(),
        };
        assert_eq!(s.runs_per("syscalls_enter"), 1.0);
        assert_eq!(s.ns_per_run("syscalls_enter"), 30.0);
        assert!(s.ns_per_run("sched_switch").is_nan());
        assert!(s.ns_per_run("absent").is_nan());
        assert_eq!(s.ns_per("syscalls_exit"), 20.0);
        assert_eq!(s.sum_per(|p| family(p) == "syscalls"), (2.0, 50.0));
        assert_eq!(s.sum_per(|_| true), (2.0, 50.0));
    }
}
