//! License files (docs/licenses.md): the payload model, the armored and signed file format, issuer
//! keys, and the validity of a license on this host at a given instant.
//!
//! Reading a file ([`LicenseFile::parse`]) only checks its form; trust comes from
//! [`LicenseFile::verify`]; whether a verified license is in force now, on this host, from
//! [`judge`].

mod armor;
mod dir;
mod error;
mod file;
#[cfg(test)]
pub(crate) mod fixtures;
mod host;
mod keys;
mod payload;
mod read;
mod validity;

pub use ed25519_dalek::{SigningKey, VerifyingKey};

pub use dir::{read_dir, read_dir_reusing, Installed, Listing, Rejected, Rejection};
pub use error::LicenseError;
pub use file::{sign, LicenseFile, SignatureError};
pub use host::{ForeignHost, HostIdentity};
pub use keys::{
    generate_keypair, kid, read_signing_key, read_verifying_key, signing_key_from_pem,
    verifying_key_from_pem, KeyError, TrustedKeys,
};
pub use payload::{Common, EnvLimits, PairTerms, Payload, Pricing, SubscriptionTerms, Terms};
pub use validity::{judge, Moment, Validity};

pub(crate) use payload::format_time;
pub(crate) use read::{read_capped, Capped};

/// Largest license file accepted (docs/licenses.md): bigger files are refused before parsing.
pub const MAX_LICENSE_BYTES: usize = 64 * 1024;

/// Domain-separation prefix of every signed message (docs/licenses.md), so a license signature can
/// never be replayed as a signature over anything else.
pub const SIGNING_CONTEXT: &[u8] = b"tollgate-license-v1.";
