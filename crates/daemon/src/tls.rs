//! STARTTLS for the SMTP and LMTP servers: rustls with the ring provider (TLS 1.2 and 1.3),
//! a certificate and key read from PEM files, reloaded on SIGHUP without a restart (new
//! handshakes get the new certificate; sessions in progress keep theirs).
//!
//! Trusts the certificate and key files (root's or the daemon's); checks that they parse and
//! that the key matches. Fails at start with the file and the reason; a failed reload keeps
//! the previous certificate and logs why.
//!
//! Attacks stopped: the session discards anything the client pipelined after STARTTLS
//! before the handshake (crates/proto, the CVE-2011-0411 class); no TLS 1.0/1.1 and no
//! non-AEAD suites (rustls has none); no OpenSSL in the process.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate in use, swappable.
#[derive(Debug)]
pub struct Certificates {
    certificate: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificates {
    /// Loads the pair; the error names the file.
    pub fn load(certificate: &Path, key: &Path) -> Result<Arc<Certificates>, String> {
        let ck = read_pair(certificate, key)?;
        Ok(Arc::new(Certificates {
            certificate: certificate.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(ck)),
        }))
    }

    /// Reads the files again; on success new handshakes use the new pair.
    pub fn reload(&self) -> Result<(), String> {
        let ck = read_pair(&self.certificate, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ck);
        Ok(())
    }

    /// The rustls server configuration resolving through `self`.
    pub fn server_config(self: &Arc<Self>) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_no_client_auth().with_cert_resolver(self.clone()));
        match config {
            Ok(c) => Arc::new(c),
            // The ring provider supports the default versions; this cannot fail in practice.
            Err(e) => panic!("rustls rejected its own defaults: {e}"),
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

fn read_pair(certificate: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .map_err(|e| format!("{}: {e}", certificate.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", certificate.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no certificate in the file",
            certificate.display()
        ));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| {
        format!(
            "{} and {} do not belong together: {e}",
            certificate.display(),
            key.display()
        )
    })?;
    Ok(ck)
}
