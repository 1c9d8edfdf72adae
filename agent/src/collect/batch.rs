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

/// Ok(false) when the kernel has no batch lookups for this map (nothing read).
fn lookup_batch<K: Pod, V: Pod>(
    map: &BpfHashMap<MapData, K, V>,
    out: &mut Vec<(K, V)>,
) -> std::io::Result<bool> {
    let fd = map.map().fd().as_fd().as_raw_fd();
    let mut chunk = CHUNK;
    // SAFETY: Pod types are plain bytes: all zeroes is a value.
    let mut keys: Vec<K> = vec![unsafe { std::mem::zeroed() }; chunk];
    let mut values: Vec<V> = vec![unsafe { std::mem::zeroed() }; chunk];
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
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: bpf(2) with an attr of the batch layout, whose buffers hold `count`
        // keys and values of the map's sizes (K and V are the map's key and value).
        let err = unsafe { crate::loader::sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) }.err();
        let n = (attr.count as usize).min(chunk);
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        match err.as_ref().and_then(std::io::Error::raw_os_error) {
            None => {}
            // The end of the map (the last entries come with it).
            Some(libc::ENOENT) => return Ok(true),
            // One bucket holds more entries than asked for: ask for more.
            Some(libc::ENOSPC) if n == 0 => {
                chunk *= 2;
                keys.resize(chunk, keys[0]);
                values.resize(chunk, values[0]);
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
