//! Connections of the client commands (`send`, `import`, `query`, `tail`, `export`).

use anyhow::Context;
use clap::Args;
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

/// Where the server is and which key to use.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientArgs {
    /// Server address.
    #[arg(
        long,
        env = "EVENTLINE_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub(crate) server: String,
    /// API key (ingest scope to send, query scope to read).
    #[arg(long, env = "EVENTLINE_API_KEY", hide_env_values = true)]
    pub(crate) api_key: String,
}

/// Adds the API key to every request.
#[derive(Debug, Clone)]
pub(crate) struct ApiKey(MetadataValue<Ascii>);

impl Interceptor for ApiKey {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("x-api-key", self.0.clone());
        Ok(request)
    }
}

impl ApiKey {
    /// A key to send, checked to be a valid header value.
    pub(crate) fn new(secret: &str) -> anyhow::Result<Self> {
        Ok(Self(
            secret
                .parse()
                .context("the API key must be visible ASCII")?,
        ))
    }
}

/// A channel to the server that sends the key.
pub(crate) type Authorized = InterceptedService<Channel, ApiKey>;

impl ClientArgs {
    /// Connects and returns the channel and the key interceptor.
    pub(crate) async fn connect(&self) -> anyhow::Result<(Channel, ApiKey)> {
        let key = ApiKey::new(&self.api_key).context("--api-key")?;
        let channel = Channel::from_shared(self.server.clone())
            .context("--server must be a URL such as http://127.0.0.1:50051")?
            .connect()
            .await
            .with_context(|| format!("cannot connect to {}", self.server))?;
        Ok((channel, key))
    }
}

/// Turns a gRPC status into an error naming the code.
pub(crate) fn describe(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("server answered {:?}: {}", status.code(), status.message())
}
