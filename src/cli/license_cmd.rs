//! `tollgate license …` (docs/cli.md): make issuer keys, sign payloads, verify and show license files.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use super::output::say;
use super::CliError;
use crate::license::{
    self, format_time, read_capped, Capped, EnvLimits, LicenseFile, Terms, TrustedKeys,
    MAX_LICENSE_BYTES,
};

/// File name of the private key `keygen` writes.
const PRIVATE_KEY_FILE: &str = "issuer.key";
/// File name of the public key `keygen` writes.
const PUBLIC_KEY_FILE: &str = "issuer.pub";

/// `license keygen --out DIR`: writes a new issuer key pair, never overwriting one.
pub(super) fn keygen(out: &Path) -> Result<ExitCode, CliError> {
    fs::create_dir_all(out)
        .map_err(|e| CliError::at(out.display(), format!("cannot create the directory: {e}")))?;
    let key_path = out.join(PRIVATE_KEY_FILE);
    let pub_path = out.join(PUBLIC_KEY_FILE);
    for path in [&key_path, &pub_path] {
        // symlink_metadata: a dangling symlink also counts as existing.
        if fs::symlink_metadata(path).is_ok() {
            return Err(CliError::at(
                path.display(),
                "already exists; refusing to overwrite it",
            ));
        }
    }
    let (private_pem, public_pem) = license::generate_keypair();
    let public = license::verifying_key_from_pem(&public_pem)
        .map_err(|e| CliError::at(pub_path.display(), e))?;
    write_new(&key_path, private_pem.as_bytes(), true)
        .map_err(|e| CliError::at(key_path.display(), format!("cannot write: {e}")))?;
    if let Err(e) = write_new(&pub_path, public_pem.as_bytes(), false) {
        // Half a key pair is useless; do not leave the private half behind.
        let _ = fs::remove_file(&key_path);
        return Err(CliError::at(
            pub_path.display(),
            format!("cannot write: {e}"),
        ));
    }
    say!(
        "wrote {} (keep it secret) and {} (kid {})",
        key_path.display(),
        pub_path.display(),
        license::kid(&public)
    );
    Ok(ExitCode::SUCCESS)
}

/// `license sign --key KEY --in PAYLOAD.json --out FILE.lic`: signs a payload into a license file.
pub(super) fn sign(key: &Path, input: &Path, out: &Path) -> Result<ExitCode, CliError> {
    let signing_key = license::read_signing_key(key).map_err(|e| CliError::at(key.display(), e))?;
    let payload = match read_capped(input, MAX_LICENSE_BYTES) {
        Ok(Capped::Fits(bytes)) => bytes,
        Ok(Capped::TooLarge(size)) => {
            return Err(CliError::at(
                input.display(),
                format!("payload is {size} bytes; a license file holds at most 64 KiB"),
            ))
        }
        Err(e) => {
            return Err(CliError::at(
                input.display(),
                format!("cannot be read: {e}"),
            ))
        }
    };
    let text =
        license::sign(&payload, &signing_key).map_err(|e| CliError::at(input.display(), e))?;
    // Read the result back as any reader would, so only a file tollgate accepts is written.
    let file = LicenseFile::parse(text.as_bytes()).map_err(|e| CliError::at(out.display(), e))?;
    write_atomically(out, text.as_bytes())
        .map_err(|e| CliError::at(out.display(), format!("cannot write: {e}")))?;
    say!(
        "signed license {} with kid {} into {}",
        file.payload.common.id,
        file.kid,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `license verify --pub PUB FILE.lic`: exit 0 for a valid signature, 1 with the reason otherwise.
pub(super) fn verify(public_key: &Path, file: &Path) -> Result<ExitCode, CliError> {
    let mut keys = TrustedKeys::new();
    keys.load_pem_file(public_key)
        .map_err(|e| CliError::at(public_key.display(), e))?;
    let checked = LicenseFile::read(file)
        .map_err(|e| e.to_string())
        .and_then(|lic| lic.verify(&keys).map(|()| lic).map_err(|e| e.to_string()));
    match checked {
        Ok(lic) => {
            say!(
                "{}: valid signature (kid {}, license ID {})",
                file.display(),
                lic.kid,
                lic.payload.common.id
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            eprintln!("{}: {reason}", file.display());
            Ok(ExitCode::from(1))
        }
    }
}

/// `license show [--json] FILE.lic`: prints every attribute; the signature is not checked.
pub(super) fn show(file: &Path, json: bool) -> Result<ExitCode, CliError> {
    let lic = LicenseFile::read(file).map_err(|e| CliError::at(file.display(), e))?;
    if json {
        let mut object = serde_json::Map::new();
        object.insert("kid".into(), lic.kid.clone().into());
        object.insert("signature_checked".into(), false.into());
        if let Value::Object(payload) = lic.payload.to_json() {
            object.extend(payload);
        }
        let text = serde_json::to_string_pretty(&Value::Object(object))
            .map_err(|e| CliError::at(file.display(), e))?;
        say!("{text}");
    } else {
        print_table(&attributes(&lic));
    }
    Ok(ExitCode::SUCCESS)
}

/// The (name, value) rows of `show`, in reading order.
fn attributes(lic: &LicenseFile) -> Vec<(String, String)> {
    let c = &lic.payload.common;
    let mut rows = vec![
        ("kid".to_string(), lic.kid.clone()),
        (
            "signature".to_string(),
            "not checked (use `tollgate license verify`)".to_string(),
        ),
        ("id".to_string(), c.id.clone()),
        ("kind".to_string(), lic.payload.kind().to_string()),
        ("company".to_string(), c.company.clone()),
        ("registered_to".to_string(), c.registered_to.clone()),
        ("email".to_string(), c.email.clone()),
        (
            "bound_to".to_string(),
            c.bound_to.clone().unwrap_or_else(|| "unbound".to_string()),
        ),
        ("start".to_string(), format_time(c.start)),
        ("expire".to_string(), format_time(c.expire)),
    ];
    match &lic.payload.terms {
        Terms::Pair(p) => {
            rows.push(("system_a".to_string(), p.system_a.clone()));
            rows.push(("system_b".to_string(), p.system_b.clone()));
            rows.push(("points".to_string(), p.points.to_string()));
            rows.push((
                "transferred_records".to_string(),
                p.transferred_records
                    .map_or_else(|| "unlimited".to_string(), |r| format!("{r} per month")),
            ));
        }
        Terms::Subscription(s) => {
            rows.push(("pricing".to_string(), s.pricing.as_str().to_string()));
            rows.push((
                "unlimited_until".to_string(),
                s.unlimited_until
                    .map_or_else(|| "none".to_string(), format_time),
            ));
            env_rows(&mut rows, "production", &s.production);
            env_rows(&mut rows, "sandbox", &s.sandbox);
        }
    }
    rows
}

fn env_rows(rows: &mut Vec<(String, String)>, env: &str, limits: &EnvLimits) {
    for (name, value) in [
        ("flows", limits.flows),
        ("endpoint_apps", limits.endpoint_apps),
        ("trading_partners", limits.trading_partners),
        ("agents", limits.agents),
    ] {
        rows.push((format!("{env}.{name}"), value.to_string()));
    }
}

fn print_table(rows: &[(String, String)]) {
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    for (name, value) in rows {
        say!("{name:<width$}  {value}");
    }
}

/// Creates `path`, failing if it exists; private files are readable by the owner only.
#[cfg_attr(not(unix), allow(unused_variables))]
pub(super) fn write_new(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written
}

/// Replaces `path` with `bytes` via a temporary file and a rename, so readers (such as a
/// sidecar watching the license directory) never see a half-written file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"))?;
    let temp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    write_new(&temp, bytes, false)?;
    fs::rename(&temp, path).inspect_err(|_| {
        let _ = fs::remove_file(&temp);
    })
}
