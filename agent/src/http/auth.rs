//! Basic auth: bcrypt hashes, a decoy for unknown users and a short cache.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use axum::http::{HeaderMap, header};
use tokio::sync::Semaphore;

/// How long a verified user and password are taken without another bcrypt.
const AUTH_CACHE_TTL: Duration = Duration::from_secs(60);
/// Verified credentials remembered at most (the oldest go first).
const AUTH_CACHE_ENTRIES: usize = 64;
/// bcrypt verifications at once: each costs tens of milliseconds of CPU.
const BCRYPT_AT_ONCE: usize = 2;

/// Basic auth against the bcrypt hashes of the web configuration, with a short cache of
/// verified credentials (keyed by an HMAC under a key made at start, so that neither the
/// passwords nor anything that tests them fast are kept).
pub(super) struct BasicAuth {
    users: BTreeMap<String, String>,
    /// Verified for unknown users too, so that they take as long as known ones.
    decoy: String,
    /// What making the decoy took (the highest cost of any user): every failed check
    /// takes at least this long, so that neither an unknown user nor a user whose hash
    /// is cheaper can be told apart by the time a wrong password takes.
    pub(super) failure_floor: Duration,
    key: ring::hmac::Key,
    pub(super) cache: Mutex<HashMap<Vec<u8>, Instant>>,
    bcrypt_slots: Semaphore,
}

impl BasicAuth {
    pub(super) fn new(users: BTreeMap<String, String>) -> Result<BasicAuth> {
        let cost = users
            .values()
            .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map(|p| p.get_cost())
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST);
        let t = Instant::now();
        let decoy = bcrypt::hash("copyscope decoy", cost).context("a bcrypt hash")?;
        let failure_floor = t.elapsed();
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .map_err(|_| anyhow::anyhow!("no random numbers for the credentials cache's key"))?;
        Ok(BasicAuth {
            users,
            decoy,
            failure_floor,
            key,
            cache: Mutex::default(),
            bcrypt_slots: Semaphore::new(BCRYPT_AT_ONCE),
        })
    }

    pub(super) async fn allows(&self, headers: &HeaderMap) -> bool {
        let Some((user, password)) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| basic_credentials(v.as_bytes()))
        else {
            return false;
        };
        // The user's length first: "ab"+"c" and "a"+"bc" differ.
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(&(user.len() as u64).to_le_bytes());
        ctx.update(user.as_bytes());
        ctx.update(&password);
        let tag = ctx.sign().as_ref().to_vec();
        {
            let mut cache = self.cache.lock().unwrap();
            cache.retain(|_, at| at.elapsed() < AUTH_CACHE_TTL);
            if cache.contains_key(&tag) {
                return true;
            }
        }
        let (hash, known) = match self.users.get(&user) {
            Some(h) => (h.clone(), true),
            None => (self.decoy.clone(), false),
        };
        let Ok(slot) = self.bcrypt_slots.acquire().await else {
            return false;
        };
        let started = Instant::now();
        let verified = tokio::task::spawn_blocking(move || bcrypt::verify(&password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        drop(slot);
        let ok = verified && known;
        if !ok {
            // A wrong user or password answers no sooner than the dearest hash would:
            // the time says nothing about which users exist or how their hashes were made.
            // A sleep, not CPU: the slot is free for other checks meanwhile.
            tokio::time::sleep(self.failure_floor.saturating_sub(started.elapsed())).await;
        }
        if ok {
            let mut cache = self.cache.lock().unwrap();
            if cache.len() >= AUTH_CACHE_ENTRIES {
                let oldest = cache
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    cache.remove(&k);
                }
            }
            cache.insert(tag, Instant::now());
        }
        ok
    }
}

/// `Basic base64(user:password)` -> (user, password).
pub(super) fn basic_credentials(value: &[u8]) -> Option<(String, Vec<u8>)> {
    let v = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(encoded.trim())?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

/// Standard base64 with padding (RFC 4648 section 4), as basic auth sends it; bits past
/// the last byte are ignored.
pub(super) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::{
        Engine as _,
        alphabet::STANDARD,
        engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    };
    const BASIC: GeneralPurpose = GeneralPurpose::new(
        &STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
            .with_decode_allow_trailing_bits(true),
    );
    BASIC.decode(s).ok()
}
