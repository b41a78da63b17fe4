//! TLS on the gRPC and HTTP listeners with rustls (ring). The certificate, key and
//! optional client CA are read from files and read again every `tls.reload_interval_ms`;
//! when their bytes change, new connections get the new configuration and open ones
//! keep theirs, so cert-manager's rotation needs no restart. A configuration that fails
//! to load (a key not matching its certificate halfway through a rotation) is logged and
//! the last good one stays in use. Handshakes run off the accept loop, each bounded by
//! the listener's first-byte timeout, so a client that stalls a handshake holds only
//! its own connection slot.

use std::{
    io,
    path::PathBuf,
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use rustls::{
    ServerConfig,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::{
    config::TlsConfig,
    connection::{Acceptor, ConnectionInfo, GuardedStream},
};

/// Handshaken connections waiting for tonic to take them.
const HANDSHAKEN_QUEUE: usize = 64;

/// The files of a TLS configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

/// The bytes a configuration was built from, to notice a change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TlsBytes {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl TlsFiles {
    fn read(&self) -> Result<TlsBytes, String> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
        };
        Ok(TlsBytes {
            cert: read(&self.cert)?,
            key: read(&self.key)?,
            client_ca: self.client_ca.as_ref().map(read).transpose()?,
        })
    }
}

impl TlsBytes {
    /// A rustls server configuration offering HTTP/2 and HTTP/1.1 (gRPC-Web, REST).
    fn server_config(&self, files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("tls.cert_path {}: {error}", files.cert.display()))?;
        if chain.is_empty() {
            return Err(format!(
                "tls.cert_path {} holds no PEM certificate",
                files.cert.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .map_err(|error| format!("tls.key_path {}: {error}", files.key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("tls: {error}"))?;
        let builder = match (&self.client_ca, &files.client_ca) {
            (Some(ca), Some(path)) => {
                builder.with_client_cert_verifier(client_verifier(ca, path, provider)?)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|error| {
            format!(
                "tls: {} and {} do not make a certificate and its key: {error}",
                files.cert.display(),
                files.key.display()
            )
        })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn client_verifier(
    ca_pem: &[u8],
    path: &std::path::Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem) {
        let certificate = certificate
            .map_err(|error| format!("tls.client_ca_path {}: {error}", path.display()))?;
        roots
            .add(certificate)
            .map_err(|error| format!("tls.client_ca_path {}: {error}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "tls.client_ca_path {} holds no PEM certificate",
            path.display()
        ));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|error| format!("tls.client_ca_path {}: {error}", path.display()))
}

/// The current TLS configuration of both listeners, replaced when its files change.
#[derive(Debug, Clone)]
pub(crate) struct Tls {
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl Tls {
    /// Loads the configured files, or `None` when TLS is off; a configuration that does
    /// not load stops the server from starting.
    pub(crate) fn load(config: &TlsConfig) -> Result<Option<(Self, TlsReloader)>, String> {
        let (Some(cert), Some(key)) = (&config.cert_path, &config.key_path) else {
            return Ok(None);
        };
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: config.client_ca_path.clone(),
        };
        let bytes = files.read()?;
        let server_config = bytes.server_config(&files)?;
        let tls = Self {
            current: Arc::new(RwLock::new(server_config)),
        };
        let reloader = TlsReloader {
            tls: tls.clone(),
            files,
            loaded: bytes.clone(),
            attempted: bytes,
            interval: Duration::from_millis(config.reload_interval_ms),
        };
        Ok(Some((tls, reloader)))
    }

    fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        TlsAcceptor::from(Arc::clone(&config))
    }

    /// Runs the TLS handshake of an accepted connection, bounded by `timeout`.
    pub(crate) async fn handshake(
        &self,
        stream: GuardedStream,
        timeout: Duration,
    ) -> Option<ServerStream> {
        match tokio::time::timeout(timeout, self.acceptor().accept(stream)).await {
            Ok(Ok(stream)) => {
                metrics::counter!("eventline_tls_handshakes_total", "outcome" => "ok").increment(1);
                Some(ServerStream::Tls(Box::new(stream)))
            }
            Ok(Err(error)) => {
                tracing::debug!(error = %error, "tls handshake failed");
                metrics::counter!("eventline_tls_handshakes_total", "outcome" => "failed")
                    .increment(1);
                None
            }
            Err(_) => {
                metrics::counter!("eventline_tls_handshakes_total", "outcome" => "timed_out")
                    .increment(1);
                None
            }
        }
    }
}

/// Watches the files of a [`Tls`] and swaps in a new configuration when they change.
#[derive(Debug)]
pub(crate) struct TlsReloader {
    tls: Tls,
    files: TlsFiles,
    /// What the configuration in use was built from.
    loaded: TlsBytes,
    /// The last bytes tried, so a broken configuration is reported once, not per tick.
    attempted: TlsBytes,
    interval: Duration,
}

impl TlsReloader {
    /// Checks the files every interval until the task is aborted.
    pub(crate) fn spawn(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                self.reload_if_changed();
            }
        })
    }

    fn reload_if_changed(&mut self) {
        let bytes = match self.files.read() {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(error = %error, "tls files unreadable; keeping the loaded certificate");
                return;
            }
        };
        if bytes == self.loaded || bytes == self.attempted {
            return;
        }
        self.attempted = bytes.clone();
        match bytes.server_config(&self.files) {
            Ok(config) => {
                *self
                    .tls
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
                self.loaded = bytes;
                metrics::counter!("eventline_tls_reloads_total", "outcome" => "ok").increment(1);
                tracing::info!(cert = %self.files.cert.display(), "tls certificate reloaded");
            }
            Err(error) => {
                metrics::counter!("eventline_tls_reloads_total", "outcome" => "failed")
                    .increment(1);
                tracing::warn!(error = %error, "tls files changed but do not load; keeping the loaded certificate");
            }
        }
    }
}

/// An accepted connection, in plaintext or TLS.
#[derive(Debug)]
pub(crate) enum ServerStream {
    Plain(GuardedStream),
    Tls(Box<TlsStream<GuardedStream>>),
}

impl ServerStream {
    /// The connection's request-visible information.
    pub(crate) fn info(&self) -> ConnectionInfo {
        match self {
            Self::Plain(stream) => stream.info(),
            Self::Tls(stream) => stream.get_ref().0.info(),
        }
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(context, buffer),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(context, buffer),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(context, buffer),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(context, buffer),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write_vectored(context, buffers),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(context, buffers),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(stream) => stream.is_write_vectored(),
            Self::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(context),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(context),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(context),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(context),
        }
    }
}

impl tonic::transport::server::Connected for ServerStream {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info()
    }
}

/// The gRPC listener's connections for tonic: plaintext as accepted, or TLS once each
/// handshake (run concurrently, bounded by `handshake_timeout`) has finished.
pub(crate) fn incoming(
    acceptor: Acceptor,
    tls: Option<Tls>,
    handshake_timeout: Duration,
) -> Pin<Box<dyn Stream<Item = io::Result<ServerStream>> + Send>> {
    let Some(tls) = tls else {
        return Box::pin(futures::stream::unfold(acceptor, |acceptor| async move {
            let stream = acceptor.accept().await;
            Some((Ok(ServerStream::Plain(stream)), acceptor))
        }));
    };
    let (handshaken, queue) = tokio::sync::mpsc::channel(HANDSHAKEN_QUEUE);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                stream = acceptor.accept() => stream,
                // tonic stopped taking connections: the server is shutting down.
                () = handshaken.closed() => break,
            };
            let tls = tls.clone();
            let handshaken = handshaken.clone();
            tokio::spawn(async move {
                if let Some(stream) = tls.handshake(stream, handshake_timeout).await {
                    let _ = handshaken.send(Ok(stream)).await;
                }
            });
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(queue))
}
