//! Where `top` gets its windows: probes it attached itself, or a running agent over HTTP.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::{
    advisor::Thresholds,
    calibrate,
    collect::window::Sampler,
    loader::{self, LoadOptions, Loaded},
    model::Snapshot,
};

pub trait Source {
    /// The next window. Local: the time since the previous call. Remote: the agent's last
    /// complete window.
    fn fetch(&mut self) -> Result<Snapshot>;
}

/// Probes on this host, loaded by `top` itself (root or CAP_BPF + CAP_PERFMON).
pub struct Local {
    loaded: Loaded,
    sampler: Sampler,
}

impl Local {
    /// Calibrate, load and attach. Fails before any UI is drawn, with the reason.
    pub fn start(thresholds: Thresholds) -> Result<Local> {
        let calibration = calibrate::calibrate();
        let mut loaded = loader::load(&LoadOptions::default())?;
        loader::require_all(&loaded.probes)?;
        let sampler = Sampler::new(&mut loaded, calibration, thresholds)?;
        Ok(Local { loaded, sampler })
    }
}

impl Source for Local {
    fn fetch(&mut self) -> Result<Snapshot> {
        Ok(self.sampler.sample(&self.loaded)?.snapshot)
    }
}

/// A running `copyscope run`, read through its `/api/v1/snapshot`. Needs no privileges.
pub struct Remote {
    url: String,
    agent: ureq::Agent,
}

/// The largest snapshot document accepted from an agent.
const MAX_BODY: u64 = 64 << 20;

impl Remote {
    /// `base` is the agent's address: `http://HOST:PORT` (a path, if any, is kept as the
    /// prefix of `/api/v1/snapshot`).
    pub fn new(base: &str, timeout: Duration) -> Result<Remote> {
        let base = base.trim_end_matches('/');
        let Some(rest) = base.strip_prefix("http://") else {
            if base.starts_with("https://") {
                bail!(
                    "{base:?}: https is not supported by top --from; reach the agent over \
                     http, e.g. through `kubectl port-forward`"
                );
            }
            bail!(
                "{base:?} is not an agent address: give http://HOST:PORT, e.g. http://127.0.0.1:9435"
            );
        };
        if rest.is_empty() || rest.starts_with('/') {
            bail!("{base:?} has no host: give http://HOST:PORT");
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Ok(Remote {
            url: format!("{base}/api/v1/snapshot"),
            agent,
        })
    }
}

impl Source for Remote {
    fn fetch(&mut self) -> Result<Snapshot> {
        let mut resp = self.agent.get(&self.url).call().map_err(|e| match e {
            ureq::Error::Io(io) => anyhow::anyhow!("{}", io),
            e => anyhow::anyhow!("{e}"),
        })?;
        let status = resp.status();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .with_context(|| format!("reading {}", self.url))?;
        if status.as_u16() == 503 {
            bail!("the agent is not ready yet (no window collected)");
        }
        if !status.is_success() {
            bail!("{} answered {status}", self.url);
        }
        parse(&body).with_context(|| format!("{} is not a copyscope snapshot", self.url))
    }
}

/// A snapshot document as the agent serves it.
pub fn parse(body: &str) -> Result<Snapshot> {
    let s: Snapshot = serde_json::from_str(body)?;
    if !(s.duration_seconds.is_finite() && s.duration_seconds >= 0.0) {
        bail!("duration_seconds is {}", s.duration_seconds);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::fixtures;

    #[test]
    fn the_agent_json_reads_back_as_the_same_snapshot() {
        let s = fixtures::snapshot();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(parse(&json).unwrap(), s);
    }

    #[test]
    fn malformed_documents_are_errors_not_panics() {
        for bad in [
            "",
            "{",
            "null",
            "[]",
            r#"{"duration_seconds": "x"}"#,
            r#"{"error":"first collection not done yet"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let mut v = serde_json::to_value(fixtures::snapshot()).unwrap();
        v["duration_seconds"] = serde_json::json!(-1.0);
        assert!(parse(&v.to_string()).is_err());
    }

    #[test]
    fn agent_addresses_are_checked() {
        let t = Duration::from_secs(1);
        assert!(Remote::new("http://127.0.0.1:9435", t).is_ok());
        assert!(Remote::new("http://node:9435/", t).is_ok());
        let e = |s| Remote::new(s, t).err().unwrap().to_string();
        assert!(e("127.0.0.1:9435").contains("http://HOST:PORT"));
        assert!(e("https://x:1").contains("https is not supported"));
        assert!(e("http://").contains("HOST:PORT"));
        assert!(e("http:///x").contains("no host"));
    }
}
