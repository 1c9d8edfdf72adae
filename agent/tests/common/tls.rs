//! Certificates made by openssl for the tests: a CA, and certificates it signs (elliptic
//! curve keys, valid for a day), written into a directory.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA named `cn`: `dir/ca.crt` (its key beside it, `ca.key`).
pub fn ca(dir: &Path, cn: &str) -> PathBuf {
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &EC,
            &["-days", "1", "-subj", &format!("/CN={cn}")],
            &["-keyout", "ca.key", "-out", "ca.crt"],
        ]
        .concat(),
    );
    dir.join("ca.crt")
}

/// A certificate for `cn` signed by the CA in `dir`, for `usage` (serverAuth,
/// clientAuth), with `extra` extension lines (a subjectAltName): `dir/NAME.crt` and
/// `dir/NAME.key`.
pub fn issue(dir: &Path, name: &str, cn: &str, usage: &str, extra: &str) -> (PathBuf, PathBuf) {
    let (key, csr, ext, crt) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
        format!("{name}.crt"),
    );
    openssl(
        dir,
        &[
            &["req"][..],
            &EC,
            &["-subj", &format!("/CN={cn}")],
            &["-keyout", &key, "-out", &csr],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join(&ext),
        format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage={usage}\n{extra}"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ],
    );
    (dir.join(crt), dir.join(key))
}
