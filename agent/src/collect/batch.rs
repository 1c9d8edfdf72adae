//! Reading a whole BPF hash map in a few system calls: BPF_MAP_LOOKUP_BATCH (hash maps
//! since Linux 5.6), thousands of entries a call; on older kernels, key by key
//! (BPF_MAP_GET_NEXT_KEY then BPF_MAP_LOOKUP_ELEM: two system calls an entry).

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context as _, Result};
use aya::{
    Pod,
    maps::{HashMap as BpfHashMap, IterableMap as _, MapData},
};

/// BPF_MAP_LOOKUP_BATCH (include/uapi/linux/bpf.h, enum bpf_cmd).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// ENOTSUPP (include/linux/errno.h): not in libc, but what the kernel returns for a map
/// type without batch operations.
const ENOTSUPP: i32 = 524;
/// Entries asked for per call.
const CHUNK: usize = 4096;

/// Set once a kernel has refused batch lookups: the rest of the agent's life reads key by
/// key without asking again.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// The `batch` member of `union bpf_attr` (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every entry of `map`, appended to `out`.
pub fn entries<K: Pod, V: Pod>(
    map: &BpfHashMap<MapData, K, V>,
    name: &str,
    out: &mut Vec<(K, V)>,
) -> Result<()> {
    if !UNSUPPORTED.load(Ordering::Relaxed) {
        match lookup_batch(map, out) {
            Ok(true) => return Ok(()),
            Ok(false) => {
                log::info!(
                    "this kernel has no batch lookups for hash maps (Linux 5.6): reading the \
                     maps key by key"
                );
                UNSUPPORTED.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(e).with_context(|| format!("reading the {name} map")),
        }
    }
    for item in map.iter() {
        out.push(item.with_context(|| format!("reading the {name} map"))?);
    }
    Ok(())
}

thread_local! {
    /// The keys and values of one call, kept from one read to the next (8-byte words: the
    /// maps' keys and values are aligned to at most 8).
    static SCRATCH: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Ok(false) when the kernel has no batch lookups for this map (nothing read).
fn lookup_batch<K: Pod, V: Pod>(
    map: &BpfHashMap<MapData, K, V>,
    out: &mut Vec<(K, V)>,
) -> std::io::Result<bool> {
    SCRATCH.with_borrow_mut(|scratch| lookup_batch_in(map, out, scratch))
}

fn lookup_batch_in<K: Pod, V: Pod>(
    map: &BpfHashMap<MapData, K, V>,
    out: &mut Vec<(K, V)>,
    scratch: &mut Vec<u64>,
) -> std::io::Result<bool> {
    const { assert!(std::mem::align_of::<K>() <= 8 && std::mem::align_of::<V>() <= 8) };
    let fd = map.map().fd().as_fd().as_raw_fd();
    let mut chunk = CHUNK;
    let words = |n: usize, size: usize| (n * size).div_ceil(8);
    let (ks, vs) = (std::mem::size_of::<K>(), std::mem::size_of::<V>());
    let layout = |chunk: usize, scratch: &mut Vec<u64>| {
        let kw = words(chunk, ks);
        let need = kw + words(chunk, vs);
        if scratch.len() < need {
            scratch.resize(need, 0);
        }
        let base = scratch.as_mut_ptr();
        // SAFETY: both within `scratch`, which holds `need` words.
        (base as *mut K, unsafe { base.add(kw) } as *mut V)
    };
    let (mut keys, mut values) = layout(chunk, scratch);
    // A hash map's position token is a u32 (the bucket to go on from).
    let (mut token_in, mut token_out) = (0u32, 0u32);
    let mut first = true;
    let start = out.len();
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &token_in as *const u32 as u64
            },
            out_batch: &mut token_out as *mut u32 as u64,
            keys: keys as u64,
            values: values as u64,
            count: chunk as u32,
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: bpf(2) with an attr of the batch layout, whose buffers hold `count`
        // keys and values of the map's sizes (K and V are the map's key and value).
        let err = unsafe { crate::loader::sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) }.err();
        let n = (attr.count as usize).min(chunk);
        // SAFETY: the buffers hold `chunk` keys and values, initialised (zeroes at first,
        // then what the kernel wrote), and K and V are plain bytes: any bytes are a value.
        let (k, v) = unsafe {
            (
                std::slice::from_raw_parts(keys, n),
                std::slice::from_raw_parts(values, n),
            )
        };
        out.extend(k.iter().copied().zip(v.iter().copied()));
        match err.as_ref().and_then(std::io::Error::raw_os_error) {
            None => {}
            // The end of the map (the last entries come with it).
            Some(libc::ENOENT) => return Ok(true),
            // One bucket holds more entries than asked for: ask for more.
            Some(libc::ENOSPC) if n == 0 => {
                chunk *= 2;
                (keys, values) = layout(chunk, scratch);
                continue;
            }
            Some(libc::EINVAL | ENOTSUPP | libc::EOPNOTSUPP) if first && out.len() == start => {
                return Ok(false);
            }
            Some(_) => return Err(err.expect("an error")),
        }
        token_in = token_out;
        first = false;
    }
}
