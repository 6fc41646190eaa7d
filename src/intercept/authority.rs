//! The interception CA: its PEM files read and checked the way an operator needs to hear
//! about them (which file, what is wrong), a new CA for `tollgate ca init`, and leaf
//! certificates issued with it.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rand_core::{OsRng, RngCore};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::crypto::ring as ring_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use time::OffsetDateTime;

/// The distinguished name `tollgate ca init` gives a new CA, so that operators recognise it
/// in a trust store.
pub const CA_COMMON_NAME: &str = "tollgate interception CA";

/// How long a CA made by `tollgate ca init` is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How long a leaf certificate is valid at most (clients refuse leaves valid for more than
/// about 13 months).
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// How far back a certificate's validity starts, for clients whose clock runs behind.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Which of the CA's two files a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaFile {
    /// `server.intercept_ca.cert`.
    Cert,
    /// `server.intercept_ca.key`.
    Key,
}

impl CaFile {
    /// The key path in the configuration that names this file.
    pub fn key_path(self) -> &'static str {
        match self {
            CaFile::Cert => "server.intercept_ca.cert",
            CaFile::Key => "server.intercept_ca.key",
        }
    }
}

/// Why the CA's files cannot be used; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// Which file.
        file: CaFile,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// The certificate cannot be parsed, or has a form certificates cannot be issued with.
    #[error("{}: {why}", path.display())]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The certificate is not one that may issue certificates.
    #[error("{} is not a CA certificate: {why}", path.display())]
    NotCa {
        /// The certificate file.
        path: PathBuf,
        /// What it lacks.
        why: &'static str,
    },
    /// The certificate's validity has ended.
    #[error("{}: the CA certificate expired on {date}", path.display())]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// Its `notAfter`.
        date: String,
    },
    /// The key file holds no PKCS#8 PEM private key.
    #[error("{} holds no PKCS#8 PEM private key (-----BEGIN PRIVATE KEY-----); convert a key with `openssl pkcs8 -topk8 -nocrypt -in KEY`", path.display())]
    NoKey {
        /// The key file.
        path: PathBuf,
    },
    /// The key is of a kind certificates cannot be signed with here.
    #[error("{}: the private key cannot sign certificates ({why}); use an ECDSA P-256 or P-384, Ed25519 or RSA key", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// The signing library's reason.
        why: String,
    },
    /// The key is not the certificate's.
    #[error("{} is not the private key of the certificate in {}", key.display(), cert.display())]
    Mismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// Certificates issued with the CA would not verify against it.
    #[error("{}: certificates issued with this CA would not verify against it ({why})", path.display())]
    Unchainable {
        /// The certificate file.
        path: PathBuf,
        /// The verifier's reason.
        why: String,
    },
}

impl CaError {
    /// The file the problem is in.
    pub fn file(&self) -> CaFile {
        match self {
            CaError::Unreadable { file, .. } => *file,
            CaError::NoKey { .. } | CaError::BadKey { .. } | CaError::Mismatch { .. } => {
                CaFile::Key
            }
            CaError::NoCertificate { .. }
            | CaError::BadCertificate { .. }
            | CaError::NotCa { .. }
            | CaError::Expired { .. }
            | CaError::Unchainable { .. } => CaFile::Cert,
        }
    }
}

/// A CA that issues the leaf certificates of intercepted hosts.
pub struct Authority {
    /// The certificate as the file holds it (what the engine trusts).
    cert: CertificateDer<'static>,
    /// The certificate as rcgen re-creates it for issuing: same subject, key and key id.
    issuer: rcgen::Certificate,
    key: KeyPair,
    subject: String,
    not_after: OffsetDateTime,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("subject", &self.subject)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A leaf certificate and its private key, as a TLS server needs them.
pub struct Leaf {
    /// The certificate (DER).
    pub cert: CertificateDer<'static>,
    /// Its private key (PKCS#8 DER).
    pub key: PrivatePkcs8KeyDer<'static>,
    /// When it stops being valid.
    pub not_after: SystemTime,
}

/// A new CA's PEM files, as `tollgate ca init` writes them.
pub struct GeneratedCa {
    /// The certificate (`ca.pem`).
    pub cert_pem: String,
    /// The PKCS#8 private key (`ca.key`).
    pub key_pem: String,
}

/// Makes a new CA: an ECDSA P-256 key and a self-signed certificate named
/// [`CA_COMMON_NAME`], allowed to sign certificates (and CRLs) but no sub-CAs, valid ten years.
pub fn generate() -> Result<GeneratedCa, rcgen::Error> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    name.push(DnType::OrganizationName, "tollgate");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(random_serial());
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    let cert = params.self_signed(&key)?;
    Ok(GeneratedCa {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

impl Authority {
    /// Reads and checks the CA's certificate and key: a PEM CA certificate (basic constraints
    /// `cA`, key usage allowing `keyCertSign` where it has one, not expired), its PKCS#8
    /// private key, and that a certificate issued with them verifies against the file's
    /// certificate.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Authority, CaError> {
        let cert_bytes = std::fs::read(cert_path).map_err(|source| CaError::Unreadable {
            file: CaFile::Cert,
            path: cert_path.to_owned(),
            source,
        })?;
        let cert = CertificateDer::pem_slice_iter(&cert_bytes)
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| CaError::NoCertificate {
                path: cert_path.to_owned(),
            })?;
        let (subject, not_after) = inspect(&cert, cert_path)?;
        let params = CertificateParams::from_ca_cert_der(&cert).map_err(|err| {
            CaError::BadCertificate {
                path: cert_path.to_owned(),
                why: format!("certificates cannot be issued with it ({err}; a name part with several attributes is not supported)"),
            }
        })?;
        let key_bytes = std::fs::read(key_path).map_err(|source| CaError::Unreadable {
            file: CaFile::Key,
            path: key_path.to_owned(),
            source,
        })?;
        let Ok(PrivateKeyDer::Pkcs8(pkcs8)) = PrivateKeyDer::from_pem_slice(&key_bytes) else {
            return Err(CaError::NoKey {
                path: key_path.to_owned(),
            });
        };
        let bad_key = |why: String| CaError::BadKey {
            path: key_path.to_owned(),
            why,
        };
        let key = KeyPair::try_from(&pkcs8).map_err(|err| bad_key(err.to_string()))?;
        let provider = ring_provider::default_provider();
        match rustls::sign::CertifiedKey::from_der(
            vec![cert.clone()],
            PrivateKeyDer::Pkcs8(pkcs8.clone_key()),
            &provider,
        ) {
            Ok(_) => {}
            Err(rustls::Error::InconsistentKeys(_)) => {
                return Err(CaError::Mismatch {
                    key: key_path.to_owned(),
                    cert: cert_path.to_owned(),
                })
            }
            Err(err) => return Err(bad_key(err.to_string())),
        }
        let issuer = params
            .self_signed(&key)
            .map_err(|err| bad_key(err.to_string()))?;
        let authority = Authority {
            cert,
            issuer,
            key,
            subject,
            not_after,
        };
        authority
            .check_chain()
            .map_err(|why| CaError::Unchainable {
                path: cert_path.to_owned(),
                why,
            })?;
        Ok(authority)
    }

    /// The CA's subject, as `tollgate check` shows it (e.g. `CN=tollgate interception CA, O=tollgate`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// When the CA's certificate stops being valid.
    pub fn not_after(&self) -> SystemTime {
        self.not_after.into()
    }

    /// Whether `other` is the same certificate and key (a reload that left the files alone
    /// keeps the certificates already minted).
    pub fn same_as(&self, other: &Authority) -> bool {
        self.cert == other.cert && self.key.serialized_der() == other.key.serialized_der()
    }

    /// Issues the leaf certificate for `host` (a DNS name, or an IP address without
    /// brackets): the host as its only subject alternative name and its common name, issued
    /// by the CA's subject with its key id, a random serial, for server authentication, valid
    /// from an hour ago to a year from now or the CA's end, whichever is first.
    pub fn issue(&self, host: &str) -> Result<Leaf, rcgen::Error> {
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.to_owned().try_into()?),
        };
        let mut name = DistinguishedName::new();
        // X.520 bounds a common name at 64 characters; the alternative name is what counts.
        if host.len() <= 64 {
            name.push(DnType::CommonName, host);
        }
        self.mint(vec![san], name)
    }

    fn mint(&self, names: Vec<SanType>, subject: DistinguishedName) -> Result<Leaf, rcgen::Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = names;
        params.distinguished_name = subject;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = (now + LEAF_VALIDITY).min(self.not_after);
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        Ok(Leaf {
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            not_after: params_not_after(&cert),
        })
    }

    /// Issues a certificate with no names and checks that it verifies against the file's
    /// certificate as a trust anchor: a subject rcgen cannot reproduce byte for byte would
    /// give certificates no client accepts.
    fn check_chain(&self) -> Result<(), String> {
        let probe = self
            .mint(Vec::new(), DistinguishedName::new())
            .map_err(|err| err.to_string())?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert.clone())
            .map_err(|err| err.to_string())?;
        let parsed =
            rustls::server::ParsedCertificate::try_from(&probe.cert).map_err(|e| e.to_string())?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            &[],
            UnixTime::now(),
            ring_provider::default_provider()
                .signature_verification_algorithms
                .all,
        )
        .map_err(|err| err.to_string())
    }
}

/// A leaf's `notAfter` as a system time.
fn params_not_after(cert: &rcgen::Certificate) -> SystemTime {
    cert.params().not_after.into()
}

/// Reads what `tollgate` checks of a CA certificate: that it is one, that it may sign
/// certificates, that it has not expired; returns its subject and end.
fn inspect(cert: &CertificateDer<'_>, path: &Path) -> Result<(String, OffsetDateTime), CaError> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|err| CaError::BadCertificate {
            path: path.to_owned(),
            why: format!("the certificate cannot be parsed: {err}"),
        })?;
    let not_ca = |why| CaError::NotCa {
        path: path.to_owned(),
        why,
    };
    match parsed.basic_constraints() {
        Ok(Some(constraints)) if constraints.value.ca => {}
        Ok(_) => {
            return Err(not_ca(
                "its basic constraints do not make it a CA (cA is not set)",
            ))
        }
        Err(_) => return Err(not_ca("its basic constraints cannot be read")),
    }
    match parsed.key_usage() {
        Ok(Some(usage)) if !usage.value.key_cert_sign() => {
            return Err(not_ca(
                "its key usage does not allow signing certificates (keyCertSign)",
            ))
        }
        Ok(_) => {}
        Err(_) => return Err(not_ca("its key usage cannot be read")),
    }
    let not_after = parsed.validity().not_after.to_datetime();
    if not_after <= OffsetDateTime::now_utc() {
        return Err(CaError::Expired {
            path: path.to_owned(),
            date: parsed.validity().not_after.to_string(),
        });
    }
    Ok((parsed.subject().to_string(), not_after))
}

/// A random positive 128-bit serial number (RFC 5280 asks for at most 20 octets, positive).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA made by [`generate`], written to a scratch directory and loaded back.
    fn loaded() -> (tempfile::TempDir, Authority) {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let ca = generate().expect("a new CA");
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).expect("write ca.pem");
        std::fs::write(dir.path().join("ca.key"), &ca.key_pem).expect("write ca.key");
        let authority = Authority::load(&dir.path().join("ca.pem"), &dir.path().join("ca.key"))
            .expect("the new CA loads");
        (dir, authority)
    }

    fn parse(der: &[u8]) -> x509_parser::certificate::X509Certificate<'_> {
        x509_parser::parse_x509_certificate(der)
            .expect("a certificate x509-parser reads")
            .1
    }

    #[test]
    fn a_new_ca_is_a_named_p256_ca_for_signing_certificates_for_ten_years() {
        let (_dir, authority) = loaded();
        let cert = parse(&authority.cert);
        assert_eq!(
            authority.subject(),
            "CN=tollgate interception CA, O=tollgate"
        );
        let constraints = cert
            .basic_constraints()
            .expect("readable")
            .expect("present");
        assert!(constraints.value.ca);
        assert_eq!(constraints.value.path_len_constraint, Some(0));
        let usage = cert.key_usage().expect("readable").expect("present").value;
        assert!(usage.key_cert_sign() && usage.crl_sign());
        assert!(!usage.digital_signature());
        let validity = cert.validity();
        let years = (validity.not_after.timestamp() - validity.not_before.timestamp()) / 86_400;
        assert_eq!(years / 365, 10, "{validity:?}");
        assert_eq!(
            cert.public_key()
                .algorithm
                .parameters
                .as_ref()
                .map(|p| p.as_oid().map(|oid| oid.to_id_string()).ok()),
            Some(Some("1.2.840.10045.3.1.7".to_owned())),
            "P-256"
        );
    }

    #[test]
    fn a_leaf_names_its_host_and_is_issued_by_the_ca_for_at_most_a_year() {
        let (_dir, authority) = loaded();
        for (host, ip) in [
            ("jira.acme.example", false),
            ("127.0.0.1", true),
            ("::1", true),
        ] {
            let leaf = authority.issue(host).expect("a leaf");
            let cert = parse(&leaf.cert);
            assert_eq!(cert.issuer(), parse(&authority.cert).subject(), "{host}");
            let sans = cert
                .subject_alternative_name()
                .expect("readable")
                .expect("present")
                .value
                .general_names
                .clone();
            assert_eq!(sans.len(), 1, "{host}: {sans:?}");
            match (&sans[0], ip) {
                (x509_parser::extensions::GeneralName::DNSName(name), false) => {
                    assert_eq!(*name, host)
                }
                (x509_parser::extensions::GeneralName::IPAddress(bytes), true) => {
                    let expected: IpAddr = host.parse().expect("an address");
                    let octets = match expected {
                        IpAddr::V4(v4) => v4.octets().to_vec(),
                        IpAddr::V6(v6) => v6.octets().to_vec(),
                    };
                    assert_eq!(bytes.to_vec(), octets, "{host}");
                }
                (other, _) => panic!("{host}: unexpected name {other:?}"),
            }
            let validity = cert.validity();
            let now = OffsetDateTime::now_utc().unix_timestamp();
            assert!(
                validity.not_before.timestamp() <= now - 3500,
                "{validity:?}"
            );
            assert!(
                validity.not_after.timestamp() <= now + 366 * 86_400,
                "{validity:?}"
            );
            assert!(
                validity.not_after.timestamp() >= now + 364 * 86_400,
                "{validity:?}"
            );
            assert!(!cert
                .basic_constraints()
                .expect("readable")
                .is_some_and(|c| c.value.ca));
        }
        let one = parse(&authority.issue("a.example").expect("a leaf").cert)
            .serial
            .clone();
        let two = parse(&authority.issue("a.example").expect("a leaf").cert)
            .serial
            .clone();
        assert_ne!(one, two, "serials are random");
    }

    #[test]
    fn a_leaf_verifies_for_its_host_against_the_ca_file() {
        let (_dir, authority) = loaded();
        let leaf = authority.issue("jira.acme.example").expect("a leaf");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(authority.cert.clone()).expect("the CA as a root");
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(ring_provider::default_provider()),
        )
        .build()
        .expect("a verifier");
        let name = rustls::pki_types::ServerName::try_from("jira.acme.example").expect("a name");
        rustls::client::danger::ServerCertVerifier::verify_server_cert(
            &*verifier,
            &leaf.cert,
            &[],
            &name,
            &[],
            UnixTime::now(),
        )
        .expect("the leaf verifies for its host");
        let other = rustls::pki_types::ServerName::try_from("other.example").expect("a name");
        assert!(
            rustls::client::danger::ServerCertVerifier::verify_server_cert(
                &*verifier,
                &leaf.cert,
                &[],
                &other,
                &[],
                UnixTime::now(),
            )
            .is_err()
        );
    }

    #[test]
    fn bad_files_are_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let path = |name: &str| dir.path().join(name);
        let ca = generate().expect("a CA");
        let other = generate().expect("another CA");
        std::fs::write(path("ca.pem"), &ca.cert_pem).expect("write");
        std::fs::write(path("ca.key"), &ca.key_pem).expect("write");
        std::fs::write(path("other.key"), &other.key_pem).expect("write");
        std::fs::write(path("garbage"), "not PEM at all\n").expect("write");
        let leaf_key = KeyPair::generate().expect("a key");
        let leaf = CertificateParams::new(vec!["x.example".to_owned()])
            .expect("params")
            .self_signed(&leaf_key)
            .expect("a leaf");
        std::fs::write(path("leaf.pem"), leaf.pem()).expect("write");
        std::fs::write(path("leaf.key"), leaf_key.serialize_pem()).expect("write");

        let cases: [(&str, &str, CaFile, &str); 5] = [
            ("missing.pem", "ca.key", CaFile::Cert, "cannot read"),
            (
                "garbage",
                "ca.key",
                CaFile::Cert,
                "holds no PEM certificate",
            ),
            (
                "leaf.pem",
                "leaf.key",
                CaFile::Cert,
                "is not a CA certificate",
            ),
            (
                "ca.pem",
                "garbage",
                CaFile::Key,
                "holds no PKCS#8 PEM private key",
            ),
            (
                "ca.pem",
                "other.key",
                CaFile::Key,
                "is not the private key of the certificate",
            ),
        ];
        for (cert, key, file, says) in cases {
            let err = Authority::load(&path(cert), &path(key)).expect_err("refused");
            assert_eq!(err.file(), file, "{cert} {key}: {err}");
            assert!(err.to_string().contains(says), "{cert} {key}: {err}");
        }
    }
}
