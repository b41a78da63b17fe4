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
}

impl ClientArgs {
    /// Connects with the SDK.
    pub(crate) async fn connect(&self) -> anyhow::Result<eventline_client::Client> {
        eventline_client::Client::connect(self.server.clone(), &self.api_key)
            .await
            .context("--server and --api-key")
    }
}
