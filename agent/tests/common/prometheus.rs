//! A real Prometheus (the Debian package) in a test: started on a free port of 127.0.0.1
//! with a configuration of the test's, asked through its HTTP API, stopped when dropped.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use super::agent::{Guard, free_port, get, wait_for};

pub struct Prometheus {
    _child: Guard,
    /// host:port of its HTTP API.
    pub addr: String,
}

impl Prometheus {
    /// `prometheus` with `config` (prometheus.yml text), its data and log in `dir`, once
    /// it is ready.
    pub fn start(dir: &Path, config: &str) -> Prometheus {
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("starting prometheus");
        let p = Prometheus {
            _child: Guard(child),
            addr: format!("127.0.0.1:{port}"),
        };
        wait_for(Duration::from_secs(60), "Prometheus to be ready", || {
            get(&p.addr, "/-/ready").ok().filter(|(s, _)| *s == 200)
        });
        p
    }

    /// GET an API path (with its query string): the answer's `data`, or Prometheus's
    /// error, or why there was no answer.
    pub fn api(&self, path: &str) -> Result<Value, String> {
        let (status, body) = get(&self.addr, path).map_err(|e| format!("GET {path}: {e}"))?;
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| format!("GET {path}: {status}, not JSON ({e}): {body}"))?;
        if v["status"] != "success" {
            return Err(format!(
                "GET {path}: {status} {}: {}",
                v["errorType"], v["error"]
            ));
        }
        Ok(v["data"].clone())
    }

    /// An instant query's result vector; None while Prometheus cannot answer it.
    pub fn query(&self, q: &str) -> Option<Vec<Value>> {
        self.try_query(q).ok()
    }

    /// An instant query's result vector, or the error.
    pub fn try_query(&self, q: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", urlencode(q)))?;
        data["result"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("{q}: the result is not a vector: {data}"))
    }
}

/// Percent-encoding for a query-string value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_-.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
