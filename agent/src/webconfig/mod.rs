//! `copyscope run --web-config FILE`: TLS, client certificates, basic auth and extra
//! response headers, in the format of the Prometheus exporter-toolkit
//! (docs/web-configuration.md there), so that one file serves node_exporter and copyscope:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: tls.crt          # relative paths are from the file's directory
//!   key_file: tls.key
//!   client_auth_type: RequireAndVerifyClientCert
//!   client_ca_file: ca.crt
//!   min_version: TLS12
//! http_server_config:
//!   headers:
//!     Strict-Transport-Security: max-age=31536000
//! basic_auth_users:
//!   prometheus: $2y$10$...      # bcrypt (htpasswd -nBC 10 prometheus)
//! ```
//!
//! [`parse`] reads the text and checks it without touching a file; [`load`] then reads the
//! certificates and keys it names and builds the TLS configuration. Every mistake is an
//! error at startup naming the file and the key. The server's certificate and key are read
//! again when their files change; the rest of the file is read once, at start.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, Result, anyhow, bail};
use axum::http::{HeaderName, HeaderValue};

mod parse;
#[cfg(test)]
mod tests;
mod tls;

pub use parse::parse;
use tls::server_config;

/// A parsed web configuration (paths as written, not yet read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebConfig {
    pub tls: Option<TlsServerConfig>,
    /// User name -> bcrypt hash (each checked to be one).
    pub basic_auth_users: BTreeMap<String, String>,
    /// Headers added to every response.
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsServerConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_auth: ClientAuth,
    pub client_ca_file: Option<PathBuf>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
}

/// The exporter-toolkit's `client_auth_type`s that verify what they get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "TLS12",
            TlsVersion::Tls13 => "TLS13",
        })
    }
}

/// The response headers the exporter-toolkit lets a web configuration set.
pub const HEADERS: [&str; 5] = [
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

/// The highest bcrypt cost accepted: each step doubles the time to check a password
/// (cost 14 is about a second of one core here), and every request with a password pays
/// it.
pub const MAX_BCRYPT_COST: u32 = 14;

/// The largest file a web configuration, certificate, key or CA bundle may be.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// A web configuration file, or a file it names: a regular file of at most
/// [`MAX_FILE_BYTES`]. Opened without blocking (a FIFO cannot hang start-up) and checked on
/// the open file, so that a device such as /dev/zero is refused instead of read forever.
pub fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        bail!("not a regular file");
    }
    if meta.len() > MAX_FILE_BYTES {
        bail!(
            "{} bytes, more than the {} a certificate, key or web configuration may be",
            meta.len(),
            MAX_FILE_BYTES
        );
    }
    let mut buf = Vec::new();
    f.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        bail!("it grew past {MAX_FILE_BYTES} bytes while being read");
    }
    Ok(buf)
}

/// What `copyscope run` serves with: the web configuration with its files read.
pub struct Loaded {
    /// The file, for messages.
    pub path: PathBuf,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub client_auth: ClientAuth,
    pub basic_auth_users: BTreeMap<String, String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Neither TLS nor basic auth is configured (an empty file, or headers only): the
    /// server is as open as without a web configuration.
    pub empty: bool,
}

/// Read and check `path`, then the certificates and keys it names (relative paths from
/// its directory).
pub fn load(path: &Path) -> Result<Loaded> {
    let what = || format!("web config {}", path.display());
    let text = String::from_utf8(read_bounded(path).with_context(what)?)
        .map_err(|_| anyhow!("not UTF-8 text"))
        .with_context(what)?;
    let config = parse(&text).with_context(what)?;
    let empty = config.tls.is_none() && config.basic_auth_users.is_empty();
    let dir = path.parent().unwrap_or(Path::new("."));
    let tls = config
        .tls
        .as_ref()
        .map(|t| server_config(t, dir))
        .transpose()
        .with_context(what)?;
    let headers = config
        .headers
        .iter()
        .map(|(k, v)| {
            Ok((
                HeaderName::from_bytes(k.as_bytes())?,
                HeaderValue::from_str(v)?,
            ))
        })
        .collect::<Result<_>>()
        .with_context(what)?;
    Ok(Loaded {
        path: path.to_path_buf(),
        client_auth: config
            .tls
            .as_ref()
            .map_or(ClientAuth::NoClientCert, |t| t.client_auth),
        tls,
        basic_auth_users: config.basic_auth_users,
        headers,
        empty,
    })
}
