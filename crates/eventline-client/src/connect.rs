//! Connections: [`Client`], its [`ClientBuilder`] and the API key sent with every call.

use std::time::Duration;

use eventline_proto::v1::{
    ingest_service_client::IngestServiceClient, query_service_client::QueryServiceClient,
};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use crate::{
    Error,
    producer::{Producer, ProducerOptions},
};

/// Largest message the SDK accepts from the server: a page of 1000 events of up to 1 MiB
/// each would not fit in tonic's 4 MiB default.
const MAX_DECODING_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Adds the API key to every request as `x-api-key`.
#[derive(Debug, Clone)]
pub struct ApiKey(MetadataValue<Ascii>);

impl ApiKey {
    /// A key, checked to be a valid header value.
    pub fn new(secret: &str) -> Result<Self, Error> {
        secret.parse().map(Self).map_err(|_| Error::InvalidApiKey)
    }
}

impl Interceptor for ApiKey {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("x-api-key", self.0.clone());
        Ok(request)
    }
}

/// A channel that sends the API key with every call.
pub type Authorized = InterceptedService<Channel, ApiKey>;

/// A connection to an eventline server with one API key. Cloning is cheap and shares the
/// HTTP/2 connection; the query methods are in [`crate::query`], the producer is
/// [`Client::producer`].
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    key: ApiKey,
    target: String,
}

impl Client {
    /// Connects to `target` (`http://host:50051`, `https://…` for TLS, or `host:port`
    /// meaning plain HTTP/2) with `api_key`.
    pub async fn connect(target: impl Into<String>, api_key: &str) -> Result<Self, Error> {
        Self::builder(target, api_key).connect().await
    }

    /// A builder for a client with non-default settings.
    pub fn builder(target: impl Into<String>, api_key: &str) -> ClientBuilder {
        ClientBuilder {
            target: target.into(),
            api_key: api_key.to_owned(),
            connect_timeout: Duration::from_secs(10),
            ca_certificate: None,
            identity: None,
        }
    }

    /// The target this client talks to.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The generated IngestService client, for calls the SDK does not wrap.
    pub fn ingest_service(&self) -> IngestServiceClient<Authorized> {
        IngestServiceClient::with_interceptor(self.channel.clone(), self.key.clone())
            .max_encoding_message_size(eventline_core::limits::MAX_MESSAGE_BYTES)
            .max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES)
    }

    /// The generated QueryService client, for calls the SDK does not wrap.
    pub fn query_service(&self) -> QueryServiceClient<Authorized> {
        QueryServiceClient::with_interceptor(self.channel.clone(), self.key.clone())
            .max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES)
    }

    /// Starts a producer over this connection: `track()` queues, a background task sends.
    /// Must be called inside a Tokio runtime, which runs the sender task.
    pub fn producer(&self, options: ProducerOptions) -> Result<Producer, Error> {
        Producer::start(self.ingest_service(), options)
    }
}

/// Settings of a [`Client`] before it connects.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    target: String,
    api_key: String,
    connect_timeout: Duration,
    ca_certificate: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientBuilder {
    /// Trusts this PEM CA (or self-signed certificate) for an `https://` target instead
    /// of the system's roots.
    pub fn ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_certificate = Some(pem.into());
        self
    }

    /// Presents this PEM certificate and key to a server that asks for client
    /// certificates (mTLS).
    pub fn identity(
        mut self,
        certificate_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some((certificate_pem.into(), key_pem.into()));
        self
    }

    /// How long one connection attempt may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connects now; fails when the server cannot be reached.
    pub async fn connect(self) -> Result<Client, Error> {
        let (endpoint, key) = self.endpoint()?;
        let channel = endpoint.connect().await.map_err(|source| Error::Connect {
            target: self.target.clone(),
            source,
        })?;
        Ok(Client {
            channel,
            key,
            target: self.target,
        })
    }

    /// A client that connects on its first call, so it can be made before the server is
    /// up; a producer made from it queues until then.
    pub fn connect_lazy(self) -> Result<Client, Error> {
        let (endpoint, key) = self.endpoint()?;
        Ok(Client {
            channel: endpoint.connect_lazy(),
            key,
            target: self.target,
        })
    }

    fn endpoint(&self) -> Result<(Endpoint, ApiKey), Error> {
        let key = ApiKey::new(&self.api_key)?;
        let url = match self.target.contains("://") {
            true => self.target.clone(),
            false => format!("http://{}", self.target),
        };
        let invalid = |reason: String| Error::InvalidTarget {
            target: self.target.clone(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|error| invalid(error.to_string()))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            // Finds a connection that died without a reset (a partition, a lost NAT entry).
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        if url.starts_with("https://") {
            let mut tls = match &self.ca_certificate {
                Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
                None => ClientTlsConfig::new().with_native_roots(),
            };
            if let Some((certificate, key)) = &self.identity {
                tls = tls.identity(Identity::from_pem(certificate, key));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|error| invalid(error.to_string()))?;
        } else if self.ca_certificate.is_some() || self.identity.is_some() {
            return Err(invalid(
                "a CA certificate or client identity needs an https:// target".into(),
            ));
        }
        Ok((endpoint, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_targets_and_keys_are_refused_naming_them() {
        let error = Client::builder("http://bad host:1", "k")
            .connect_lazy()
            .unwrap_err();
        assert!(error.to_string().contains("bad host"), "{error}");
        let error = Client::builder("127.0.0.1:1", "key\nwith newline")
            .connect_lazy()
            .unwrap_err();
        assert!(matches!(error, Error::InvalidApiKey), "{error}");
    }

    #[tokio::test]
    async fn a_target_without_scheme_means_plain_http2() {
        let client = Client::builder("127.0.0.1:1", "k").connect_lazy().unwrap();
        assert_eq!(client.target(), "127.0.0.1:1");
    }
}
