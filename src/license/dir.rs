//! Reading a license directory (`licensing.license_dir`): every `*.lic` file,
//! each either installed (parsed and verified) or rejected with its reason. Whether an
//! installed license is in force is judged later, afresh, at every use.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

use super::{LicenseError, LicenseFile, SignatureError, TrustedKeys};

/// File extension of license files in the directory.
const EXTENSION: &str = "lic";

/// A license file that parsed and verified; whether it is in force is judged at each use.
#[derive(Debug, Clone)]
pub struct Installed {
    /// Where it was read from (what an admin removal deletes).
    pub path: PathBuf,
    /// The parsed, signature-checked file.
    pub file: LicenseFile,
}

/// A license file that is never installed, and why.
#[derive(Debug)]
pub struct Rejected {
    /// The file.
    pub path: PathBuf,
    /// Why it was refused.
    pub reason: Rejection,
}

/// Why a file in the license directory is not installed.
#[derive(Debug, Error)]
pub enum Rejection {
    /// It does not parse.
    #[error(transparent)]
    Parse(#[from] LicenseError),
    /// Its signature is not from a trusted issuer key.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// Another file (earlier by name) already holds a license with this id.
    #[error("license id {id:?} is already installed from {}", other.display())]
    DuplicateId {
        /// The repeated license id.
        id: String,
        /// The file that holds it.
        other: PathBuf,
    },
}

/// The outcome of reading a license directory.
#[derive(Debug, Default)]
pub struct Listing {
    /// Files that parsed and verified, by file name.
    pub installed: Vec<Installed>,
    /// Files refused, by file name.
    pub rejected: Vec<Rejected>,
}

/// Reads every `*.lic` file of `dir` in file-name order (a missing directory holds none);
/// only listing the directory can fail.
pub fn read_dir(dir: &Path, keys: &TrustedKeys) -> std::io::Result<Listing> {
    read_dir_reusing(dir, keys, &[])
}

/// [`read_dir`], taking a file that is, at the same path, the same signed license as one of
/// `verified` (installed before under the same trusted keys) without checking its signature
/// again: re-reading a directory of many licenses after one upload then costs one signature
/// check, not one per file.
pub fn read_dir_reusing(
    dir: &Path,
    keys: &TrustedKeys,
    verified: &[Arc<Installed>],
) -> std::io::Result<Listing> {
    let verified: HashMap<&Path, &LicenseFile> = verified
        .iter()
        .map(|installed| (installed.path.as_path(), &installed.file))
        .collect();
    let entries = match std::fs::read_dir(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Listing::default()),
        entries => entries?,
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == EXTENSION) && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    let mut listing = Listing::default();
    for path in paths {
        let known = verified.get(path.as_path()).copied();
        match install(&path, keys, known, &listing.installed) {
            Ok(installed) => listing.installed.push(installed),
            Err(reason) => listing.rejected.push(Rejected { path, reason }),
        }
    }
    Ok(listing)
}

fn install(
    path: &Path,
    keys: &TrustedKeys,
    known: Option<&LicenseFile>,
    installed: &[Installed],
) -> Result<Installed, Rejection> {
    let file = LicenseFile::read_reusing(path, known)?;
    if !known.is_some_and(|known| known.signs_the_same(&file)) {
        file.verify(keys)?;
    }
    let id = &file.payload.common.id;
    if let Some(other) = installed.iter().find(|i| &i.file.payload.common.id == id) {
        return Err(Rejection::DuplicateId {
            id: id.clone(),
            other: other.path.clone(),
        });
    }
    Ok(Installed {
        path: path.to_path_buf(),
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::fixtures::{edit_json, key, trusting, PAIR_JSON, SUBSCRIPTION_JSON};
    use crate::license::sign;

    #[test]
    fn installs_good_files_and_rejects_bad_ones_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        let unbound = edit_json(PAIR_JSON, |m| {
            m.remove("bound_to");
        });
        write("a-pair.lic", &sign(unbound.as_bytes(), &key(1)).unwrap());
        write(
            "b-sub.lic",
            &sign(SUBSCRIPTION_JSON.as_bytes(), &key(1)).unwrap(),
        );
        write("c-same-id.lic", &sign(unbound.as_bytes(), &key(1)).unwrap());
        write(
            "d-stranger.lic",
            &sign(PAIR_JSON.as_bytes(), &key(2)).unwrap(),
        );
        write("e-broken.lic", "not a license");
        write("notes.txt", "ignored");
        std::fs::create_dir(dir.path().join("f-dir.lic")).unwrap();

        let listing = read_dir(dir.path(), &trusting(&key(1))).unwrap();
        let installed: Vec<&str> = listing
            .installed
            .iter()
            .map(|i| i.file.payload.common.id.as_str())
            .collect();
        assert_eq!(installed, ["LIC-0001", "SUB-0001"]);
        assert_eq!(listing.installed[0].path, dir.path().join("a-pair.lic"));
        let rejected: Vec<(String, String)> = listing
            .rejected
            .iter()
            .map(|r| {
                (
                    r.path.file_name().unwrap().to_string_lossy().into_owned(),
                    r.reason.to_string(),
                )
            })
            .collect();
        assert_eq!(rejected.len(), 3, "{rejected:?}");
        assert_eq!(rejected[0].0, "c-same-id.lic");
        assert!(rejected[0]
            .1
            .starts_with("license id \"LIC-0001\" is already installed from "));
        assert_eq!(rejected[1].0, "d-stranger.lic");
        assert!(rejected[1].1.starts_with("signed by unknown issuer key "));
        assert_eq!(
            rejected[2],
            (
                "e-broken.lic".to_string(),
                "missing the -----BEGIN TOLLGATE LICENSE----- line".to_string()
            )
        );
    }

    #[test]
    fn a_license_verified_before_at_the_same_path_is_not_checked_again() {
        let dir = tempfile::tempdir().unwrap();
        let unbound = edit_json(PAIR_JSON, |m| {
            m.remove("bound_to");
        });
        let (a, b) = (dir.path().join("a.lic"), dir.path().join("b.lic"));
        std::fs::write(&a, sign(unbound.as_bytes(), &key(1)).unwrap()).unwrap();
        std::fs::write(&b, sign(SUBSCRIPTION_JSON.as_bytes(), &key(1)).unwrap()).unwrap();
        let first = read_dir(dir.path(), &trusting(&key(1))).unwrap();
        let verified: Vec<Arc<Installed>> = first.installed.into_iter().map(Arc::new).collect();
        // No key is trusted now: only what was verified before, unchanged, is installed.
        let other = edit_json(&unbound, |m| {
            m.insert("company".into(), "Changed".into());
        });
        std::fs::write(&b, sign(other.as_bytes(), &key(1)).unwrap()).unwrap();
        let again = read_dir_reusing(dir.path(), &TrustedKeys::new(), &verified).unwrap();
        let installed: Vec<&Path> = again.installed.iter().map(|i| i.path.as_path()).collect();
        assert_eq!(installed, [a.as_path()]);
        assert_eq!(again.rejected.len(), 1, "a changed file is checked again");
        assert!(again.rejected[0]
            .reason
            .to_string()
            .starts_with("signed by unknown issuer key "));
        // Moved to another path, the same license is checked again.
        std::fs::rename(&a, dir.path().join("c.lic")).unwrap();
        let moved = read_dir_reusing(dir.path(), &TrustedKeys::new(), &verified).unwrap();
        assert!(moved.installed.is_empty());
    }

    #[test]
    fn a_missing_directory_holds_no_licenses_but_a_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let listing = read_dir(&dir.path().join("none"), &TrustedKeys::new()).unwrap();
        assert!(listing.installed.is_empty() && listing.rejected.is_empty());
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(read_dir(&file, &TrustedKeys::new()).is_err());
    }
}
