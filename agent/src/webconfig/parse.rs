//! Parsing and checking a web configuration's text, without reading the files it names.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use axum::http::HeaderValue;
use serde::Deserialize;

use super::{ClientAuth, HEADERS, MAX_BCRYPT_COST, TlsServerConfig, TlsVersion, WebConfig};

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
/// [`load`](super::load).
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
pub(super) fn check_bcrypt(hash: &str) -> Result<()> {
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
