//! An HTTPS listener for the emulator, so clients can be tested against a server whose
//! certificate only a private CA vouches for (lark-sink's `lark.tls.ca.file`, a TLS-intercepting
//! proxy, a private deployment).
//!
//! Why tokio-rustls and not axum-server: tokio-rustls (with rustls and the aws-lc-rs provider) is
//! already compiled into the workspace as reqwest's TLS stack, so this adds no new crate; axum
//! 0.8's [`Listener`] trait (which src/serve.rs accepts) wraps the TCP listener, and that is all
//! that is needed.
//! Handshakes run in their own tasks and finished connections are handed to axum through a
//! channel: one slow or failing handshake (a client that rejects the certificate) never holds up
//! the others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A handshake that has not finished after this long is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the certificate chain is not PEM (or holds no certificate): {0}")]
    Cert(String),
    #[error("the private key is not a PEM private key: {0}")]
    Key(String),
    #[error("rustls rejected the certificate and key: {0}")]
    Config(#[from] rustls::Error),
}

/// A rustls server config from a PEM certificate chain (server certificate first) and a PEM key.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServerConfig, TlsError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Cert("no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
    // The provider is named, not taken from the process default: more than one rustls provider
    // can be compiled in, and then `ServerConfig::builder()` would panic.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // HTTP/1.1 only: the emulator serves Title-Case header names, which HTTP/2 cannot carry
    // (src/serve.rs).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// TCP accept + TLS handshake, as an axum [`Listener`].
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: ServerConfig) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, ready) = mpsc::channel(64);
        // Ends when the receiver (the server) is dropped.
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "emulator TLS accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    break;
                }
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "emulator TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "emulator TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { local, ready })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task only ends once this receiver is gone, so this cannot happen while
            // the server runs; never resolve rather than spin.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
