//! TLS configuration for TLS and WSS: loading a PEM certificate and key, making a self-signed
//! pair for local use, and client configs for outbound TLS.
//!
//! Every config is built with the ring provider passed explicitly
//! (`builder_with_provider`), so nothing depends on a process-wide default provider and the
//! aws-lc provider that str0m brings along is never picked by accident.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// TLS material for [`Transports::bind`](super::Transports::bind).
#[derive(Debug, Clone, Default)]
pub struct TlsContext {
    /// Server side of TLS and WSS listeners. When `None`, `bind` loads `tls_cert`/`tls_key`
    /// from the transport config if a TLS or WSS listener needs it.
    pub server: Option<Arc<ServerConfig>>,
    /// Client side of outbound TLS connections. When `None`, sending to a TLS address with no
    /// open connection fails with `SendError::TlsClientNotConfigured`. The peer's certificate
    /// is checked against its IP address (a destination is only an address here).
    pub client: Option<Arc<ClientConfig>>,
}

/// Why TLS material could not be loaded or made. Each names the file concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file could not be read or holds bad PEM.
    #[error("cannot read certificates from {}: {source}", path.display())]
    ReadCertificates {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("no certificate found in {}", path.display())]
    NoCertificates {
        /// The file.
        path: PathBuf,
    },
    /// The key file could not be read, holds bad PEM, or holds no private key.
    #[error("cannot read a private key from {}: {source}", path.display())]
    ReadKey {
        /// The file.
        path: PathBuf,
        /// What went wrong (`NoItemsFound` if there is no key in it).
        source: pem::Error,
    },
    /// rustls refused the certificate or key (e.g. they do not match, or the key type is
    /// unsupported).
    #[error("TLS certificate {} with key {} rejected: {source}", cert.display(), key.display())]
    Rejected {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// A trust anchor in a root file was refused.
    #[error("bad root certificate in {}: {source}", path.display())]
    BadRoot {
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// rustls refused to build a client config.
    #[error("cannot build a TLS client config: {0}")]
    Client(rustls::Error),
    /// rcgen could not make the certificate.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A generated file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_err = |source| TlsError::ReadCertificates {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Loads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1)
/// into a server config for TLS and WSS listeners.
pub fn load_tls_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certificates(cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsError::ReadKey {
        path: key_path.to_owned(),
        source,
    })?;
    let rejected = |source| TlsError::Rejected {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        source,
    };
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rejected)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(rejected)?;
    Ok(Arc::new(config))
}

/// A client config for outbound TLS that trusts exactly the certificates in `roots_path`
/// (PEM), e.g. a peer's self-signed certificate or a private CA.
pub fn client_config_with_roots(roots_path: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(roots_path)? {
        roots.add(cert).map_err(|source| TlsError::BadRoot {
            path: roots_path.to_owned(),
            source,
        })?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Client)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Makes a self-signed certificate for `hostnames` (DNS names or IP addresses, which become IP
/// subject alternative names) and writes it and its private key as PEM. The key file is
/// created readable by its owner only (on Unix). For local use and tests: browsers will not
/// trust it without an exception.
pub fn generate_self_signed(
    hostnames: &[String],
    cert_out: &Path,
    key_out: &Path,
) -> Result<(), TlsError> {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(hostnames.to_vec())?;
    write_file(key_out, signing_key.serialize_pem().as_bytes(), true)?;
    write_file(cert_out, cert.pem().as_bytes(), false)?;
    Ok(())
}

fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), TlsError> {
    let write_err = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(write_err)?;
    file.write_all(contents).map_err(write_err)?;
    file.sync_all().map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        generate_self_signed(&["localhost".into(), "127.0.0.1".into()], &cert, &key).unwrap();
        load_tls_config(&cert, &key).unwrap();
        client_config_with_roots(&cert).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
        }
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let missing = dir.path().join("missing.pem");
        let err = load_tls_config(&missing, &key).unwrap_err();
        assert!(matches!(err, TlsError::ReadCertificates { .. }), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        std::fs::write(&cert, "not pem").unwrap();
        let err = load_tls_config(&cert, &key).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificates { .. }), "{err}");

        generate_self_signed(&["localhost".into()], &cert, &key).unwrap();
        let err = load_tls_config(&cert, &cert).unwrap_err();
        assert!(matches!(err, TlsError::ReadKey { .. }), "{err}");
        assert!(err.to_string().contains("cert.pem"), "{err}");

        // A key that does not belong to the certificate.
        let other_cert = dir.path().join("other.pem");
        let other_key = dir.path().join("other.key");
        generate_self_signed(&["localhost".into()], &other_cert, &other_key).unwrap();
        let err = load_tls_config(&cert, &other_key).unwrap_err();
        assert!(matches!(err, TlsError::Rejected { .. }), "{err}");
    }
}
