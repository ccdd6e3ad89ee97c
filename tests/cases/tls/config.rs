//! Certificate problems are configuration errors that name the file (all of them in
//! one pass), and `portcullis check` resolves certificate paths against the
//! configuration file. The text of the configuration is the subject here: it stays
//! literal, and the errors' locations in it are asserted.

use std::path::Path;

use portcullis::Config;

use crate::support::pki::{quoted, Pki};

const BINARY: &str = env!("CARGO_BIN_EXE_portcullis");

/// A listener `tls` flow mapping with one certificate and `extra` entries.
fn single(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "{{ certificate: {}, private_key: {}{extra} }}",
        quoted(cert),
        quoted(key)
    )
}

fn tls_config_text(tls: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    address: 127.0.0.1:8443\n    tls: {tls}\nupstreams:\n  app: {{ endpoints: [\"http://127.0.0.1:9000\"] }}\nroutes:\n  - {{ name: app, match: {{ path_prefix: / }}, upstream: app }}\n"
    )
}

fn config_errors(text: &str) -> String {
    match Config::from_yaml(text, "gw.yaml") {
        Ok(_) => panic!("expected configuration errors for:\n{text}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn certificate_problems_are_config_errors_naming_the_file() {
    let pki = Pki::new("Test CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let (_, other_key) = pki.write("other", &pki.issue(&["other.example.com"]));
    let missing = pki.path("missing.pem");
    let truncated = pki.path("truncated.pem");
    std::fs::write(&truncated, "-----BEGIN CERTIFICATE-----\nMIIB\n").expect("writes");
    let empty = pki.path("empty.pem");
    std::fs::write(&empty, "nothing to see\n").expect("writes");
    let show = |p: &Path| p.display().to_string();

    let cases = [
        (
            single(&missing, &key, ""),
            format!(
                "gw.yaml:4:25: listeners[0].tls.certificate: cannot read {}: No such file",
                show(&missing)
            ),
        ),
        (
            single(&key, &key, ""),
            format!(
                "listeners[0].tls.certificate: {} contains no certificate (it holds a private key",
                show(&key)
            ),
        ),
        (
            single(&empty, &key, ""),
            format!(
                "listeners[0].tls.certificate: {} contains no certificate",
                show(&empty)
            ),
        ),
        (
            single(&truncated, &key, ""),
            format!(
                "listeners[0].tls.certificate: {} is not valid PEM",
                show(&truncated)
            ),
        ),
        (
            single(&cert, &cert, ""),
            format!(
                "listeners[0].tls.private_key: {} contains no private key (it holds a certificate",
                show(&cert)
            ),
        ),
        (
            single(&cert, &other_key, ""),
            format!(
                "listeners[0].tls.private_key: private key {} does not match the certificate {}",
                show(&other_key),
                show(&cert)
            ),
        ),
        (
            format!(
                "{{ certificates: [{{ hosts: [shop.example.org], certificate: {}, private_key: {} }}] }}",
                quoted(&cert),
                quoted(&key)
            ),
            format!(
                "listeners[0].tls.certificates[0].hosts[0]: certificate {} is not valid for shop.example.org; its names are api.example.com",
                show(&cert)
            ),
        ),
        (
            format!(
                "{{ certificates: [{{ hosts: [], certificate: {}, private_key: {} }}] }}",
                quoted(&cert),
                quoted(&key)
            ),
            "listeners[0].tls.certificates[0].hosts: list the server names".to_owned(),
        ),
        (
            format!(
                "{{ certificates: [{{ hosts: [api.example.com], certificate: {}, private_key: {} }}], default: www.example.com }}",
                quoted(&cert),
                quoted(&key)
            ),
            "listeners[0].tls.default: \"www.example.com\" is not one of the hosts".to_owned(),
        ),
        (
            format!(
                "{{ certificate: {}, private_key: {}, certificates: [] }}",
                quoted(&cert),
                quoted(&key)
            ),
            "listeners[0].tls: give either `certificate` and `private_key`, or `certificates`"
                .to_owned(),
        ),
        (
            format!("{{ certificate: {} }}", quoted(&cert)),
            "listeners[0].tls.certificate: needs `private_key` beside it".to_owned(),
        ),
        (
            single(&cert, &key, ", client_auth: optional"),
            "listeners[0].tls.client_auth: needs `client_ca`".to_owned(),
        ),
        (
            single(&cert, &key, &format!(", client_ca: {}", quoted(&missing))),
            format!(
                "listeners[0].tls.client_ca: cannot read {}",
                show(&missing)
            ),
        ),
        (
            single(&cert, &key, ", handshake_timeout: 0s"),
            "listeners[0].tls.handshake_timeout: must be longer than 0s".to_owned(),
        ),
        (
            single(&cert, &key, ", ciphers: [x]"),
            "unknown field `ciphers`".to_owned(),
        ),
    ];
    for (tls, expected) in cases {
        let errors = config_errors(&tls_config_text(&tls));
        assert!(
            errors.contains(&expected),
            "missing {expected:?} in:\n{errors}"
        );
    }

    // Every problem in one pass: both files of one entry, and other entries.
    let empty_key = pki.path("empty.key");
    std::fs::write(&empty_key, "").expect("writes");
    let errors = config_errors(&tls_config_text(&format!(
        "{{ certificates: [{{ hosts: [a.example.com], certificate: {m}, private_key: {e} }}, {{ hosts: [a.example.com], certificate: {c}, private_key: {m} }}] }}",
        m = quoted(&missing),
        e = quoted(&empty_key),
        c = quoted(&cert),
    )));
    for expected in [
        format!("certificates[0].certificate: cannot read {}", show(&missing)),
        format!(
            "certificates[0].private_key: {} contains no private key",
            show(&empty_key)
        ),
        "certificates[1].hosts[0]: host \"a.example.com\" is already served by listeners[0].tls.certificates[0]".to_owned(),
        format!("certificates[1].private_key: cannot read {}", show(&missing)),
        "4 errors in configuration".to_owned(),
    ] {
        assert!(
            errors.contains(&expected),
            "missing {expected:?} in:\n{errors}"
        );
    }

    let errors = config_errors(&format!(
        "listeners:\n  - {{ name: public, address: 127.0.0.1:8443, redirect_to_https: true, tls: {} }}\n",
        single(&cert, &key, "")
    ));
    assert!(
        errors.contains("listeners[0].redirect_to_https: is for plain HTTP listeners"),
        "{errors}"
    );
}

#[test]
fn check_exits_2_for_a_bad_certificate_and_resolves_relative_paths() {
    let pki = Pki::new("Test CA");
    pki.write("api", &pki.issue(&["api.example.com"]));
    std::fs::write(pki.path("broken.pem"), "not a certificate\n").expect("writes");
    let config = pki.path("gateway.yaml");

    std::fs::write(
        &config,
        tls_config_text("{ certificate: broken.pem, private_key: api.key }"),
    )
    .expect("writes config");
    let output = std::process::Command::new(BINARY)
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let expected = format!(
        "{}:4:25: listeners[0].tls.certificate: {} contains no certificate",
        config.display(),
        pki.path("broken.pem").display()
    );
    assert!(
        stderr.contains(&expected),
        "missing {expected:?} in:\n{stderr}"
    );

    // Relative to the configuration file, not to the working directory.
    std::fs::write(
        &config,
        tls_config_text("{ certificate: api.pem, private_key: api.key }"),
    )
    .expect("writes config");
    let output = std::process::Command::new(BINARY)
        .args(["check", "-c"])
        .arg(&config)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("TLS 1.2/1.3"), "{stdout}");
    assert!(stdout.contains("expires 2040-01-01T00:00:00Z"), "{stdout}");
}
