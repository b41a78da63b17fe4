//! `eventline migrate`, `tenant` and `key`: operator commands that work on the database
//! directly, so they need no running server and no admin token.

use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use eventline_core::{Actor, AuditQuery, RateLimit, Scope, TenantId, admin::validate_tenant_name};
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
        /// The key stops working after this long (`90d`, `12h`); default never.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
        /// Ingest rate limit of this key, events per second on each server replica;
        /// default: the server's limits.events_per_second_per_key.
        #[arg(long)]
        events_per_second: Option<u32>,
        /// Events the key may send at once (default: one second's worth).
        #[arg(long, requires = "events_per_second")]
        burst: Option<u32>,
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

pub(crate) async fn migrate(config: Config, require_citus: bool) -> anyhow::Result<()> {
    let postgres_url = config
        .database
        .url
        .as_deref()
        .filter(|url| url.starts_with("postgres://") || url.starts_with("postgresql://"));
    let Some(url) = postgres_url else {
        anyhow::ensure!(
            !require_citus,
            "--require-citus needs a PostgreSQL database URL (a Citus coordinator's)"
        );
        let store = open(&config).await?;
        store.ready().await.context("migrations did not apply")?;
        println!("migrations applied");
        return Ok(());
    };
    let store = eventline_store::postgres::PgStore::connect(url, 2)
        .await
        .context("cannot open the database")?;
    store.migrate().await.context("migrations did not apply")?;
    store.ready().await.context("migrations did not apply")?;
    if store.is_distributed() {
        println!("migrations applied; tables distributed by tenant_id on Citus");
    } else {
        anyhow::ensure!(
            !require_citus,
            "--require-citus: the database has no citus extension, so nothing was \
             distributed; CREATE EXTENSION citus on every node and register the workers \
             with citus_add_node (README \"Scale out\"), then migrate again"
        );
        println!("migrations applied");
    }
    Ok(())
}

/// Lists the audit trail, newest first, as tab-separated lines.
#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    /// Only this tenant's records (id or name).
    #[arg(long)]
    tenant: Option<String>,
    /// Most records to print.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

pub(crate) async fn audit(args: AuditArgs, config: Config) -> anyhow::Result<()> {
    let store = open(&config).await?;
    let tenant_id = match &args.tenant {
        Some(tenant) => Some(resolve_tenant(&*store, tenant).await?),
        None => None,
    };
    let events = store
        .list_audit_events(&AuditQuery {
            tenant_id,
            before: None,
            limit: args.limit,
        })
        .await?;
    for event in events {
        let details: Vec<String> = event
            .details
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        println!(
            "{}	{}	{}	{}	{}	{}",
            event.occurred_at.to_rfc3339(),
            event.tenant_id,
            event.actor,
            event.action.as_str(),
            event.target,
            details.join(" ")
        );
    }
    Ok(())
}

pub(crate) async fn tenant(command: TenantCommand, config: Config) -> anyhow::Result<()> {
    let store = open(&config).await?;
    match command {
        TenantCommand::Create { name } => {
            validate_tenant_name("name", &name)?;
            let tenant = store.create_tenant(&name, &Actor::Cli).await?;
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
        KeyCommand::Create {
            tenant,
            mut scopes,
            expires_in,
            events_per_second,
            burst,
        } => {
            let tenant_id = resolve_tenant(&*store, &tenant).await?;
            scopes.sort();
            scopes.dedup();
            let mut issued = issue_key(tenant_id, scopes, None);
            if let Some(lifetime) = expires_in {
                let lifetime =
                    chrono::Duration::from_std(lifetime).context("--expires-in is too long")?;
                issued.key.expires_at = Some(issued.key.created_at + lifetime);
            }
            issued.key.rate_limit =
                RateLimit::new(events_per_second.unwrap_or(0), burst.unwrap_or(0))?;
            store.create_api_key(&issued.key, &Actor::Cli).await?;
            println!("key id: {}", issued.key.key_id);
            println!("secret (shown once): {}", issued.secret);
        }
        KeyCommand::List { tenant } => {
            let tenant_id = resolve_tenant(&*store, &tenant).await?;
            for key in store.list_api_keys(tenant_id).await? {
                let scopes: Vec<&str> = key.scopes.iter().map(|scope| scope.as_str()).collect();
                let now = eventline_core::time::now();
                let state = match (key.revoked_at, key.expires_at) {
                    (Some(at), _) => format!("revoked {}", at.to_rfc3339()),
                    (None, Some(at)) if at <= now => format!("expired {}", at.to_rfc3339()),
                    (None, Some(at)) => format!("active, expires {}", at.to_rfc3339()),
                    (None, None) => "active".to_owned(),
                };
                let limit = match key.rate_limit {
                    Some(limit) => format!("{}/s burst {}", limit.events_per_second, limit.burst),
                    None => "default limit".to_owned(),
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    key.key_id,
                    scopes.join(","),
                    key.created_at.to_rfc3339(),
                    state,
                    limit
                );
            }
        }
        KeyCommand::Revoke { key_id } => {
            let key = store.revoke_api_key(&key_id, &Actor::Cli).await?;
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
