//! `eventline migrate`, `tenant` and `key`: operator commands that work on the database
//! directly, so they need no running server and no admin token.

use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use eventline_core::{Scope, TenantId, admin::validate_tenant_name};
use eventline_server::{Config, auth::issue_key};
use eventline_store::Store;

#[derive(Debug, Subcommand)]
pub(crate) enum TenantCommand {
    /// Creates a tenant.
    Create {
        /// Unique name, 1 to 128 characters.
        name: String,
    },
    /// Lists tenants.
    List,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Creates an API key and prints its secret once.
    Create {
        /// Tenant id or name.
        #[arg(long)]
        tenant: String,
        /// Scopes: ingest, query, admin (repeat or comma-separate).
        #[arg(long = "scope", value_delimiter = ',', required = true)]
        scopes: Vec<Scope>,
    },
    /// Lists a tenant's keys.
    List {
        /// Tenant id or name.
        #[arg(long)]
        tenant: String,
    },
    /// Revokes a key.
    Revoke {
        /// The key id (key_…), as printed by `key create` or `key list`.
        key_id: String,
    },
}

async fn open(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    eventline_store::open(config.database.url.as_deref(), None, &config.data.dir, 2)
        .await
        .context("cannot open the database")
}

pub(crate) async fn migrate(config: Config) -> anyhow::Result<()> {
    let store = open(&config).await?;
    store.ready().await.context("migrations did not apply")?;
    println!("migrations applied");
    Ok(())
}

pub(crate) async fn tenant(command: TenantCommand, config: Config) -> anyhow::Result<()> {
    let store = open(&config).await?;
    match command {
        TenantCommand::Create { name } => {
            validate_tenant_name("name", &name)?;
            let tenant = store.create_tenant(&name).await?;
            println!("{}\t{}", tenant.tenant_id, tenant.name);
        }
        TenantCommand::List => {
            for tenant in store.list_tenants().await? {
                println!(
                    "{}\t{}\t{}",
                    tenant.tenant_id,
                    tenant.name,
                    tenant.created_at.to_rfc3339()
                );
            }
        }
    }
    Ok(())
}

pub(crate) async fn key(command: KeyCommand, config: Config) -> anyhow::Result<()> {
    let store = open(&config).await?;
    match command {
        KeyCommand::Create { tenant, mut scopes } => {
            let tenant_id = resolve_tenant(&*store, &tenant).await?;
            scopes.sort();
            scopes.dedup();
            let issued = issue_key(tenant_id, scopes, None);
            store.create_api_key(&issued.key).await?;
            println!("key id: {}", issued.key.key_id);
            println!("secret (shown once): {}", issued.secret);
        }
        KeyCommand::List { tenant } => {
            let tenant_id = resolve_tenant(&*store, &tenant).await?;
            for key in store.list_api_keys(tenant_id).await? {
                let scopes: Vec<&str> = key.scopes.iter().map(|scope| scope.as_str()).collect();
                let state = match key.revoked_at {
                    Some(at) => format!("revoked {}", at.to_rfc3339()),
                    None => "active".to_owned(),
                };
                println!(
                    "{}\t{}\t{}\t{}",
                    key.key_id,
                    scopes.join(","),
                    key.created_at.to_rfc3339(),
                    state
                );
            }
        }
        KeyCommand::Revoke { key_id } => {
            let key = store.revoke_api_key(&key_id).await?;
            println!("revoked {}", key.key_id);
        }
    }
    Ok(())
}

async fn resolve_tenant(store: &dyn Store, id_or_name: &str) -> anyhow::Result<TenantId> {
    let tenants = store.list_tenants().await?;
    if let Some(tenant) = tenants
        .iter()
        .find(|tenant| tenant.name == id_or_name || tenant.tenant_id.to_string() == id_or_name)
    {
        return Ok(tenant.tenant_id);
    }
    bail!("no tenant with id or name {id_or_name:?}; `eventline tenant list` shows them")
}
