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
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, anyhow, bail};
use axum::http::{HeaderName, HeaderValue};
use rustls::{
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use serde::Deserialize;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "web configuration")]
struct Raw {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, Option<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "tls_server_config")]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    // The exporter-toolkit's other keys: named, so that the error says they are not
    // supported rather than unknown.
    cert: Option<serde_norway::Value>,
    key: Option<serde_norway::Value>,
    client_ca: Option<serde_norway::Value>,
    cipher_suites: Option<serde_norway::Value>,
    curve_preferences: Option<serde_norway::Value>,
    prefer_server_cipher_suites: Option<serde_norway::Value>,
    client_allowed_sans: Option<serde_norway::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "http_server_config")]
struct RawHttp {
    headers: Option<BTreeMap<String, String>>,
    http2: Option<bool>,
}

/// Parse and check a web configuration's text. Pure: the files it names are read by
/// [`load`].
pub fn parse(text: &str) -> Result<WebConfig> {
    // An empty file (or one of comments only) is the empty configuration, as in the
    // exporter-toolkit: plain HTTP, no authentication.
    let raw: Option<Raw> = serde_norway::from_str(text).map_err(|e| anyhow!("{e}"))?;
    let Some(raw) = raw else {
        return Ok(WebConfig::default());
    };
    let tls = raw.tls_server_config.map(tls_config).transpose()?;
    let mut headers = Vec::new();
    if let Some(http) = raw.http_server_config {
        if http.http2 == Some(true) {
            bail!(
                "http_server_config.http2: copyscope serves HTTP/1.1 only; set it to false or remove it"
            );
        }
        for (name, value) in http.headers.unwrap_or_default() {
            let Some(known) = HEADERS.iter().find(|h| h.eq_ignore_ascii_case(&name)) else {
                bail!(
                    "http_server_config.headers.{name}: not a header a web configuration may set (one of {})",
                    HEADERS.join(", ")
                );
            };
            if HeaderValue::from_str(&value).is_err() {
                bail!("http_server_config.headers.{name}: {value:?} is not a valid header value");
            }
            let lower = value.to_ascii_lowercase();
            if *known == "X-Content-Type-Options" && lower != "nosniff" {
                bail!("http_server_config.headers.{name}: must be nosniff, not {value:?}");
            }
            if *known == "X-Frame-Options" && lower != "deny" && lower != "sameorigin" {
                bail!(
                    "http_server_config.headers.{name}: must be deny or sameorigin, not {value:?}"
                );
            }
            if headers.iter().any(|(n, _)| n == known) {
                bail!(
                    "http_server_config.headers.{name}: {known} is given twice (header names are case-insensitive)"
                );
            }
            headers.push((known.to_string(), value));
        }
    }
    let mut basic_auth_users = BTreeMap::new();
    for (user, hash) in raw.basic_auth_users.unwrap_or_default() {
        let hash = hash.unwrap_or_default();
        check_bcrypt(&hash).with_context(|| format!("basic_auth_users.{user}"))?;
        basic_auth_users.insert(user, hash);
    }
    Ok(WebConfig {
        tls,
        basic_auth_users,
        headers,
    })
}

fn tls_config(t: RawTls) -> Result<TlsServerConfig> {
    for (key, given) in [
        ("cert", t.cert.is_some()),
        ("key", t.key.is_some()),
        ("client_ca", t.client_ca.is_some()),
        ("cipher_suites", t.cipher_suites.is_some()),
        ("curve_preferences", t.curve_preferences.is_some()),
        (
            "prefer_server_cipher_suites",
            t.prefer_server_cipher_suites.is_some(),
        ),
        ("client_allowed_sans", t.client_allowed_sans.is_some()),
    ] {
        if given {
            bail!(
                "tls_server_config.{key}: not supported by copyscope (it supports cert_file, key_file, \
client_auth_type, client_ca_file, min_version and max_version)"
            );
        }
    }
    let path = |key: &str, v: Option<String>| -> Result<PathBuf> {
        match v {
            Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
            _ => bail!(
                "tls_server_config.{key}: missing (a PEM file, relative to the web config's directory or absolute)"
            ),
        }
    };
    let cert_file = path("cert_file", t.cert_file)?;
    let key_file = path("key_file", t.key_file)?;
    let client_ca_file = t
        .client_ca_file
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let client_auth = match t.client_auth_type.as_deref().unwrap_or("NoClientCert") {
        "" | "NoClientCert" => ClientAuth::NoClientCert,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
        a @ ("RequestClientCert" | "RequireAnyClientCert") => bail!(
            "tls_server_config.client_auth_type: {a} (a client certificate that is not verified) \
is not supported: use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file"
        ),
        other => bail!(
            "tls_server_config.client_auth_type: {other:?} is not one of NoClientCert, \
VerifyClientCertIfGiven, RequireAndVerifyClientCert"
        ),
    };
    match (client_auth, &client_ca_file) {
        (ClientAuth::NoClientCert, Some(_)) => bail!(
            "tls_server_config.client_ca_file: given without a client_auth_type that verifies client \
certificates (VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
        ),
        (ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert, None) => {
            bail!(
                "tls_server_config.client_ca_file: missing: client_auth_type {client_auth:?} needs the CA \
certificates that sign the clients' certificates"
            )
        }
        _ => {}
    }
    let version = |key: &str, v: Option<String>, default: TlsVersion| -> Result<TlsVersion> {
        match v.as_deref() {
            None | Some("") => Ok(default),
            Some("TLS12") => Ok(TlsVersion::Tls12),
            Some("TLS13") => Ok(TlsVersion::Tls13),
            Some(o @ ("TLS10" | "TLS11")) => bail!(
                "tls_server_config.{key}: {o} is not supported (copyscope speaks TLS 1.2 and 1.3): use TLS12 or TLS13"
            ),
            Some(o) => bail!("tls_server_config.{key}: {o:?} is not one of TLS12, TLS13"),
        }
    };
    let min_version = version("min_version", t.min_version, TlsVersion::Tls12)?;
    let max_version = version("max_version", t.max_version, TlsVersion::Tls13)?;
    if min_version > max_version {
        bail!("tls_server_config: min_version {min_version} is above max_version {max_version}");
    }
    Ok(TlsServerConfig {
        cert_file,
        key_file,
        client_auth,
        client_ca_file,
        min_version,
        max_version,
    })
}

/// A bcrypt hash as htpasswd -B writes it: $2y$CC$ and 53 characters of bcrypt's base64.
fn check_bcrypt(hash: &str) -> Result<()> {
    const WHAT: &str =
        "not a bcrypt hash (make one with `htpasswd -nBC 10 USER`, which prints USER:HASH)";
    let parts: bcrypt::HashParts = hash.parse().map_err(|e| anyhow!("{WHAT}: {e}"))?;
    let cost = parts.get_cost();
    if cost < 4 {
        bail!("{WHAT}: cost {cost} is below bcrypt's minimum, 4");
    }
    if cost > MAX_BCRYPT_COST {
        bail!(
            "cost {cost} is above {MAX_BCRYPT_COST}: every request with a password would take \
             from about a second (cost 14) to days (cost 31) of CPU to check; make the hash again \
             with `htpasswd -nBC 10 USER`"
        );
    }
    Ok(())
}

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

/// PEM certificates from `file` (`key` names it in messages).
fn read_certs(key: &str, file: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let ctx = || format!("tls_server_config.{key} {}", file.display());
    let pem = read_bounded(file).with_context(ctx)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("not PEM certificates: {e}"))
        .with_context(ctx)?;
    if certs.is_empty() {
        return Err(anyhow!("no PEM certificate (BEGIN CERTIFICATE) in it")).with_context(ctx);
    }
    Ok(certs)
}

/// The server's certificate chain and key, checked to belong together.
fn read_certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey> {
    let chain = read_certs("cert_file", cert_file)?;
    let key_ctx = || format!("tls_server_config.key_file {}", key_file.display());
    let pem = read_bounded(key_file).with_context(key_ctx)?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| {
            anyhow!(
                "no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) in it: {e}"
            )
        })
        .with_context(key_ctx)?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| {
            format!(
                "tls_server_config.cert_file {} and key_file {} (do they belong together?)",
                cert_file.display(),
                key_file.display()
            )
        })
}

/// How often a handshake may look at the certificate and key files for new ones.
const RELOAD_CHECK: Duration = Duration::from_secs(10);

/// The server certificate, read again when its files change (a renewal by cert-manager,
/// or a Secret updated in place), as the exporter-toolkit does. A new pair that does not
/// load leaves the old one in use, with a warning.
#[derive(Debug)]
struct Reloading {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Mutex<Current>,
}

#[derive(Debug)]
struct Current {
    checked: Instant,
    modified: Option<(SystemTime, SystemTime)>,
    key: Arc<CertifiedKey>,
}

impl Reloading {
    fn modified(&self) -> Option<(SystemTime, SystemTime)> {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((m(&self.cert_file)?, m(&self.key_file)?))
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut c = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if c.checked.elapsed() >= RELOAD_CHECK {
            c.checked = Instant::now();
            let modified = self.modified();
            if modified.is_some() && modified != c.modified {
                match read_certified_key(&self.cert_file, &self.key_file, &self.provider) {
                    Ok(k) => {
                        log::info!("new TLS certificate from {}", self.cert_file.display());
                        c.key = Arc::new(k);
                        c.modified = modified;
                    }
                    Err(e) => log::warn!("keeping the TLS certificate in use: {e:#}"),
                }
            }
        }
        Some(c.key.clone())
    }
}

fn server_config(t: &TlsServerConfig, dir: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (cert_file, key_file) = (dir.join(&t.cert_file), dir.join(&t.key_file));
    let key = Arc::new(read_certified_key(&cert_file, &key_file, &provider)?);
    let mut resolver = Reloading {
        cert_file,
        key_file,
        provider: provider.clone(),
        current: Mutex::new(Current {
            checked: Instant::now(),
            modified: None,
            key,
        }),
    };
    resolver.current.get_mut().unwrap().modified = resolver.modified();
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (t.min_version..=t.max_version).contains(v))
    .map(|(_, p)| p)
    .collect();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .context("tls_server_config: min_version and max_version")?;
    let builder = match (t.client_auth, &t.client_ca_file) {
        (ClientAuth::NoClientCert, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca)) => {
            let ca = dir.join(ca);
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs("client_ca_file", &ca)? {
                roots
                    .add(c)
                    .map_err(|e| anyhow!("a CA certificate rustls cannot use: {e}"))
                    .with_context(|| {
                        format!("tls_server_config.client_ca_file {}", ca.display())
                    })?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let v = if auth == ClientAuth::VerifyClientCertIfGiven {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(
                v.build()
                    .context("tls_server_config.client_ca_file: the client verifier")?,
            )
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    // bcrypt::hash("secret", 4)
    const HASH: &str = "$2b$04$MMhxL2yyk289TUrJ.UPf5uRPQ1/4LAnxQWMhaXjixHDTRyO4BL2DG";

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn an_empty_file_is_plain_http_without_auth() {
        assert_eq!(parse("").unwrap(), WebConfig::default());
        assert_eq!(parse("# nothing\n").unwrap(), WebConfig::default());
        assert_eq!(parse("{}").unwrap(), WebConfig::default());
    }

    #[test]
    fn reads_the_exporter_toolkit_format() {
        let c = parse(&format!(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: /etc/k/tls.key\n  \
client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS13\n\
http_server_config:\n  headers:\n    x-frame-options: deny\n\
basic_auth_users:\n  prometheus: {HASH}\n"
        ))
        .unwrap();
        let t = c.tls.unwrap();
        assert_eq!(t.cert_file, Path::new("tls.crt"));
        assert_eq!(t.key_file, Path::new("/etc/k/tls.key"));
        assert_eq!(t.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(t.client_ca_file.as_deref(), Some(Path::new("ca.crt")));
        assert_eq!(
            (t.min_version, t.max_version),
            (TlsVersion::Tls13, TlsVersion::Tls13)
        );
        assert_eq!(c.headers, [("X-Frame-Options".into(), "deny".into())]);
        assert_eq!(c.basic_auth_users["prometheus"], HASH);
    }

    #[test]
    fn tls_defaults_to_tls12_and_no_client_certificate() {
        let t = parse("tls_server_config:\n  cert_file: a\n  key_file: b\n")
            .unwrap()
            .tls
            .unwrap();
        assert_eq!(t.client_auth, ClientAuth::NoClientCert);
        assert_eq!(
            (t.min_version, t.max_version),
            (TlsVersion::Tls12, TlsVersion::Tls13)
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err("tls_server_config:\n  cert_file: a\n  key_file: b\n  certfile: c\n");
        assert!(
            e.contains("tls_server_config") && e.contains("certfile"),
            "{e}"
        );
        let e = err("basic_auth:\n  a: b\n");
        assert!(e.contains("basic_auth"), "{e}");
        let e = err("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [X]\n");
        assert!(
            e.contains("tls_server_config.cipher_suites: not supported"),
            "{e}"
        );
    }

    #[test]
    fn mistakes_are_errors_naming_the_key() {
        for (text, want) in [
            (
                "tls_server_config:\n  key_file: b\n",
                "tls_server_config.cert_file: missing",
            ),
            (
                "tls_server_config:\n  cert_file: a\n",
                "tls_server_config.key_file: missing",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
                "tls_server_config.client_ca_file: missing",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n",
                "tls_server_config.client_ca_file: given without",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Maybe\n",
                "tls_server_config.client_auth_type: \"Maybe\"",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n",
                "RequireAnyClientCert (a client certificate that is not verified) is not supported",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n",
                "tls_server_config.min_version: TLS10 is not supported",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n",
                "min_version TLS13 is above max_version TLS12",
            ),
            (
                "basic_auth_users:\n  alice: secret\n",
                "basic_auth_users.alice: not a bcrypt hash",
            ),
            (
                "basic_auth_users:\n  alice:\n",
                "basic_auth_users.alice: not a bcrypt hash",
            ),
            (
                "http_server_config:\n  headers:\n    Server: copyscope\n",
                "http_server_config.headers.Server: not a header",
            ),
            (
                "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
                "must be nosniff",
            ),
            ("http_server_config:\n  http2: true\n", "HTTP/1.1 only"),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    x-frame-options: deny\n",
                "X-Frame-Options is given twice",
            ),
        ] {
            let e = err(text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
        // A wrong type and plain garbage are errors too, not panics.
        assert!(err("tls_server_config: 3\n").contains("tls_server_config"));
        assert!(!err("[").is_empty());
        assert!(!err("- a\n- b\n").is_empty());
    }

    #[test]
    fn bcrypt_hashes_are_checked_without_hashing() {
        assert!(check_bcrypt(HASH).is_ok());
        for bad in [
            "",
            "$2y$04$short",
            "$1$04$MMhxL2yyk289TUrJ.UPf5uRPQ1/4LAnxQWMhaXjixHDTRyO4BL2DG",
            "$2b$99$MMhxL2yyk289TUrJ.UPf5uRPQ1/4LAnxQWMhaXjixHDTRyO4BL2DG",
            "$2b$04$MMhxL2yyk289TUrJ.UPf5uRPQ1/4LAnxQWMhaXjixHDTRyO4BL2D\u{e9}",
        ] {
            assert!(check_bcrypt(bad).is_err(), "{bad:?}");
        }
        assert!(bcrypt::verify("secret", HASH).unwrap());
    }

    #[test]
    fn costs_above_the_maximum_are_refused_with_a_reason() {
        let at = |cost: u32| HASH.replacen("$04$", &format!("${cost:02}$"), 1);
        assert!(check_bcrypt(&at(MAX_BCRYPT_COST)).is_ok());
        for cost in [MAX_BCRYPT_COST + 1, 31] {
            let e = format!("{:#}", check_bcrypt(&at(cost)).unwrap_err());
            assert!(
                e.contains(&format!("cost {cost} is above {MAX_BCRYPT_COST}"))
                    && e.contains("htpasswd -nBC 10"),
                "{e}"
            );
        }
    }

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = std::env::temp_dir().join(format!("copyscope-webconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let small = dir.join("small.pem");
        std::fs::write(&small, b"text").unwrap();
        assert_eq!(read_bounded(&small).unwrap(), b"text");
        let big = dir.join("big.pem");
        std::fs::write(&big, vec![b'a'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let e = format!("{:#}", read_bounded(&big).unwrap_err());
        assert!(e.contains("more than the 1048576"), "{e}");
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for p in [Path::new("/dev/zero"), &fifo, &dir] {
            let e = format!("{:#}", read_bounded(p).unwrap_err());
            assert!(e.contains("not a regular file"), "{}: {e}", p.display());
        }
        // The same through load(): a web config naming /dev/zero as its certificate.
        let config = dir.join("web.yml");
        std::fs::write(
            &config,
            "tls_server_config:\n  cert_file: /dev/zero\n  key_file: /dev/zero\n",
        )
        .unwrap();
        let e = format!("{:#}", load(&config).err().unwrap());
        assert!(
            e.contains("/dev/zero") && e.contains("not a regular file"),
            "{e}"
        );
        std::fs::write(&config, "").unwrap();
        assert!(load(&config).unwrap().empty);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
