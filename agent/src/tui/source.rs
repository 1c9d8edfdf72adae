//! Where `top` gets its windows: probes it attached itself, or a running agent over HTTP.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};

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

/// How `top --from` reaches an agent whose HTTP server has a web configuration
/// (`copyscope run --web-config`): the CA its certificate is signed by, a client
/// certificate, and basic auth credentials.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientArgs {
    /// CA certificates (PEM) the agent's certificate must be signed by (https URLs)
    /// [default: the Mozilla roots].
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    /// Client certificate (PEM, with its chain) for an agent that asks for one
    /// (client_auth_type in its web configuration); with --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,

    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,

    /// User for the agent's basic auth (basic_auth_users); the password comes from
    /// --password-file or the environment variable COPYSCOPE_PASSWORD.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// File whose first line is the password of --user.
    #[arg(long, value_name = "FILE", requires = "user")]
    pub password_file: Option<PathBuf>,
}

/// The environment variable `top --from` takes the password of `--user` from when no
/// `--password-file` is given.
pub const PASSWORD_ENV: &str = "COPYSCOPE_PASSWORD";

impl ClientArgs {
    /// The password of `--user`: the password file's first line, else `COPYSCOPE_PASSWORD`.
    fn password(&self, env: Option<String>) -> Result<Option<String>> {
        let Some(user) = &self.user else {
            return Ok(None);
        };
        if user.is_empty() || user.contains(':') {
            bail!("--user {user:?}: a basic auth user name is not empty and has no ':'");
        }
        if let Some(f) = &self.password_file {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading the password file {}", f.display()))?;
            let line = text.lines().next().unwrap_or("");
            if line.is_empty() {
                bail!(
                    "the password file {} is empty: its first line is the password of {user}",
                    f.display()
                );
            }
            return Ok(Some(line.to_string()));
        }
        match env {
            Some(p) if !p.is_empty() => Ok(Some(p)),
            _ => bail!(
                "--user {user} needs its password: --password-file FILE, or the environment \
                 variable {PASSWORD_ENV} (never a flag: flags show in ps)"
            ),
        }
    }

    /// Any of these options given.
    pub fn touched(&self) -> bool {
        self.cacert.is_some() || self.cert.is_some() || self.user.is_some()
    }

    fn tls_wanted(&self) -> Option<&'static str> {
        if self.cacert.is_some() {
            Some("--cacert")
        } else if self.cert.is_some() {
            Some("--cert")
        } else {
            None
        }
    }
}

/// Every PEM certificate in `path`; an error naming the file when there is none.
fn certificates(path: &Path, what: &str) -> Result<Vec<ureq::tls::Certificate<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        bail!("{what} {} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// The client certificate of `--cert` and `--key`, checked to be a pair.
fn client_cert(cert: &Path, key: &Path) -> Result<ureq::tls::ClientCert> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let chain = certificates(cert, "the client certificate (--cert)")?;
    let pem = std::fs::read(key)
        .with_context(|| format!("reading the client key (--key) {}", key.display()))?;
    let private = ureq::tls::PrivateKey::from_pem(&pem).map_err(|e| {
        anyhow!(
            "the client key (--key) {} holds no PEM private key: {e}",
            key.display()
        )
    })?;
    // The handshake would only fail later, with less to go on.
    let der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| anyhow!("the client key (--key) {}: {e}", key.display()))?;
    rustls::sign::CertifiedKey::from_der(
        chain
            .iter()
            .map(|c| CertificateDer::from(c.der().to_vec()))
            .collect(),
        der,
        &rustls::crypto::ring::default_provider(),
    )
    .map_err(|e| {
        anyhow!(
            "--cert {} and --key {} are not a certificate and its key: {e}",
            cert.display(),
            key.display()
        )
    })?;
    Ok(ureq::tls::ClientCert::new_with_certs(&chain, private))
}

/// A running `copyscope run`, read through its `/api/v1/snapshot`. Needs no privileges.
pub struct Remote {
    url: String,
    agent: ureq::Agent,
    /// The Authorization header of basic auth, and the user's name.
    auth: Option<(String, String)>,
}

/// The largest snapshot document accepted from an agent.
const MAX_BODY: u64 = 64 << 20;

impl Remote {
    /// `base` is the agent's address: `http://HOST:PORT` or `https://HOST:PORT` (a path,
    /// if any, is kept as the prefix of `/api/v1/snapshot`).
    pub fn new(base: &str, timeout: Duration, client: &ClientArgs) -> Result<Remote> {
        Remote::with_env(base, timeout, client, std::env::var(PASSWORD_ENV).ok())
    }

    fn with_env(
        base: &str,
        timeout: Duration,
        client: &ClientArgs,
        password_env: Option<String>,
    ) -> Result<Remote> {
        let base = base.trim_end_matches('/');
        let (https, rest) = if let Some(rest) = base.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = base.strip_prefix("https://") {
            (true, rest)
        } else {
            bail!(
                "{base:?} is not an agent address: give http://HOST:PORT or \
                 https://HOST:PORT, e.g. http://127.0.0.1:9435"
            );
        };
        if rest.is_empty() || rest.starts_with('/') {
            bail!("{base:?} has no host: give http://HOST:PORT or https://HOST:PORT");
        }
        if let (false, Some(flag)) = (https, client.tls_wanted()) {
            bail!("{flag} is for an agent served over TLS: give its https:// URL, not {base:?}");
        }
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("copyscope/", env!("CARGO_PKG_VERSION")));
        if https {
            let mut tls = ureq::tls::TlsConfig::builder();
            if let Some(ca) = &client.cacert {
                let certs = certificates(ca, "the CA file (--cacert)")?;
                tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
            }
            if let (Some(cert), Some(key)) = (&client.cert, &client.key) {
                tls = tls.client_cert(Some(client_cert(cert, key)?));
            }
            config = config.tls_config(tls.build());
        }
        let auth = match client.password(password_env)? {
            Some(password) => {
                use base64::Engine as _;
                let user = client.user.clone().unwrap_or_default();
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                Some((format!("Basic {token}"), user))
            }
            None => None,
        };
        Ok(Remote {
            url: format!("{base}/api/v1/snapshot"),
            agent: config.build().into(),
            auth,
        })
    }
}

/// What went wrong reaching the agent, in words that say what to give `top`.
fn explain(e: ureq::Error) -> anyhow::Error {
    let tls = match &e {
        ureq::Error::Rustls(t) => Some(t.clone()),
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|i| i.downcast_ref::<rustls::Error>())
            .cloned(),
        _ => None,
    };
    match tls {
        Some(rustls::Error::InvalidCertificate(why)) => {
            anyhow!("the agent's certificate is not trusted ({why:?}): give its CA, --cacert FILE")
        }
        Some(rustls::Error::AlertReceived(
            alert @ (rustls::AlertDescription::CertificateRequired
            | rustls::AlertDescription::HandshakeFailure
            | rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA),
        )) => anyhow!(
            "the agent wants a client certificate its CA signed: --cert FILE --key FILE \
             ({alert:?})"
        ),
        Some(t) => anyhow!("TLS: {t}"),
        None => match e {
            ureq::Error::Io(io) => anyhow!("{io}"),
            e => anyhow!("{e}"),
        },
    }
}

impl Source for Remote {
    fn fetch(&mut self) -> Result<Snapshot> {
        let mut req = self.agent.get(&self.url);
        if let Some((header, _)) = &self.auth {
            req = req.header("Authorization", header);
        }
        let mut resp = req.call().map_err(explain)?;
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
        if status.as_u16() == 401 {
            match &self.auth {
                Some((_, user)) => bail!(
                    "the password of {user} was refused (401 Unauthorized): check \
                     --password-file or {PASSWORD_ENV}"
                ),
                None => bail!(
                    "basic auth required (401 Unauthorized): --user NAME, --password-file \
                     FILE or {PASSWORD_ENV}"
                ),
            }
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

    /// agent/tests/fixtures/snapshot.json is what an agent would serve for the fixture
    /// window (`top --from` is tested end to end against it, with no probes loaded);
    /// `COPYSCOPE_BLESS=1` rewrites it.
    #[test]
    fn the_snapshot_file_of_the_end_to_end_tests_is_the_fixture_window() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/snapshot.json");
        let json = serde_json::to_string_pretty(&fixtures::snapshot()).unwrap() + "\n";
        if std::env::var_os("COPYSCOPE_BLESS").is_some() {
            std::fs::write(path, &json).unwrap();
        }
        let stored = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{path}: {e} (COPYSCOPE_BLESS=1 writes it)"));
        assert_eq!(parse(&stored).unwrap(), fixtures::snapshot(), "{path}");
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

    const T: Duration = Duration::from_secs(1);

    fn remote(url: &str, c: &ClientArgs, env: Option<&str>) -> Result<Remote> {
        Remote::with_env(url, T, c, env.map(str::to_string))
    }

    /// The whole chain of an error, as `top` prints it.
    fn error(r: Result<Remote>) -> String {
        format!("{:#}", r.err().expect("an error"))
    }

    #[test]
    fn agent_addresses_are_checked() {
        let none = ClientArgs::default();
        assert!(remote("http://127.0.0.1:9435", &none, None).is_ok());
        assert!(remote("http://node:9435/", &none, None).is_ok());
        assert!(remote("https://node:9435", &none, None).is_ok());
        let e = |s| error(remote(s, &none, None));
        assert!(e("127.0.0.1:9435").contains("http://HOST:PORT"));
        assert!(e("ftp://x:1").contains("https://HOST:PORT"));
        assert!(e("http://").contains("HOST:PORT"));
        assert!(e("https:///x").contains("no host"));
    }

    #[test]
    fn tls_files_are_read_at_start_and_named_when_wrong() {
        let dir = std::env::temp_dir().join(format!("copyscope-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = ClientArgs {
            cacert: Some(dir.join("no-such-ca.crt")),
            ..Default::default()
        };
        let e = error(remote("https://x:1", &missing, None));
        assert!(
            e.contains("reading the CA file (--cacert)") && e.contains("no-such-ca.crt"),
            "{e}"
        );
        // TLS options with a plain-HTTP address: a mistake, said at once.
        let e = error(remote("http://x:1", &missing, None));
        assert!(
            e.contains("--cacert is for an agent served over TLS"),
            "{e}"
        );
        let not_pem = dir.join("not-pem.crt");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let e = error(remote(
            "https://x:1",
            &ClientArgs {
                cacert: Some(not_pem.clone()),
                ..Default::default()
            },
            None,
        ));
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let e = error(remote(
            "https://x:1",
            &ClientArgs {
                cert: Some(dir.join("no-such-client.crt")),
                key: Some(not_pem),
                ..Default::default()
            },
            None,
        ));
        assert!(e.contains("reading the client certificate (--cert)"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_password_comes_from_its_file_or_the_environment_and_never_goes_missing_silently() {
        let dir = std::env::temp_dir().join(format!("copyscope-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "s3cret\nignored\n").unwrap();
        let user = |password_file: Option<PathBuf>| ClientArgs {
            user: Some("prometheus".into()),
            password_file,
            ..Default::default()
        };
        // The file wins over the environment; its first line, without the newline.
        let r = remote("http://x:1", &user(Some(file.clone())), Some("env")).unwrap();
        // "prometheus:s3cret"
        assert_eq!(r.auth.unwrap().0, "Basic cHJvbWV0aGV1czpzM2NyZXQ=",);
        let r = remote("http://x:1", &user(None), Some("env")).unwrap();
        assert_eq!(r.auth.unwrap().0, "Basic cHJvbWV0aGV1czplbnY=");
        let e = error(remote("http://x:1", &user(None), None));
        assert!(
            e.contains("--password-file FILE") && e.contains(PASSWORD_ENV),
            "{e}"
        );
        let e = error(remote("http://x:1", &user(Some(dir.join("nope"))), None));
        assert!(e.contains("reading the password file"), "{e}");
        std::fs::write(&file, "\n").unwrap();
        let e = error(remote("http://x:1", &user(Some(file)), None));
        assert!(e.contains("is empty"), "{e}");
        // No user: the environment is not looked at, no header is sent.
        let r = remote("http://x:1", &ClientArgs::default(), Some("env")).unwrap();
        assert!(r.auth.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
