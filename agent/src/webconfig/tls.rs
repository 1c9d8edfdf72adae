//! The TLS configuration: certificates and keys read, checked and reloaded when their
//! files change.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, anyhow};
use rustls::{
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use super::{ClientAuth, TlsServerConfig, TlsVersion, read_bounded};

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

pub(super) fn server_config(t: &TlsServerConfig, dir: &Path) -> Result<Arc<rustls::ServerConfig>> {
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
