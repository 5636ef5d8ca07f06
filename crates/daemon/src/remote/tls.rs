//! Outbound STARTTLS: rustls with the ring provider, and a certificate verifier that records
//! its verdict instead of refusing the handshake (opportunistic TLS, RFC 3207 §4.1 and the
//! practice of every MTA: an unverified certificate still beats plaintext). The verdict,
//! verified or not and why, goes into the delivery's log line.
//!
//! Trusts Mozilla's roots (webpki-roots) and the administrator's extra CA file. Fails at
//! start when the CA file does not read; a handshake that fails is an outcome for the
//! connection (the caller tries the next host or defers).
//!
//! Attacks stopped: none beyond passive eavesdropping, by design; an active attacker can
//! strip STARTTLS (MTA-STS and DANE are the answer, not done yet). Signatures are still
//! checked against the certificate's key, so the session is bound to the certificate the
//! verdict describes.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// What the certificate check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Verified,
    NotVerified(String),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Verified => write!(f, "verified"),
            Verdict::NotVerified(why) => write!(f, "not verified ({why})"),
        }
    }
}

/// Where a connection's verdict is written during its handshake.
pub type VerdictSlot = Arc<Mutex<Option<Verdict>>>;

/// The shared part: roots and provider.
#[derive(Debug)]
pub struct OutboundTls {
    inner: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

impl OutboundTls {
    pub fn new(ca_file: Option<&Path>) -> Result<OutboundTls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(file) = ca_file {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
                .map_err(|e| format!("{}: {e}", file.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("{}: no CA certificate in it", file.display()));
            }
        }
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("TLS verifier: {e}"))?;
        Ok(OutboundTls { inner, provider })
    }

    /// A client configuration for one connection, and where its verdict will be.
    pub fn client_config(&self) -> Result<(Arc<ClientConfig>, VerdictSlot), String> {
        let verdict = Arc::new(Mutex::new(None));
        let verifier = Arc::new(Recording {
            inner: self.inner.clone(),
            verdict: verdict.clone(),
        });
        let config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok((Arc::new(config), verdict))
    }
}

/// Checks the chain like webpki, writes down the result, and lets the handshake go on.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    verdict: Arc<Mutex<Option<Verdict>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let v = match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(_) => Verdict::Verified,
            Err(e) => Verdict::NotVerified(e.to_string()),
        };
        *self.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
