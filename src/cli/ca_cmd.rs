//! `tollgate ca init` (docs/cli.md): the CA engines trust for HTTPS interception.

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use super::license_cmd::write_new;
use super::output::say;
use super::CliError;
use crate::intercept;

/// File name of the CA certificate `ca init` writes.
const CERT_FILE: &str = "ca.pem";
/// File name of the CA's private key `ca init` writes.
const KEY_FILE: &str = "ca.key";

/// `ca init --out DIR [--force]`: writes a new CA as `ca.pem` and `ca.key` (mode 0600 from
/// its creation), refusing to replace either unless `force`.
pub(super) fn init(out: &Path, force: bool) -> Result<ExitCode, CliError> {
    fs::create_dir_all(out)
        .map_err(|e| CliError::at(out.display(), format!("cannot create the directory: {e}")))?;
    let cert_path = out.join(CERT_FILE);
    let key_path = out.join(KEY_FILE);
    for path in [&cert_path, &key_path] {
        // symlink_metadata: a dangling symlink also counts as existing.
        if fs::symlink_metadata(path).is_err() {
            continue;
        }
        if !force {
            return Err(CliError::at(
                path.display(),
                "already exists; refusing to overwrite it (--force replaces it)",
            ));
        }
        // Removed rather than truncated, so that the new key file gets its mode at creation.
        fs::remove_file(path)
            .map_err(|e| CliError::at(path.display(), format!("cannot replace it: {e}")))?;
    }
    let ca = intercept::generate()
        .map_err(|e| CliError::at(out.display(), format!("cannot make a CA: {e}")))?;
    write_new(&key_path, ca.key_pem.as_bytes(), true)
        .map_err(|e| CliError::at(key_path.display(), format!("cannot write: {e}")))?;
    if let Err(e) = write_new(&cert_path, ca.cert_pem.as_bytes(), false) {
        // A key without its certificate is useless; do not leave it behind.
        let _ = fs::remove_file(&key_path);
        return Err(CliError::at(
            cert_path.display(),
            format!("cannot write: {e}"),
        ));
    }
    say!(
        "wrote {} (the certificate engines trust) and {} (keep it secret: it can issue certificates every engine trusting the CA accepts)",
        cert_path.display(),
        key_path.display()
    );
    // Config paths are relative to the config file, not to where this ran: say them whole.
    let whole = |path: &Path| fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    say!(
        "next: set server.forward_proxy = true and server.intercept_ca = {{ cert = \"{}\", key = \"{}\" }}, and make the engine trust {} (docs/deploy/https-proxy.md)",
        whole(&cert_path).display(),
        whole(&key_path).display(),
        cert_path.display()
    );
    Ok(ExitCode::SUCCESS)
}
