//! Pinning under bpffs for `copyscope run` (see `crate::pin` for the layout): which links
//! this process holds, what a pin held, and the two ways to continue from it: adopt the
//! attached programs of the same build, or replace another build's.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::OwnedFd,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        kprobe::KProbeLink,
        links::{FdLink, PinnedLink},
        trace_point::TracePointLink,
    },
};
use copyscope_common::{PinMeta, maps};

use super::{Loaded, OBJECT, ProbeStatus, disabled_methods, kernel_release};
use crate::pin::{self, Found, MapDef, PinDir, Saved, SavedProbe, Store};

/// What was found at the pin, ready for loading.
pub(super) struct Plan {
    dir: PinDir,
    found: Found,
    repin: bool,
}

#[derive(Debug, Clone)]
pub struct PinRequest {
    pub path: PathBuf,
    /// Discard a pin of another layout, or a damaged one, instead of failing.
    pub repin: bool,
}

/// A link taken from its program, so that it can be pinned or dropped on purpose.
pub(super) enum HeldLink {
    Fd(String, FdLink),
    /// Perf-event attachments on kernels without BPF perf links (before 5.15): cannot be
    /// pinned.
    TracePoint(
        String,
        #[expect(dead_code, reason = "held only to stay attached")] TracePointLink,
    ),
    KProbe(
        String,
        #[expect(dead_code, reason = "held only to stay attached")] KProbeLink,
    ),
    Pinned(#[expect(dead_code, reason = "held only to keep its fd")] PinnedLink),
}

impl HeldLink {
    /// Perf-event links are BPF links (pinnable) from 5.15; before, perf event fds.
    pub(super) fn tracepoint(program: &str, l: TracePointLink) -> Result<HeldLink> {
        if aya::features().bpf_perf_link() {
            let fd = FdLink::try_from(l).map_err(|e| anyhow!("{program}: {e}"))?;
            return Ok(HeldLink::Fd(program.into(), fd));
        }
        Ok(HeldLink::TracePoint(program.into(), l))
    }

    pub(super) fn kprobe(program: &str, l: KProbeLink) -> Result<HeldLink> {
        if aya::features().bpf_perf_link() {
            let fd = FdLink::try_from(l).map_err(|e| anyhow!("{program}: {e}"))?;
            return Ok(HeldLink::Fd(program.into(), fd));
        }
        Ok(HeldLink::KProbe(program.into(), l))
    }
}

/// How the programs came to be attached, when pinning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PinHow {
    /// Nothing was pinned: loaded, attached and pinned now.
    New,
    /// The same build was pinned: its attached programs were kept, nothing reloaded.
    Adopted,
    /// Another build's programs were pinned: replaced by this build's. No program was
    /// attached for `gap_seconds`.
    Replaced { gap_seconds: f64 },
}

/// The pin this agent continues from and writes to.
pub struct Pinned {
    pub dir: PinDir,
    pub store: Store,
    pub how: PinHow,
    pub generation: u32,
    /// The state saved by the previous agent, read at load time.
    pub saved: Option<Saved>,
    /// Links that could not be pinned (these stop counting while no agent runs).
    pub unpinnable: Vec<String>,
    /// Adopted programs, opened from their pins (for their run counts).
    pub(super) programs: Vec<(String, OwnedFd)>,
}

/// Lock and check the pin, and point every shared map at it (aya opens a pinned map, or
/// creates and pins it).
pub(super) fn prepare(req: &PinRequest, loader: &mut EbpfLoader<'_>) -> Result<Plan> {
    let dir = PinDir::open(&req.path)?;
    let found = match dir.inspect(&object_maps()?) {
        Ok(Found::Unfinished) => {
            log::warn!(
                "the pin at {} was left by an agent that stopped while starting: \
                 starting afresh",
                req.path.display()
            );
            dir.clear()?;
            Found::Empty
        }
        Ok(f) => f,
        Err(e) if req.repin => {
            log::warn!("{e:#}; --repin: discarding it, counts start from zero");
            dir.clear()?;
            Found::Empty
        }
        Err(e) => return Err(e),
    };
    dir.make_dir(&dir.path().join("maps"))?;
    for name in maps::PINNED {
        loader.map_pin_path(name, dir.map_path(name));
    }
    Ok(Plan {
        dir,
        found,
        repin: req.repin,
    })
}

/// Continue from the pin: adopt the programs of the same build, or attach this build's
/// with `attach_all` and pin them.
pub(super) fn attach(
    mut ebpf: Ebpf,
    plan: Plan,
    build: u64,
    mut links: Vec<HeldLink>,
    attach_all: impl FnOnce(&mut Ebpf, &mut Vec<HeldLink>) -> Vec<ProbeStatus>,
) -> Result<Loaded> {
    let Plan { dir, found, repin } = plan;
    let mut store = Store::new(
        ebpf.take_map(maps::PIN_META)
            .context("object has no PIN_META map")?,
        ebpf.take_map(maps::AGENT_STATE)
            .context("object has no AGENT_STATE map")?,
    )?;
    let saved = match store.read() {
        Ok(s) => s,
        Err(e) if repin => {
            log::warn!(
                "the state saved at {}: {e:#}; --repin: counts start from zero",
                dir.path().display()
            );
            None
        }
        Err(e) => bail!(
            "the state saved at {} cannot be read ({e:#}): discard it with `copyscope unpin \
             --pin-path {0}` (its counts are lost), or start with --repin",
            dir.path().display()
        ),
    };
    let old = match found {
        Found::Pinned(meta) => Some(meta),
        _ => None,
    };
    // The same build, its programs still attached, its probes known: keep them running.
    let adopt = old.filter(|meta| {
        meta.build == build
            && !dir.links(meta.generation).is_empty()
            && saved.as_ref().is_some_and(|s| !s.probes.is_empty())
    });
    let (probes, how, generation, unpinnable, programs) = if let Some(meta) = adopt {
        let saved_probes = saved.as_ref().map_or(&[][..], |s| &s.probes[..]);
        let probes = restore_probes(saved_probes)?;
        counting_alone(&dir, &dir.link_ids(meta.generation))?;
        let mut programs = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir.path().join("progs")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                programs.push((name, pin::open_pinned(&e.path())?));
            }
        }
        programs.sort_by(|a, b| a.0.cmp(&b.0));
        (
            probes,
            PinHow::Adopted,
            meta.generation,
            Vec::new(),
            programs,
        )
    } else {
        // Before anything is attached, say which build owns the pin (an agent that stops
        // from here on leaves a pin the next one can check).
        let mut meta = store.meta()?;
        let generation = old.map_or(1, |m| m.generation + 1);
        meta.magic = PinMeta::MAGIC;
        meta.layout = copyscope_common::PIN_LAYOUT;
        meta.build = build;
        store.set_meta(&meta)?;
        let started = Instant::now();
        if old.is_some() {
            // Another build: its programs go, this build's come (no overlap: an event is
            // never counted twice).
            let programs = dir.program_ids();
            dir.remove_programs()?;
            // An earlier pin's maps only: maps created at this start have no other users.
            counting_alone(&dir, &BTreeSet::new())?;
            detached(&dir, &programs);
        }
        let probes = attach_all(&mut ebpf, &mut links);
        let how = if old.is_some() {
            PinHow::Replaced {
                gap_seconds: started.elapsed().as_secs_f64(),
            }
        } else {
            PinHow::New
        };
        let unpinnable = pin_links(&mut ebpf, &dir, generation, &mut links)?;
        meta.generation = generation;
        store.set_meta(&meta)?;
        store.write(&Saved {
            probes: probes.iter().map(save_probe).collect(),
            agent: saved.as_ref().and_then(|s| s.agent.clone()),
        })?;
        (probes, how, generation, unpinnable, Vec::new())
    };
    Ok(Loaded {
        ebpf,
        probes,
        kernel: kernel_release(),
        links,
        pinned: Some(Pinned {
            dir,
            store,
            how,
            generation,
            saved,
            unpinnable,
            programs,
        }),
    })
}

/// No program may count into the pin's maps but through the links pinned in it (`ours`):
/// links moved out of the pin directory, or held by another process, would keep counting
/// beside this agent's programs, and every event would be counted twice. Links just
/// unpinned are released by the kernel a moment later (deferred work): they are waited
/// for, up to two seconds.
fn counting_alone(dir: &PinDir, ours: &BTreeSet<u32>) -> Result<()> {
    let maps = dir.map_ids()?;
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        let others = match pin::kernel::counting_into(&maps, ours) {
            Ok(v) => v,
            // Without CAP_SYS_ADMIN (the DaemonSet does not grant it) the directory's
            // protections stand alone: only root and the agent's user can move links.
            Err(e) => {
                log::info!(
                    "not checked that no other programs count into the maps pinned at {} \
                     (listing BPF links needs CAP_SYS_ADMIN and Linux 5.8): {e}",
                    dir.path().display()
                );
                return Ok(());
            }
        };
        if others.is_empty() {
            return Ok(());
        }
        if Instant::now() >= until {
            let p = dir.path().display();
            bail!(
                "programs are still attached and counting into the maps pinned at {p} through \
                 links that are not pinned there ({}): they were moved out of {p}/links or are \
                 held by another process, and attaching this agent's programs as well would \
                 count every event twice. Detach them (`bpftool link show` lists them: remove \
                 their pins, or stop the process that holds them), or discard this pin with \
                 `copyscope unpin --pin-path {p}` (its counts are lost)",
                pin::kernel::describe(&others)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until the replaced build's programs (`ids`) are freed, up to five seconds: only
/// then are they certainly detached. [`counting_alone`] has seen their links go, but the
/// kernel frees a link's id before it detaches the program, and the detach can wait on
/// another agent attaching at the same hook: attaching now would count those moments'
/// events twice. A program still loaded after that is held by a file descriptor without a
/// link (it does not run): said, not waited for.
fn detached(dir: &PinDir, ids: &BTreeSet<u32>) {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let alive = match pin::kernel::still_loaded(ids) {
            Ok(a) => a,
            Err(e) => {
                log::info!(
                    "not checked that the programs pinned at {} before are freed (listing \
                     programs needs CAP_SYS_ADMIN): {e}",
                    dir.path().display()
                );
                return;
            }
        };
        if alive.is_empty() {
            return;
        }
        if Instant::now() >= until {
            log::warn!(
                "programs that were pinned at {} are still loaded after their links went \
                 (ids {}): another process holds them; they are not attached",
                dir.path().display(),
                alive
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Pin every link that can be (and its program), under `links/GENERATION`; returns the
/// programs whose links cannot be pinned on this kernel.
fn pin_links(
    ebpf: &mut Ebpf,
    dir: &PinDir,
    generation: u32,
    links: &mut Vec<HeldLink>,
) -> Result<Vec<String>> {
    let links_dir = dir.links_dir(generation);
    dir.make_dir(&links_dir)?;
    dir.make_dir(&dir.path().join("progs"))?;
    let mut unpinnable = Vec::new();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for held in std::mem::take(links) {
        match held {
            HeldLink::Fd(program, link) => {
                let n = count.entry(program.clone()).or_default();
                let path = links_dir.join(format!("{program}_{n}"));
                *n += 1;
                let pinned = link
                    .pin(&path)
                    .with_context(|| format!("pinning a link at {}", path.display()))?;
                links.push(HeldLink::Pinned(pinned));
            }
            HeldLink::TracePoint(ref p, _) | HeldLink::KProbe(ref p, _) => {
                unpinnable.push(p.clone());
                links.push(held);
            }
            HeldLink::Pinned(_) => links.push(held),
        }
    }
    for program in count.keys() {
        let path = dir.program_path(program);
        ebpf.program_mut(program)
            .with_context(|| format!("program {program} missing from the object"))?
            .pin(&path)
            .with_context(|| format!("pinning {program} at {}", path.display()))?;
    }
    unpinnable.sort();
    unpinnable.dedup();
    Ok(unpinnable)
}

/// The maps as this build's object defines them.
fn object_maps() -> Result<BTreeMap<String, MapDef>> {
    let obj = aya_obj::Object::parse(OBJECT).context("parsing copyscope's eBPF object")?;
    Ok(obj
        .maps
        .iter()
        .map(|(name, m)| {
            (
                name.clone(),
                MapDef {
                    map_type: m.map_type(),
                    key_size: m.key_size(),
                    value_size: m.value_size(),
                    max_entries: m.max_entries(),
                },
            )
        })
        .collect())
}

/// FNV-1a of the object and of everything handed to it at load time: two agents with the
/// same hash run identical programs.
pub(super) fn build_hash<'a>(
    globals: impl Iterator<Item = &'a (&'static str, u64)>,
    watch: u8,
    debug: u8,
    disabled_families: &[String],
) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(OBJECT);
    eat(&copyscope_common::PIN_LAYOUT.to_le_bytes());
    for (name, value) in globals {
        eat(name.as_bytes());
        eat(&value.to_le_bytes());
    }
    eat(&[watch, debug]);
    eat(disabled_methods().join(",").as_bytes());
    // Sorted: the same families in another order are the same programs.
    let mut families: Vec<&str> = disabled_families.iter().map(String::as_str).collect();
    families.sort_unstable();
    families.dedup();
    eat(b";");
    eat(families.join(",").as_bytes());
    h
}

/// A probe's status, as a pin keeps it.
pub fn save_probe(p: &ProbeStatus) -> SavedProbe {
    SavedProbe {
        family: p.family.to_string(),
        hook: p.hook.to_string(),
        name: p.name.clone(),
        method: p.method.map(str::to_string),
        attached: p.attached,
        detail: p.detail.clone(),
        reason: p.reason,
    }
}

/// The probe statuses an earlier agent of this build saved, matched to the probe table.
fn restore_probes(saved: &[SavedProbe]) -> Result<Vec<ProbeStatus>> {
    crate::family::probes()
        .map(|spec| {
            let family = spec.family.name();
            let s = saved
                .iter()
                .find(|s| s.family == family && s.hook == spec.hook)
                .with_context(|| format!("the saved probes lack {family}/{}", spec.hook))?;
            let method = match &s.method {
                None => None,
                Some(m) => Some(
                    spec.methods
                        .iter()
                        .map(|a| a.method.name())
                        .find(|n| n == m)
                        .with_context(|| format!("unknown saved method {m}"))?,
                ),
            };
            Ok(ProbeStatus {
                family,
                hook: spec.hook,
                name: s.name.clone(),
                method,
                attached: s.attached,
                required: spec.required,
                detail: s.detail.clone(),
                reason: s.reason,
                fired: None,
            })
        })
        .collect()
}
