//! The agent's saved state in `AGENT_STATE`, and `PIN_META`, read and written through
//! the pinned maps.

use anyhow::{Context as _, Result, bail};
use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use copyscope_common::{PinMeta, limits};
use serde::{Deserialize, Serialize};

use super::COPY_CHUNKS;

/// One probe as a pinning agent attached it, for the agent that adopts the programs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SavedProbe {
    pub family: String,
    pub hook: String,
    pub name: String,
    pub method: Option<String>,
    pub attached: bool,
    pub detail: String,
    /// Absent in totals saved before reasons were kinds.
    #[serde(default)]
    pub reason: Option<crate::reason::Reason>,
}

/// Everything saved in `AGENT_STATE`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Saved {
    /// The probes as attached by the agent that loaded the programs.
    pub probes: Vec<SavedProbe>,
    /// The running agent's totals (`commands::run`), as of its last collection.
    #[serde(default)]
    pub agent: Option<serde_json::Value>,
}

/// `PIN_META` and `AGENT_STATE` of a pin, for the agent to read and write.
pub struct Store {
    meta: Array<MapData, PinMeta>,
    chunks: BpfHashMap<MapData, u32, [u8; limits::STATE_CHUNK]>,
}

impl Store {
    pub fn new(meta: aya::maps::Map, chunks: aya::maps::Map) -> Result<Store> {
        Ok(Store {
            meta: Array::try_from(meta)?,
            chunks: BpfHashMap::try_from(chunks)?,
        })
    }

    pub fn meta(&self) -> Result<PinMeta> {
        Ok(self.meta.get(&0, 0)?)
    }

    pub fn set_meta(&mut self, m: &PinMeta) -> Result<()> {
        self.meta.set(0, m, 0).context("writing PIN_META")
    }

    /// The saved state, if any; an error when it does not check out.
    pub fn read(&self) -> Result<Option<Saved>> {
        let m = self.meta()?;
        if m.state_len == 0 {
            return Ok(None);
        }
        let len = m.state_len as usize;
        let n = len.div_ceil(limits::STATE_CHUNK) as u32;
        let mut buf = Vec::with_capacity(n as usize * limits::STATE_CHUNK);
        for i in 0..n {
            let c = self
                .chunks
                .get(&(m.state_copy * COPY_CHUNKS + i), 0)
                .with_context(|| format!("reading chunk {i} of the saved state"))?;
            buf.extend_from_slice(&c);
        }
        buf.truncate(len);
        if crc32fast::hash(&buf) != m.state_crc {
            bail!("the saved state fails its checksum");
        }
        Ok(Some(
            serde_json::from_slice(&buf).context("decoding the saved state")?,
        ))
    }

    /// Save `s` into the copy not in use, then switch `PIN_META` to it in one update.
    pub fn write(&mut self, s: &Saved) -> Result<usize> {
        let bytes = serde_json::to_vec(s)?;
        let max = COPY_CHUNKS as usize * limits::STATE_CHUNK;
        if bytes.len() > max {
            bail!(
                "the agent's state is {} bytes, more than the {max} a pin holds",
                bytes.len()
            );
        }
        let mut m = self.meta()?;
        let copy = if m.state_len == 0 {
            0
        } else {
            1 - m.state_copy
        };
        let mut chunk = Box::new([0u8; limits::STATE_CHUNK]);
        for (i, part) in bytes.chunks(limits::STATE_CHUNK).enumerate() {
            chunk[..part.len()].copy_from_slice(part);
            chunk[part.len()..].fill(0);
            #[expect(
                clippy::needless_borrows_for_generic_args,
                reason = "by value it would copy 32 KiB onto the stack"
            )]
            self.chunks
                .insert(copy * COPY_CHUNKS + i as u32, &*chunk, 0)
                .with_context(|| format!("writing chunk {i} of the saved state"))?;
        }
        m.state_copy = copy;
        m.state_len = bytes.len() as u32;
        m.state_crc = crc32fast::hash(&bytes);
        m.state_unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        self.set_meta(&m)?;
        Ok(bytes.len())
    }
}
