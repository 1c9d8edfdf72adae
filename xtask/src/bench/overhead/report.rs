//! The overhead benchmark's report: Markdown tables of program time, sched_switch, an
//! uncounted system call, wall clock, map memory, and the goals.

use super::*;

pub(super) const TARGET_CPUS: usize = 192;
/// The whole report, section by section.
pub(super) fn report(
    s: &Settings,
    samples: &[Vec<Vec<Sample>>],
    maps: &[(String, MapStat)],
    h: &Header,
) {
    header(s, h);
    let p = program_time(samples);
    let (cs_switch, empty_switch) = sched_switch(samples);
    let (getppid_cs, getppid_floor) = uncounted_syscall(samples);
    wall_clock(samples);
    let at = map_memory(maps, h);
    goals(
        &p,
        (cs_switch, empty_switch),
        (getppid_cs, getppid_floor),
        at,
    );
}

/// What the run was: kernel, commit, rounds, configurations.
fn header(s: &Settings, h: &Header) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let git = |args: &[&str]| first_line(Command::new("git").arg("-C").arg(root()).args(args));
    let dirty = output(Command::new("git").arg("-C").arg(root()).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]))
    .is_ok_and(|o| !o.is_empty());
    let bpftrace = first_line(Command::new("bpftrace").arg("--version"));
    let mut cs_cmd = "copyscope run --no-pin --listen 127.0.0.1:0 --interval 5".to_string();
    for a in &s.copyscope_args {
        cs_cmd.push(' ');
        cs_cmd.push_str(a);
    }

    println!("## copyscope overhead\n");
    println!(
        "Kernel {}, {cpus} CPUs online (possible {}), commit {}{}, {bpftrace}.  ",
        kernel.trim(),
        h.possible_list,
        git(&["rev-parse", "--short", "HEAD"]),
        if dirty { " with local changes" } else { "" }
    );
    println!(
        "{} rounds in {:.0} s (load average {} at the start, {} at the end); each round runs \
         every configuration once (order rotating) and under each every workload once: {} \
         pread or getppid calls, {} ping-pong rounds (two threads on CPU {}).  ",
        s.rounds, h.elapsed, h.load.0, h.load.1, s.calls, s.switch_rounds, h.switch_cpu
    );
    println!(
        "Program figures: the kernel's run_cnt and run_time_ns (kernel.bpf_stats_enabled=1 \
         for the run, {} before) read right before and after each timed loop; run time \
         includes the kernel's own clock reads around each run, and so do the wall-clock \
         figures. Medians over rounds.\n",
        h.old_stats
    );
    if !h.others.is_empty() {
        println!(
            "Other tracing programs were loaded during the run, in every configuration (the \
             baseline included; with one on a syscall tracepoint, the syscall slow path is on \
             everywhere and the floor adds little to getppid): {}.\n",
            h.others.join(", ")
        );
    }
    println!("Configurations:\n");
    println!("- baseline: no tracer");
    println!(
        "- floor: bpftrace `{FLOOR_TP}` (turns on the syscall tracepoint slow path for every \
         syscall, runs an empty program per pread)"
    );
    println!("- copyscope: `{cs_cmd}`");
    println!(
        "- bpftrace count: bpftrace counting calls, bytes and time per pid for pread (enter + exit)"
    );
    println!("- empty sched_switch: bpftrace `{SWITCH_FLOOR_TP}`\n");
}

/// Program time per pread, copyscope's against bpftrace's, in all and net of the empty
/// program's cost per run.
struct ProgramTime {
    cs_total: f64,
    bt_total: f64,
    cs_net: f64,
    bt_net: f64,
    floor_run: f64,
}

/// Program time per instrumented call: per program, per family, and net of the floor.
fn program_time(samples: &[Vec<Vec<Sample>>]) -> ProgramTime {
    // Per program, pread 4 KiB.
    let w = Workload::Pread4k;
    println!("### Program time per instrumented call (pread 4 KiB, cached)\n");
    println!("| tracer | program | runs / call | ns / run | ns / call |");
    println!("|---|---|---:|---:|---:|");
    let mut idle = Vec::new();
    for config in [Config::Copyscope, Config::Bpftrace, Config::Floor] {
        for p in programs(samples, config, w) {
            let (rpc, npr, npc) = prog_figures(samples, config, w, &p);
            if rpc == 0.0 && npr.is_nan() {
                idle.push(format!("{} {p}", config.name()));
                continue;
            }
            println!(
                "| {} | {p} | {} | {} | {} |",
                config.name(),
                fixed(rpc, 3),
                fixed(npr, 1),
                fixed(npc, 1)
            );
        }
        let runs = median(&per_round(samples, config, w, |s| s.sum_per(|_| true).0));
        let ns = median(&per_round(samples, config, w, |s| s.sum_per(|_| true).1));
        println!(
            "| {} | **total** | {} | | **{}** |",
            config.name(),
            fixed(runs, 3),
            fixed(ns, 1)
        );
    }
    if !idle.is_empty() {
        println!(
            "\nLoaded, not run during the workload: {}.",
            idle.join(", ")
        );
    }
    println!("\ncopyscope by family (medians of per-round sums):\n");
    println!("| family | runs / call | ns / call | share |");
    println!("|---|---:|---:|---:|");
    let cs_total = median(&per_round(samples, Config::Copyscope, w, |s| {
        s.sum_per(|_| true).1
    }));
    let families: BTreeSet<String> = programs(samples, Config::Copyscope, w)
        .iter()
        .map(|p| family(p).to_string())
        .collect();
    for fam in &families {
        let of = |p: &str| family(p) == fam;
        let runs = median(&per_round(samples, Config::Copyscope, w, |s| {
            s.sum_per(of).0
        }));
        let ns = median(&per_round(samples, Config::Copyscope, w, |s| {
            s.sum_per(of).1
        }));
        println!(
            "| {fam} | {} | {} | {:.0} % |",
            fixed(runs, 3),
            fixed(ns, 1),
            100.0 * ns / cs_total
        );
    }
    println!("| **total** | | **{}** | |", fixed(cs_total, 1));

    // Net of the per-run cost the empty program shows (the measurement's own share): per
    // round, each run of copyscope and of bpftrace less the floor program's ns per run.
    let floor_per_run: Vec<f64> = samples[Config::Floor.index()][w.index()]
        .iter()
        .map(|x| {
            let (r, ns) = x.sum_per(|_| true);
            ns / r
        })
        .collect();
    let net = |config: Config| {
        let v: Vec<f64> = samples[config.index()][w.index()]
            .iter()
            .zip(&floor_per_run)
            .map(|(x, fpr)| {
                let (r, ns) = x.sum_per(|_| true);
                ns - r * fpr
            })
            .filter(|x| !x.is_nan())
            .collect();
        median(&v)
    };
    let bt_total = median(&per_round(samples, Config::Bpftrace, w, |s| {
        s.sum_per(|_| true).1
    }));
    let (cs_net, bt_net) = (net(Config::Copyscope), net(Config::Bpftrace));
    let floor_run = median(&floor_per_run);
    println!(
        "\nThe empty program costs {} ns per run here; net of that per run, copyscope spends \
         {} ns per call, bpftrace {} ns.\n",
        fixed(floor_run, 1),
        fixed(cs_net, 1),
        fixed(bt_net, 1)
    );

    ProgramTime {
        cs_total,
        bt_total,
        cs_net,
        bt_net,
        floor_run,
    }
}

/// sched_switch's cost per run, copyscope's and the empty program's.
fn sched_switch(samples: &[Vec<Vec<Sample>>]) -> (f64, f64) {
    // sched_switch.
    let sw = Workload::Switch;
    println!("### sched_switch (ping-pong, two threads on one CPU)\n");
    println!("| program | runs / round | ns / run (median) | ns / run p10–p90 |");
    println!("|---|---:|---:|---:|");
    // The sched family's programs: `sched_switchbtf` or `sched_switch` (copyscope, by
    // method), `sched_switch` (bpftrace's empty program).
    let sched = |s: &Sample| s.sum_per(|p| family(p) == "sched");
    let sched_row = |label: &str, config: Config| {
        let runs = median(&per_round(samples, config, sw, |s| sched(s).0));
        let per_run = Spread::of(&per_round(samples, config, sw, |s| {
            let (runs, ns) = sched(s);
            ratio(ns, runs)
        }));
        println!(
            "| {label} | {} | {} | {}–{} |",
            fixed(runs, 2),
            fixed(per_run.median, 1),
            fixed(per_run.p10, 1),
            fixed(per_run.p90, 1)
        );
        per_run.median
    };
    let cs_switch = sched_row("copyscope sched_switch", Config::Copyscope);
    let empty_switch = sched_row("empty program (bpftrace)", Config::SwitchFloor);
    let cs_round = median(&per_round(samples, Config::Copyscope, sw, |s| {
        s.sum_per(|_| true).1
    }));
    println!(
        "\ncopyscope's programs in all: {} ns per ping-pong round.\n",
        fixed(cs_round, 1)
    );

    (cs_switch, empty_switch)
}

/// Per round, what `config` added to the baseline's ns per call under `w`.
fn added(samples: &[Vec<Vec<Sample>>], config: Config, w: Workload) -> Vec<f64> {
    let base = &samples[Config::Baseline.index()][w.index()];
    samples[config.index()][w.index()]
        .iter()
        .zip(base)
        .map(|(x, b)| x.ns - b.ns)
        .collect()
}

/// getppid, which copyscope does not count: the cost added by copyscope and by the floor.
fn uncounted_syscall(samples: &[Vec<Vec<Sample>>]) -> (f64, f64) {
    // The uncounted syscall.
    let gw = Workload::Getppid;
    println!("### A system call copyscope does not count (getppid)\n");
    println!("| configuration | ns / call | added ns (paired, median) | added p10–p90 |");
    println!("|---|---:|---:|---:|");
    for config in [Config::Baseline, Config::Floor, Config::Copyscope] {
        let ns = Spread::of(&per_round(samples, config, gw, |s| s.ns));
        if config == Config::Baseline {
            println!("| {} | {} | | |", config.name(), fixed(ns.median, 1));
            continue;
        }
        let a = Spread::of(&added(samples, config, gw));
        println!(
            "| {} | {} | {:+.1} | {:+.1}–{:+.1} |",
            config.name(),
            fixed(ns.median, 1),
            a.median,
            a.p10,
            a.p90
        );
    }
    let getppid_cs = median(&added(samples, Config::Copyscope, gw));
    let getppid_floor = median(&added(samples, Config::Floor, gw));
    println!("\ncopyscope's syscall programs during getppid:\n");
    println!("| program | runs / call | ns / run | ns / call |");
    println!("|---|---:|---:|---:|");
    for p in programs(samples, Config::Copyscope, gw) {
        if family(&p) != "syscalls" {
            continue;
        }
        let (rpc, npr, npc) = prog_figures(samples, Config::Copyscope, gw, &p);
        if rpc == 0.0 && npr.is_nan() {
            continue;
        }
        println!(
            "| {p} | {} | {} | {} |",
            fixed(rpc, 3),
            fixed(npr, 1),
            fixed(npc, 1)
        );
    }
    println!();

    (getppid_cs, getppid_floor)
}

/// Wall clock, every configuration and workload.
fn wall_clock(samples: &[Vec<Vec<Sample>>]) {
    // Wall clock.
    println!("### Wall clock, every configuration and workload\n");
    println!(
        "added: the difference to the baseline measured in the same round, median and spread \
         over rounds.\n"
    );
    println!("| workload | configuration | median | min–max | p10–p90 | added | added p10–p90 |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for w in WORKLOADS {
        for config in CONFIGS {
            let ns = Spread::of(&per_round(samples, config, w, |s| s.ns));
            let (add, spread) = if config == Config::Baseline {
                (String::new(), String::new())
            } else {
                let a = Spread::of(&added(samples, config, w));
                (
                    format!("{:+.1}", a.median),
                    format!("{:+.1}–{:+.1}", a.p10, a.p90),
                )
            };
            println!(
                "| {} (ns / {}) | {} | {} | {}–{} | {}–{} | {add} | {spread} |",
                w.name(),
                w.unit(),
                config.name(),
                fixed(ns.median, 1),
                fixed(ns.min, 1),
                fixed(ns.max, 1),
                fixed(ns.p10, 1),
                fixed(ns.p90, 1)
            );
        }
    }
    let pread_cs = median(&added(samples, Config::Copyscope, Workload::Pread4k));
    let pread_bt = median(&added(samples, Config::Bpftrace, Workload::Pread4k));
    let pread_floor = median(&added(samples, Config::Floor, Workload::Pread4k));
    println!(
        "\npread 4 KiB, wall clock added: copyscope {pread_cs:+.1} ns = {} x bpftrace's \
         {pread_bt:+.1} ns and {} x the floor's {pread_floor:+.1} ns (no goal).\n",
        fixed(ratio(pread_cs, pread_bt), 2),
        fixed(ratio(pread_cs, pread_floor), 2)
    );
}

/// Map memory now and projected to TARGET_CPUS; returns the projection, bytes.
fn map_memory(maps: &[(String, MapStat)], h: &Header) -> f64 {
    // Map memory.
    println!("### copyscope's map memory\n");
    println!(
        "memlock of each map (/proc/PID/fdinfo) now, with {} possible CPUs, and at \
         {TARGET_CPUS}: per-CPU maps scaled whole (an upper bound), the others as they are.\n",
        h.possible
    );
    println!("| map | type | max entries | now (KiB) | at {TARGET_CPUS} CPUs (KiB) |");
    println!("|---|---|---:|---:|---:|");
    let (mut now, mut at) = (0.0, 0.0);
    let mut maps = maps.to_vec();
    maps.sort_by(|(an, a), (bn, b)| {
        let at = |m: &MapStat| projected(m.memlock, m.map_type, h.possible, TARGET_CPUS);
        at(b).total_cmp(&at(a)).then(an.cmp(bn))
    });
    for (name, m) in &maps {
        let p = projected(m.memlock, m.map_type, h.possible, TARGET_CPUS);
        now += m.memlock as f64;
        at += p;
        println!(
            "| {name} | {} | {} | {:.0} | {:.0} |",
            map_type_name(m.map_type),
            m.max_entries,
            m.memlock as f64 / 1024.0,
            p / 1024.0
        );
    }
    println!(
        "| **total** | | | **{:.1} MiB** | **{:.1} MiB** |\n",
        now / MIB,
        at / MIB
    );

    at
}

/// The goals table.
fn goals(p: &ProgramTime, switch: (f64, f64), getppid: (f64, f64), at: f64) {
    let ProgramTime {
        cs_total,
        bt_total,
        cs_net,
        bt_net,
        floor_run,
    } = *p;
    let (cs_switch, empty_switch) = switch;
    let (getppid_cs, getppid_floor) = getppid;
    // Goals.
    let prog_ratio = ratio(cs_total, bt_total);
    let ratio_net = ratio(cs_net, bt_net);
    let switch_ratio = ratio(cs_switch, empty_switch);
    let getppid_ratio = ratio(getppid_cs, getppid_floor);
    println!("### Goals\n");
    println!("| figure | value | goal | |");
    println!("|---|---:|---:|---|");
    println!(
        "| program time per pread 4 KiB, copyscope / bpftrace ({} / {} ns) | {} | ≤ 0.30 | {} |",
        fixed(cs_total, 1),
        fixed(bt_total, 1),
        fixed(prog_ratio, 2),
        verdict(prog_ratio, 0.30)
    );
    println!(
        "| the same net of the empty program's {} ns per run ({} / {} ns) | {} | ≤ 0.30 | {} |",
        fixed(floor_run, 1),
        fixed(cs_net, 1),
        fixed(bt_net, 1),
        fixed(ratio_net, 2),
        verdict(ratio_net, 0.30)
    );
    println!(
        "| sched_switch ns per run, copyscope / empty program ({} / {} ns) | {} | ≤ 3.0 | {} |",
        fixed(cs_switch, 1),
        fixed(empty_switch, 1),
        fixed(switch_ratio, 2),
        verdict(switch_ratio, 3.0)
    );
    println!(
        "| getppid added ns, copyscope / floor ({getppid_cs:+.1} / {getppid_floor:+.1} ns) | {} | ≤ 2.0 | {} |",
        fixed(getppid_ratio, 2),
        verdict(getppid_ratio, 2.0)
    );
    println!(
        "| map memory at {TARGET_CPUS} CPUs | {:.1} MiB | ≤ 32 MiB | {} |",
        at / MIB,
        verdict(at / MIB, 32.0)
    );
}
