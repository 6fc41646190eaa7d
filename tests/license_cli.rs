//! `tollgate license …` end to end: the real binary, real files, and openssl as an
//! independent implementation of the key and signature formats (SPEC §3, §4).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const PAIR_JSON: &str = r#"{"version":1,"id":"LIC-0001","kind":"pair","company":"Acme Corp","registered_to":"Jane Doe",
 "email":"jane@acme.example","bound_to":"integration-host.acme.example",
 "start":"2026-01-01T00:00:00Z","expire":"2027-01-01T00:00:00Z",
 "system_a":"servicenow","system_b":"jira","points":2,"transferred_records":100000}"#;

const SUBSCRIPTION_JSON: &str = r#"{"version":1,"id":"SUB-0001","kind":"subscription","company":"Acme Corp","registered_to":"Jane Doe",
 "email":"jane@acme.example","start":"2026-01-01T00:00:00Z","expire":"2027-01-01T00:00:00Z",
 "pricing":"endpoint","unlimited_until":"2026-01-31T00:00:00Z",
 "production":{"flows":10,"endpoint_apps":5,"trading_partners":2,"agents":1},
 "sandbox":{"flows":5,"endpoint_apps":3,"trading_partners":1,"agents":1}}"#;

fn tollgate<I: AsRef<OsStr>>(args: impl IntoIterator<Item = I>) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .unwrap()
}

fn code(output: &Output) -> i32 {
    output.status.code().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A scratch directory with an issuer key pair made by `tollgate license keygen`.
struct Issuer {
    dir: tempfile::TempDir,
}

impl Issuer {
    fn new() -> Issuer {
        let dir = tempfile::tempdir().unwrap();
        let out = tollgate([
            OsStr::new("license"),
            "keygen".as_ref(),
            "--out".as_ref(),
            dir.path().as_os_str(),
        ]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        Issuer { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn key(&self) -> PathBuf {
        self.path("issuer.key")
    }

    fn public(&self) -> PathBuf {
        self.path("issuer.pub")
    }

    /// Signs `payload` with the issuer key into `name`; returns the license path.
    fn sign(&self, payload: &str, name: &str) -> PathBuf {
        let input = self.path(&format!("{name}.json"));
        std::fs::write(&input, payload).unwrap();
        let out = self.path(name);
        let run = tollgate(sign_args(&self.key(), &input, &out));
        assert_eq!(code(&run), 0, "{}", stderr(&run));
        out
    }

    fn verify(&self, license: &Path) -> Output {
        tollgate([
            OsStr::new("license"),
            "verify".as_ref(),
            "--pub".as_ref(),
            self.public().as_os_str(),
            license.as_os_str(),
        ])
    }
}

fn sign_args<'a>(key: &'a Path, input: &'a Path, out: &'a Path) -> Vec<&'a OsStr> {
    vec![
        "license".as_ref(),
        "sign".as_ref(),
        "--key".as_ref(),
        key.as_os_str(),
        "--in".as_ref(),
        input.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]
}

/// The envelope JSON inside an armored license file.
fn unarmor(text: &str) -> Value {
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    serde_json::from_slice(&STANDARD.decode(b64).unwrap()).unwrap()
}

/// Armors an envelope the way SPEC §3 describes, independently of tollgate's code.
fn armor(envelope: &Value) -> String {
    let b64 = STANDARD.encode(envelope.to_string());
    let mut text = String::from("-----BEGIN TOLLGATE LICENSE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(chunk).unwrap());
        text.push('\n');
    }
    text.push_str("-----END TOLLGATE LICENSE-----\n");
    text
}

/// Rewrites a license file's envelope in place (the signature stays as it was).
fn tamper(license: &Path, edit: impl FnOnce(&mut Value)) {
    let mut envelope = unarmor(&std::fs::read_to_string(license).unwrap());
    edit(&mut envelope);
    std::fs::write(license, armor(&envelope)).unwrap();
}

/// The key id of SPEC §3 computed from an SPKI PEM file: the public key is the DER's last 32 bytes.
fn kid_of_public_pem(pem: &str) -> String {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(b64).unwrap();
    let digest = Sha256::digest(&der[der.len() - 32..]);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
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
    let issuer = Issuer::new();
    let public_pem = std::fs::read_to_string(issuer.public()).unwrap();
    let kid = kid_of_public_pem(&public_pem);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(issuer.key())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let input = issuer.path("pair.json");
    std::fs::write(&input, PAIR_JSON).unwrap();
    let license = issuer.path("pair.lic");
    let signed = tollgate(sign_args(&issuer.key(), &input, &license));
    assert_eq!(code(&signed), 0, "{}", stderr(&signed));
    assert!(stdout(&signed).contains("LIC-0001"), "{}", stdout(&signed));
    assert!(stdout(&signed).contains(&kid), "{}", stdout(&signed));
    assert!(!std::fs::read_dir(issuer.dir.path())
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
    let first = tollgate([
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

    let second = tollgate([
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
    let missing_key = tollgate(["license", "sign", "--in", "p.json", "--out", "p.lic"]);
    assert_eq!(code(&missing_key), 2, "{}", stderr(&missing_key));
    assert!(
        stderr(&missing_key).contains("--key"),
        "{}",
        stderr(&missing_key)
    );
    let missing_file = tollgate(["license", "verify", "--pub", "issuer.pub"]);
    assert_eq!(code(&missing_file), 2);
    let unknown_verb = tollgate(["license", "revoke"]);
    assert_eq!(code(&unknown_verb), 2);
}

#[test]
fn sign_refuses_a_bad_payload_naming_the_file() {
    let issuer = Issuer::new();
    let input = issuer.path("bad.json");
    std::fs::write(
        &input,
        PAIR_JSON.replace("\"points\":2", "\"points\":2,\"seats\":9"),
    )
    .unwrap();
    let out = issuer.path("bad.lic");
    let run = tollgate(sign_args(&issuer.key(), &input, &out));
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

    let run = tollgate(sign_args(&issuer.public(), &input, &out));
    assert_eq!(code(&run), 1);
    assert!(
        stderr(&run).contains(&format!("{}: PEM label is", issuer.public().display())),
        "{}",
        stderr(&run)
    );
}

#[test]
fn verify_refuses_tampered_files_with_the_reason() {
    let issuer = Issuer::new();
    /// How a test case damages a freshly signed license file.
    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "payload",
            Box::new(|p| {
                tamper(p, |env| {
                    let payload = PAIR_JSON.replace("\"points\":2", "\"points\":20");
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
                        .encode(PAIR_JSON.replace("\"version\":1", "\"version\":2"))
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
        let license = issuer.sign(PAIR_JSON, &format!("{name}.lic"));
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
    let issuer = Issuer::new();
    let stranger = Issuer::new();
    let license = stranger.sign(PAIR_JSON, "stranger.lic");
    let run = issuer.verify(&license);
    assert_eq!(code(&run), 1);
    assert!(
        stderr(&run).contains("signed by unknown issuer key"),
        "{}",
        stderr(&run)
    );

    let missing_key = tollgate([
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
    let issuer = Issuer::new();
    let derived = issuer.path("derived.pub");
    openssl(&[
        "pkey".as_ref(),
        "-in".as_ref(),
        issuer.key().as_os_str(),
        "-pubout".as_ref(),
        "-out".as_ref(),
        derived.as_os_str(),
    ]);
    assert_eq!(
        std::fs::read_to_string(derived).unwrap(),
        std::fs::read_to_string(issuer.public()).unwrap()
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
    std::fs::write(&input, SUBSCRIPTION_JSON).unwrap();
    let license = dir.path().join("sub.lic");
    let signed = tollgate(sign_args(&key, &input, &license));
    assert_eq!(code(&signed), 0, "{}", stderr(&signed));
    let verified = tollgate([
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

    let payload_b64 = STANDARD.encode(PAIR_JSON);
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

    let verified = tollgate([
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
        env["payload"] = STANDARD.encode(PAIR_JSON.replace("jira", "jiraa")).into()
    });
    let refused = tollgate([
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
    let issuer = Issuer::new();
    let kid = kid_of_public_pem(&std::fs::read_to_string(issuer.public()).unwrap());
    let pair = issuer.sign(PAIR_JSON, "pair.lic");
    let run = tollgate([OsStr::new("license"), "show".as_ref(), pair.as_os_str()]);
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

    let subscription = issuer.sign(SUBSCRIPTION_JSON, "sub.lic");
    let run = tollgate([
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
    let issuer = Issuer::new();
    let kid = kid_of_public_pem(&std::fs::read_to_string(issuer.public()).unwrap());
    for payload in [PAIR_JSON, SUBSCRIPTION_JSON] {
        let license = issuer.sign(payload, "show.lic");
        let run = tollgate([
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
        assert_eq!(shown, serde_json::from_str::<Value>(payload).unwrap());
    }
}

#[test]
fn show_refuses_a_broken_file_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.lic");
    std::fs::write(&broken, "hello").unwrap();
    let run = tollgate([OsStr::new("license"), "show".as_ref(), broken.as_os_str()]);
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
    let issuer = Issuer::new();
    let license = issuer.sign(PAIR_JSON, "pair.lic");
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
