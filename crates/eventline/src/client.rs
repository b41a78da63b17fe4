//! Where the client commands (`send`, `import`, `query`, `tail`, `export`) connect; the
//! connection itself is the SDK's (`eventline-client`).

use anyhow::Context;
use clap::Args;

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
    /// PEM CA to trust for an https:// server instead of the system's roots.
    #[arg(long, env = "EVENTLINE_CA_CERT")]
    pub(crate) ca_cert: Option<std::path::PathBuf>,
    /// PEM client certificate, for a server that requires one (mTLS).
    #[arg(long, env = "EVENTLINE_CLIENT_CERT", requires = "client_key")]
    pub(crate) client_cert: Option<std::path::PathBuf>,
    /// PEM key of --client-cert.
    #[arg(long, env = "EVENTLINE_CLIENT_KEY", requires = "client_cert")]
    pub(crate) client_key: Option<std::path::PathBuf>,
}

impl ClientArgs {
    /// Connects with the SDK.
    pub(crate) async fn connect(&self) -> anyhow::Result<eventline_client::Client> {
        self.builder()?
            .connect()
            .await
            .context("--server and --api-key")
    }

    /// The SDK's builder with the TLS files read.
    pub(crate) fn builder(&self) -> anyhow::Result<eventline_client::ClientBuilder> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let mut builder = eventline_client::Client::builder(self.server.clone(), &self.api_key);
        if let Some(path) = &self.ca_cert {
            builder = builder.ca_certificate(read(path)?);
        }
        if let (Some(certificate), Some(key)) = (&self.client_cert, &self.client_key) {
            builder = builder.identity(read(certificate)?, read(key)?);
        }
        Ok(builder)
    }
}
