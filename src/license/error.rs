//! Why a license file or payload was refused: one sentence each, never naming the file
//! (the caller knows which file it read and prefixes it).

use thiserror::Error;

/// A license file or payload that cannot be read, parsed or signed.
#[derive(Debug, Error)]
pub enum LicenseError {
    /// The file could not be opened or read.
    #[error("cannot be read: {0}")]
    Read(#[from] std::io::Error),
    /// The file is bigger than [`crate::license::MAX_LICENSE_BYTES`].
    #[error("license file is {size} bytes, over the 64 KiB limit")]
    TooLarge {
        /// Size of the file in bytes.
        size: u64,
    },
    /// The file is not UTF-8 text, so it cannot hold the armor lines.
    #[error("license file is not UTF-8 text")]
    NotText,
    /// No `-----BEGIN TOLLGATE LICENSE-----` line.
    #[error("missing the -----BEGIN TOLLGATE LICENSE----- line")]
    MissingBegin,
    /// No `-----END TOLLGATE LICENSE-----` line after the BEGIN line.
    #[error("missing the -----END TOLLGATE LICENSE----- line")]
    MissingEnd,
    /// Armor lines with another label, such as a PEM key pasted by mistake.
    #[error("armor label is {found:?}; expected \"TOLLGATE LICENSE\"")]
    WrongLabel {
        /// The label found between the dashes.
        found: String,
    },
    /// Something other than blank lines before the BEGIN line.
    #[error("text before the -----BEGIN TOLLGATE LICENSE----- line")]
    TextBeforeArmor,
    /// Something other than blank lines after the END line.
    #[error("text after the -----END TOLLGATE LICENSE----- line")]
    TextAfterArmor,
    /// Nothing between the armor lines.
    #[error("no envelope between the armor lines")]
    EmptyArmor,
    /// A blank line inside the armor.
    #[error("line {line} is blank inside the armor")]
    BlankLine {
        /// 1-based line number in the file.
        line: usize,
    },
    /// A base64 line longer than the format allows.
    #[error("line {line} is {len} characters long; armored lines hold at most 76")]
    LineTooLong {
        /// 1-based line number in the file.
        line: usize,
        /// Its length in characters.
        len: usize,
    },
    /// The armored envelope, the payload or the signature is not standard padded base64.
    #[error("{what} is not valid base64: {source}")]
    Base64 {
        /// Which part: `envelope`, `payload` or `sig`.
        what: &'static str,
        /// The decoder's complaint.
        source: base64::DecodeError,
    },
    /// The envelope is not the JSON object `{alg, kid, payload, sig}`.
    #[error("envelope: {0}")]
    Envelope(String),
    /// The envelope names a signature algorithm other than Ed25519.
    #[error("alg {0:?} is not supported; only ed25519")]
    UnsupportedAlg(String),
    /// The envelope's key id is not in the form [`crate::license::kid`] produces.
    #[error("kid {0:?} is not 16 lowercase hex digits")]
    BadKid(String),
    /// The decoded signature has the wrong length.
    #[error("sig is {0} bytes; an Ed25519 signature is 64")]
    SignatureLength(usize),
    /// The payload JSON breaks a rule of the license format (docs/licenses.md: unknown or missing field, bad value).
    #[error("payload: {0}")]
    Payload(String),
    /// The payload declares a format version this build does not know.
    #[error("unsupported payload version {0}")]
    UnsupportedVersion(String),
    /// The payload declares a license kind other than `pair` or `subscription`.
    #[error("unknown license kind {0:?}; expected \"pair\" or \"subscription\"")]
    UnknownKind(String),
    /// Signing would produce a file that tollgate itself refuses to read.
    #[error("the signed license would be {size} bytes, over the 64 KiB limit")]
    SignedTooLarge {
        /// Size the armored file would have.
        size: usize,
    },
}
