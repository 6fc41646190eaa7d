//! `tollgate license …` end to end: the real binary, real files, and openssl as an
//! independent implementation of the key, signature and license file formats.

pub mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::licenses::{
    armor, during, kid_of_public_pem, pair_license, sign_args, subscription_license, tamper,
    unarmor, with, Issuer,
};
use common::process::{stderr, stdout, tollgate_output};
use serde_json::{json, Value};

/// The pair payload the verbs are tried on: bound to a host, with a records limit, for 2026.
fn pair_json() -> String {
    let payload = during(
        pair_license("LIC-0001", "servicenow", "jira", 2),
        "2026-01-01T00:00:00Z",
        "2027-01-01T00:00:00Z",
    );
    let payload = with(payload, "bound_to", "integration-host.acme.example");
    with(payload, "transferred_records", 100_000).to_string()
}

/// The subscription payload the verbs are tried on: endpoint pricing, free for January 2026.
fn subscription_json() -> String {
    let payload = during(
        subscription_license("SUB-0001", "endpoint", [10, 5, 2, 1], [5, 3, 1, 1]),
        "2026-01-01T00:00:00Z",
        "2027-01-01T00:00:00Z",
    );
    with(payload, "unlimited_until", "2026-01-31T00:00:00Z").to_string()
}

fn code(output: &Output) -> i32 {
    output
        .status
        .code()
        .expect("tollgate was killed by a signal")
}

fn have_openssl() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: openssl is not on PATH");
    }
    found
}

fn openssl(args: &[&OsStr]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
}

#[test]
fn keygen_sign_verify_round_trip() {
    let issuer = Issuer::scratch();
    let public_pem = std::fs::read_to_string(issuer.public_key()).unwrap();
    let kid = kid_of_public_pem(&public_pem);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(issuer.private_key())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let input = issuer.path("pair.json");
    std::fs::write(&input, pair_json()).unwrap();
    let license = issuer.path("pair.lic");
    let signed = tollgate_output(sign_args(&issuer.private_key(), &input, &license));
    assert_eq!(code(&signed), 0, "{}", stderr(&signed));
    assert!(stdout(&signed).contains("LIC-0001"), "{}", stdout(&signed));
    assert!(stdout(&signed).contains(&kid), "{}", stdout(&signed));
    assert!(!std::fs::read_dir(issuer.dir())
        .unwrap()
        .any(|e| { e.unwrap().file_name().to_string_lossy().ends_with(".tmp") }));

    let verified = issuer.verify(&license);
    assert_eq!(code(&verified), 0, "{}", stderr(&verified));
    assert_eq!(
        stdout(&verified),
        format!(
            "{}: valid signature (kid {kid}, license ID LIC-0001)\n",
            license.display()
        )
    );
    let text = std::fs::read_to_string(&license).unwrap();
    assert!(text.lines().all(|l| l.len() <= 76));
    assert_eq!(unarmor(&text)["alg"], "ed25519");
    assert_eq!(unarmor(&text)["kid"], kid.as_str());
}

#[test]
fn keygen_prints_the_kid_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys");
    let first = tollgate_output([
        OsStr::new("license"),
        "keygen".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    let public_pem = std::fs::read_to_string(out.join("issuer.pub")).unwrap();
    assert!(
        stdout(&first).contains(&kid_of_public_pem(&public_pem)),
        "{}",
        stdout(&first)
    );
    let private_pem = std::fs::read_to_string(out.join("issuer.key")).unwrap();

    let second = tollgate_output([
        OsStr::new("license"),
        "keygen".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(code(&second), 1);
    assert!(
        stderr(&second).contains("issuer.key: already exists"),
        "{}",
        stderr(&second)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("issuer.key")).unwrap(),
        private_pem
    );
}

#[test]
fn usage_errors_exit_2() {
    let missing_key = tollgate_output(["license", "sign", "--in", "p.json", "--out", "p.lic"]);
    assert_eq!(code(&missing_key), 2, "{}", stderr(&missing_key));
    assert!(
        stderr(&missing_key).contains("--key"),
        "{}",
        stderr(&missing_key)
    );
    let missing_file = tollgate_output(["license", "verify", "--pub", "issuer.pub"]);
    assert_eq!(code(&missing_file), 2);
    let unknown_verb = tollgate_output(["license", "revoke"]);
    assert_eq!(code(&unknown_verb), 2);
}

#[test]
fn sign_refuses_a_bad_payload_naming_the_file() {
    let issuer = Issuer::scratch();
    let input = issuer.path("bad.json");
    std::fs::write(
        &input,
        pair_json().replace("\"points\":2", "\"points\":2,\"seats\":9"),
    )
    .unwrap();
    let out = issuer.path("bad.lic");
    let run = tollgate_output(sign_args(&issuer.private_key(), &input, &out));
    assert_eq!(code(&run), 1);
    assert!(
        stderr(&run).contains(&format!(
            "{}: payload: unknown field `seats`",
            input.display()
        )),
        "{}",
        stderr(&run)
    );
    assert!(!out.exists());

    let run = tollgate_output(sign_args(&issuer.public_key(), &input, &out));
    assert_eq!(code(&run), 1);
    assert!(
        stderr(&run).contains(&format!("{}: PEM label is", issuer.public_key().display())),
        "{}",
        stderr(&run)
    );
}

#[test]
fn verify_refuses_tampered_files_with_the_reason() {
    let issuer = Issuer::scratch();
    /// How a test case damages a freshly signed license file.
    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "payload",
            Box::new(|p| {
                tamper(p, |env| {
                    let payload = pair_json().replace("\"points\":2", "\"points\":20");
                    env["payload"] = STANDARD.encode(payload).into();
                })
            }),
            "invalid signature: the license was altered or signed by another key",
        ),
        (
            "sig",
            Box::new(|p| {
                tamper(p, |env| {
                    let mut sig = STANDARD.decode(env["sig"].as_str().unwrap()).unwrap();
                    sig[10] ^= 1;
                    env["sig"] = STANDARD.encode(sig).into();
                })
            }),
            "invalid signature: the license was altered or signed by another key",
        ),
        (
            "kid",
            Box::new(|p| tamper(p, |env| env["kid"] = "0123456789abcdef".into())),
            "signed by unknown issuer key 0123456789abcdef",
        ),
        (
            "alg",
            Box::new(|p| tamper(p, |env| env["alg"] = "rsa".into())),
            "alg \"rsa\" is not supported; only ed25519",
        ),
        (
            "extra",
            Box::new(|p| tamper(p, |env| env["note"] = "hi".into())),
            "envelope: unknown field `note`",
        ),
        (
            "version",
            Box::new(|p| {
                tamper(p, |env| {
                    env["payload"] = STANDARD
                        .encode(pair_json().replace("\"version\":1", "\"version\":2"))
                        .into();
                })
            }),
            "unsupported payload version 2",
        ),
        (
            "armor",
            Box::new(|p| {
                let text = std::fs::read_to_string(p).unwrap();
                std::fs::write(p, text.replace("-----BEGIN TOLLGATE LICENSE-----\n", "")).unwrap();
            }),
            "missing the -----BEGIN TOLLGATE LICENSE----- line",
        ),
        (
            "truncated",
            Box::new(|p| {
                let text = std::fs::read_to_string(p).unwrap();
                std::fs::write(p, &text[..text.len() / 2]).unwrap();
            }),
            "missing the -----END TOLLGATE LICENSE----- line",
        ),
        (
            "huge",
            Box::new(|p| std::fs::write(p, vec![b'\n'; 70_000]).unwrap()),
            "license file is 70000 bytes, over the 64 KiB limit",
        ),
    ];
    for (name, damage, reason) in cases {
        let license = issuer.sign_file(&pair_json(), &format!("{name}.lic"));
        damage(&license);
        let run = issuer.verify(&license);
        assert_eq!(code(&run), 1, "{name}: {}", stdout(&run));
        assert!(stdout(&run).is_empty(), "{name}: {}", stdout(&run));
        assert_eq!(
            stderr(&run),
            format!("{}: {reason}\n", license.display()),
            "{name}"
        );
    }
}

#[test]
fn verify_refuses_a_license_from_another_issuer() {
    let issuer = Issuer::scratch();
    let stranger = Issuer::scratch();
    let license = stranger.sign_file(&pair_json(), "stranger.lic");
    let run = issuer.verify(&license);
    assert_eq!(code(&run), 1);
    assert!(
        stderr(&run).contains("signed by unknown issuer key"),
        "{}",
        stderr(&run)
    );

    let missing_key = tollgate_output([
        OsStr::new("license"),
        "verify".as_ref(),
        "--pub".as_ref(),
        issuer.path("none.pub").as_os_str(),
        license.as_os_str(),
    ]);
    assert_eq!(code(&missing_key), 1);
    assert!(
        stderr(&missing_key).contains("none.pub: cannot be read"),
        "{}",
        stderr(&missing_key)
    );
}

#[test]
fn keygen_keys_are_openssl_keys() {
    if !have_openssl() {
        return;
    }
    let issuer = Issuer::scratch();
    let derived = issuer.path("derived.pub");
    openssl(&[
        "pkey".as_ref(),
        "-in".as_ref(),
        issuer.private_key().as_os_str(),
        "-pubout".as_ref(),
        "-out".as_ref(),
        derived.as_os_str(),
    ]);
    assert_eq!(
        std::fs::read_to_string(derived).unwrap(),
        std::fs::read_to_string(issuer.public_key()).unwrap()
    );
}

#[test]
fn an_openssl_key_signs_with_tollgate() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let public = dir.path().join("pub.pem");
    openssl(&[
        "genpkey".as_ref(),
        "-algorithm".as_ref(),
        "ed25519".as_ref(),
        "-out".as_ref(),
        key.as_os_str(),
    ]);
    openssl(&[
        "pkey".as_ref(),
        "-in".as_ref(),
        key.as_os_str(),
        "-pubout".as_ref(),
        "-out".as_ref(),
        public.as_os_str(),
    ]);
    let input = dir.path().join("sub.json");
    std::fs::write(&input, subscription_json()).unwrap();
    let license = dir.path().join("sub.lic");
    let signed = tollgate_output(sign_args(&key, &input, &license));
    assert_eq!(code(&signed), 0, "{}", stderr(&signed));
    let verified = tollgate_output([
        OsStr::new("license"),
        "verify".as_ref(),
        "--pub".as_ref(),
        public.as_os_str(),
        license.as_os_str(),
    ]);
    assert_eq!(code(&verified), 0, "{}", stderr(&verified));
    let kid = kid_of_public_pem(&std::fs::read_to_string(&public).unwrap());
    assert!(stdout(&verified).contains(&format!("(kid {kid}, license ID SUB-0001)")));
}

#[test]
fn interop_a_license_signed_by_openssl_verifies() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let public = dir.path().join("pub.pem");
    openssl(&[
        "genpkey".as_ref(),
        "-algorithm".as_ref(),
        "ed25519".as_ref(),
        "-out".as_ref(),
        key.as_os_str(),
    ]);
    openssl(&[
        "pkey".as_ref(),
        "-in".as_ref(),
        key.as_os_str(),
        "-pubout".as_ref(),
        "-out".as_ref(),
        public.as_os_str(),
    ]);

    let payload_b64 = STANDARD.encode(pair_json());
    let message = dir.path().join("msg.bin");
    std::fs::write(&message, format!("tollgate-license-v1.{payload_b64}")).unwrap();
    let signature = dir.path().join("sig.bin");
    openssl(&[
        "pkeyutl".as_ref(),
        "-sign".as_ref(),
        "-rawin".as_ref(),
        "-inkey".as_ref(),
        key.as_os_str(),
        "-in".as_ref(),
        message.as_os_str(),
        "-out".as_ref(),
        signature.as_os_str(),
    ]);
    let kid = kid_of_public_pem(&std::fs::read_to_string(&public).unwrap());
    let envelope = json!({
        "alg": "ed25519",
        "kid": kid,
        "payload": payload_b64,
        "sig": STANDARD.encode(std::fs::read(&signature).unwrap()),
    });
    let license = dir.path().join("openssl.lic");
    std::fs::write(&license, armor(&envelope)).unwrap();

    let verified = tollgate_output([
        OsStr::new("license"),
        "verify".as_ref(),
        "--pub".as_ref(),
        public.as_os_str(),
        license.as_os_str(),
    ]);
    assert_eq!(code(&verified), 0, "{}", stderr(&verified));
    assert_eq!(
        stdout(&verified),
        format!(
            "{}: valid signature (kid {kid}, license ID LIC-0001)\n",
            license.display()
        )
    );

    // The same signature over a changed payload is refused.
    tamper(&license, |env| {
        env["payload"] = STANDARD.encode(pair_json().replace("jira", "jiraa")).into()
    });
    let refused = tollgate_output([
        OsStr::new("license"),
        "verify".as_ref(),
        "--pub".as_ref(),
        public.as_os_str(),
        license.as_os_str(),
    ]);
    assert_eq!(code(&refused), 1);
    assert!(
        stderr(&refused).contains("invalid signature"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn show_prints_every_attribute() {
    let issuer = Issuer::scratch();
    let kid = kid_of_public_pem(&std::fs::read_to_string(issuer.public_key()).unwrap());
    let pair = issuer.sign_file(&pair_json(), "pair.lic");
    let run = tollgate_output([OsStr::new("license"), "show".as_ref(), pair.as_os_str()]);
    assert_eq!(code(&run), 0, "{}", stderr(&run));
    let table = stdout(&run);
    for (name, value) in [
        ("kid", kid.as_str()),
        ("id", "LIC-0001"),
        ("kind", "pair"),
        ("company", "Acme Corp"),
        ("registered_to", "Jane Doe"),
        ("email", "jane@acme.example"),
        ("bound_to", "integration-host.acme.example"),
        ("start", "2026-01-01T00:00:00Z"),
        ("expire", "2027-01-01T00:00:00Z"),
        ("system_a", "servicenow"),
        ("system_b", "jira"),
        ("points", "2"),
        ("transferred_records", "100000"),
    ] {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row in\n{table}"));
        assert!(line.contains(value), "{line}");
    }

    let subscription = issuer.sign_file(&subscription_json(), "sub.lic");
    let run = tollgate_output([
        OsStr::new("license"),
        "show".as_ref(),
        subscription.as_os_str(),
    ]);
    let table = stdout(&run);
    for row in [
        "bound_to",
        "unbound",
        "pricing",
        "endpoint",
        "unlimited_until",
        "2026-01-31T00:00:00Z",
        "production.flows",
        "production.endpoint_apps",
        "production.trading_partners",
        "production.agents",
        "sandbox.flows",
        "sandbox.agents",
    ] {
        assert!(table.contains(row), "{row} missing in\n{table}");
    }
}

#[test]
fn show_json_is_the_payload_with_the_kid() {
    let issuer = Issuer::scratch();
    let kid = kid_of_public_pem(&std::fs::read_to_string(issuer.public_key()).unwrap());
    for payload in [pair_json(), subscription_json()] {
        let license = issuer.sign_file(&payload, "show.lic");
        let run = tollgate_output([
            OsStr::new("license"),
            "show".as_ref(),
            "--json".as_ref(),
            license.as_os_str(),
        ]);
        assert_eq!(code(&run), 0, "{}", stderr(&run));
        let mut shown: Value = serde_json::from_str(&stdout(&run)).unwrap();
        let object = shown.as_object_mut().unwrap();
        assert_eq!(object.remove("kid"), Some(Value::from(kid.clone())));
        assert_eq!(object.remove("signature_checked"), Some(Value::Bool(false)));
        assert_eq!(shown, serde_json::from_str::<Value>(&payload).unwrap());
    }
}

#[test]
fn show_refuses_a_broken_file_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.lic");
    std::fs::write(&broken, "hello").unwrap();
    let run = tollgate_output([OsStr::new("license"), "show".as_ref(), broken.as_os_str()]);
    assert_eq!(code(&run), 1);
    assert!(
        stderr(&run).contains(&format!(
            "{}: missing the -----BEGIN TOLLGATE LICENSE----- line",
            broken.display()
        )),
        "{}",
        stderr(&run)
    );
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let issuer = Issuer::scratch();
    let license = issuer.sign_file(&pair_json(), "pair.lic");
    // `tollgate license show … | head -0`: the reader is gone before anything is written.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([OsStr::new("license"), "show".as_ref(), license.as_os_str()])
        .stdout(writer)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}
