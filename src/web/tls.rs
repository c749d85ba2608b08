//! TLS for the box's listeners (rustls, ring): the staff UI/API over HTTPS on `http.listen` and,
//! with `mqtt.tls_listen`, MQTT over TLS for devices. The certificate is the one generated when
//! the package was installed or one the retailer provides (`[tls] cert_file`, `key_file`, PEM);
//! docs/install.md says how devices and browsers come to trust it.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// The server side of TLS for `alpn` (e.g. `http/1.1`; none for MQTT), or `None` without a
/// certificate.
pub fn acceptor(
    cfg: &TlsConfig,
    alpn: &[&[u8]],
) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) else {
        return Ok(None);
    };
    let mut config = server_config(cert, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

fn server_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let cert_pem =
        std::fs::read(cert).with_context(|| format!("tls.cert_file {}", cert.display()))?;
    let key_pem = std::fs::read(key).with_context(|| format!("tls.key_file {}", key.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("tls.cert_file {}: {e}", cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "tls.cert_file {}: no PEM certificate in it",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| anyhow::anyhow!("tls.key_file {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("tls.cert_file and tls.key_file do not make a usable certificate and key pair")
}
