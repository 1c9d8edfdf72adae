//! The web configuration file of `copyscope run --web-config` (copyscope::webconfig::parse).
#![no_main]

use std::collections::HashSet;

use copyscope::webconfig::{ClientAuth, HEADERS, parse};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

fuzz_target!(|data: &[u8]| {
    // webconfig::load reads the file with read_to_string.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = parse(text) else {
        return;
    };
    let mut doc = Map::new();
    if let Some(t) = &config.tls {
        assert!(!t.cert_file.as_os_str().is_empty() && !t.key_file.as_os_str().is_empty());
        assert!(t.min_version <= t.max_version, "{t:?}");
        // A client CA exactly when client certificates are verified.
        assert_eq!(
            t.client_auth == ClientAuth::NoClientCert,
            t.client_ca_file.is_none(),
            "{t:?}"
        );
        let path = |p: &std::path::Path| p.to_str().expect("paths come from UTF-8").to_owned();
        let mut tls = json!({
            "cert_file": path(&t.cert_file),
            "key_file": path(&t.key_file),
            "client_auth_type": format!("{:?}", t.client_auth),
            "min_version": t.min_version.to_string(),
            "max_version": t.max_version.to_string(),
        });
        if let Some(ca) = &t.client_ca_file {
            tls["client_ca_file"] = path(ca).into();
        }
        doc.insert("tls_server_config".into(), tls);
    }
    for (name, value) in &config.headers {
        assert!(HEADERS.contains(&name.as_str()), "{name:?}");
        assert!(
            value
                .bytes()
                .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
            "{value:?}"
        );
    }
    for hash in config.basic_auth_users.values() {
        assert!(hash.starts_with("$2") && hash.len() == 60, "{hash:?}");
    }
    // Written back as YAML (a header named twice, in two spellings, cannot be), it reads
    // back the same.
    let names: HashSet<&str> = config.headers.iter().map(|(n, _)| n.as_str()).collect();
    if names.len() != config.headers.len() {
        return;
    }
    if !config.headers.is_empty() {
        let headers: Map<String, Value> = config
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.clone().into()))
            .collect();
        doc.insert("http_server_config".into(), json!({ "headers": headers }));
    }
    if !config.basic_auth_users.is_empty() {
        doc.insert("basic_auth_users".into(), json!(config.basic_auth_users));
    }
    let yaml = serde_norway::to_string(&doc).expect("a map serialises");
    let mut again = parse(&yaml).expect("its own YAML parses");
    // Headers come in the order of the names as written; compare them as a set.
    let mut config = config;
    config.headers.sort();
    again.headers.sort();
    assert_eq!(again, config, "{yaml}");
});
