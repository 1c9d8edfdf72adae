//! Tests of the parsing and checks of a web configuration, and of the bounded reads.

use super::{parse::check_bcrypt, *};

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
