//! HTTPS for the page server (`http.tls_cert`, `http.tls_key`): the
//! rustls server configuration, read from PEM files.
//!
//! Over plain HTTP everything the page exchanges crosses the LAN in clear:
//! the MQTT login in the page's CONNECT over `ws://`, WHEP and snapshot
//! bearers, the snapshots themselves. With a certificate the same listeners
//! (the page's and `broker.ws_listen`) speak only TLS, so the page uses
//! `wss://` for MQTT.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the certificate or key could not be used; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no certificate.
    #[error("http.tls_cert {}: {why}", path.display())]
    Cert { path: PathBuf, why: String },
    /// The key file could not be read or holds no private key.
    #[error("http.tls_key {}: {why}", path.display())]
    Key { path: PathBuf, why: String },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("http.tls_cert {} with http.tls_key {}: {why}", cert.display(), key.display())]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
}

/// The server configuration for a PEM certificate chain and private key
/// (PKCS#8, PKCS#1 or SEC1), HTTP/1.1 only, with the ring provider.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_err = |why: String| TlsError::Cert {
        path: cert.to_owned(),
        why,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(pem_why(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(pem_why(e)))?;
    if chain.is_empty() {
        return Err(cert_err("no PEM certificate in it".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        why: pem_why(e),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pair_err = |e: rustls::Error| TlsError::Pair {
        cert: cert.to_owned(),
        key: key.to_owned(),
        why: e.to_string(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(pair_err)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(pair_err)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn pem_why(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(e) => format!("cannot read: {e}"),
        E::NoItemsFound => "no PEM item of the expected kind in it".into(),
        other => format!("not valid PEM: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("campeer-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn a_generated_pair_loads_and_errors_name_the_file() {
        let d = tmp("pair");
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
        let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).expect("write");
        std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write");
        let c = server_config(&cert, &key).expect("a valid pair");
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);

        let missing = d.join("missing.pem");
        let e = server_config(&missing, &key).unwrap_err().to_string();
        assert!(
            e.starts_with("http.tls_cert ")
                && e.contains("missing.pem")
                && e.contains("cannot read"),
            "{e}"
        );
        let e = server_config(&cert, &missing).unwrap_err().to_string();
        assert!(
            e.starts_with("http.tls_key ") && e.contains("missing.pem"),
            "{e}"
        );
        // The key file given as the certificate: no certificate in it.
        let e = server_config(&key, &key).unwrap_err().to_string();
        assert!(
            e.starts_with("http.tls_cert ") && e.contains("key.pem"),
            "{e}"
        );
        // A key that is not the certificate's.
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
        let other_key = d.join("other-key.pem");
        std::fs::write(&other_key, other.signing_key.serialize_pem()).expect("write");
        let e = server_config(&cert, &other_key).unwrap_err().to_string();
        assert!(e.contains("other-key.pem") && e.contains("cert.pem"), "{e}");
        let _ = std::fs::remove_dir_all(d);
    }
}
