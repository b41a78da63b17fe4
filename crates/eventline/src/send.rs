//! `eventline send`: one event from flags (Track), or newline-delimited JSON events from
//! stdin streamed to IngestStream in batches; `eventline import` is the latter with a
//! progress bar, so `eventline export | eventline import` replays a tenant's history.

use anyhow::{Context, bail};
use clap::Args;
use eventline_client::{Authorized, v1, v1::ingest_service_client::IngestServiceClient};
use pbjson_types::Struct;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_stream::wrappers::ReceiverStream;

use crate::client::ClientArgs;

/// Events per stream message when reading stdin.
const STDIN_BATCH_EVENTS: usize = 500;

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Event type; without it, NDJSON events are read from stdin.
    #[arg(long = "type")]
    event_type: Option<String>,
    /// User id.
    #[arg(long = "user")]
    user_id: Option<String>,
    /// Session id.
    #[arg(long = "session")]
    session_id: Option<String>,
    /// Event id (idempotency key); the server assigns one when omitted.
    #[arg(long = "id")]
    event_id: Option<String>,
    /// Event time, RFC 3339; defaults to now.
    #[arg(long)]
    timestamp: Option<String>,
    /// A property as key=value (value read as JSON when it parses, else as a string).
    #[arg(long = "prop")]
    props: Vec<String>,
    /// All properties as one JSON object.
    #[arg(long)]
    properties: Option<String>,
}

/// `eventline import`: NDJSON events from stdin, streamed with a progress bar.
#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    #[command(flatten)]
    client: ClientArgs,
}

type Client = IngestServiceClient<Authorized>;

async fn client(args: &ClientArgs) -> anyhow::Result<Client> {
    Ok(args.connect().await?.ingest_service())
}

pub(crate) async fn run(args: SendArgs) -> anyhow::Result<()> {
    let mut client = client(&args.client).await?;
    match &args.event_type {
        Some(_) => send_one(&mut client, event_from_flags(&args)?).await,
        None => stream_stdin(&mut client).await,
    }
}

pub(crate) async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let mut client = client(&args.client).await?;
    stream_stdin(&mut client).await
}

fn event_from_flags(args: &SendArgs) -> anyhow::Result<v1::Event> {
    let mut properties = match &args.properties {
        Some(json) => serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json)
            .context("--properties must be a JSON object")?,
        None => serde_json::Map::new(),
    };
    for prop in &args.props {
        let Some((key, value)) = prop.split_once('=') else {
            bail!("--prop must be key=value, got {prop:?}");
        };
        let value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
        properties.insert(key.to_owned(), value);
    }
    let properties: Struct = serde_json::from_value(serde_json::Value::Object(properties))?;
    let timestamp = match &args.timestamp {
        Some(text) => Some(
            serde_json::from_value(serde_json::Value::String(text.clone()))
                .context("--timestamp must be RFC 3339")?,
        ),
        None => None,
    };
    Ok(v1::Event {
        event_id: args.event_id.clone().unwrap_or_default(),
        event_type: args.event_type.clone().unwrap_or_default(),
        user_id: args.user_id.clone().unwrap_or_default(),
        session_id: args.session_id.clone().unwrap_or_default(),
        timestamp,
        properties: Some(properties.into()),
        ..Default::default()
    })
}

async fn send_one(client: &mut Client, event: v1::Event) -> anyhow::Result<()> {
    let response = client
        .track(v1::TrackRequest { event: Some(event) })
        .await
        .map_err(eventline_client::Error::from)?
        .into_inner();
    let result = response.result.unwrap_or_default();
    let status = v1::IngestStatus::try_from(result.status).unwrap_or_default();
    println!("{}\t{}", result.event_id, status.as_str_name());
    Ok(())
}

/// Streams NDJSON events from stdin to IngestStream in batches, with a progress bar on
/// stderr (hidden when stderr is not a terminal).
async fn stream_stdin(client: &mut Client) -> anyhow::Result<()> {
    let progress = sent_events_spinner();
    let (batches, stream) = tokio::sync::mpsc::channel(4);
    let reader = tokio::spawn(read_stdin_batches(batches, progress.clone()));
    let summary = client
        .ingest_stream(ReceiverStream::new(stream))
        .await
        .map_err(eventline_client::Error::from);
    reader.await.context("stdin reader failed")??;
    progress.finish_and_clear();
    print_summary(&summary?.into_inner());
    Ok(())
}

/// A spinner counting the events sent and their rate.
fn sent_events_spinner() -> indicatif::ProgressBar {
    let progress = indicatif::ProgressBar::new_spinner();
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {human_pos} events sent ({per_sec}) {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    progress
}

/// Sends stdin's NDJSON events on `batches` in batches of `STDIN_BATCH_EVENTS`, counted.
async fn read_stdin_batches(
    batches: tokio::sync::mpsc::Sender<v1::IngestStreamRequest>,
    progress: indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut batch = Vec::with_capacity(STDIN_BATCH_EVENTS);
    let mut line_number = 0u64;
    while let Some(line) = lines.next_line().await? {
        line_number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let event: v1::Event = serde_json::from_str(&line)
            .with_context(|| format!("stdin line {line_number} is not a JSON event"))?;
        batch.push(event);
        if batch.len() == STDIN_BATCH_EVENTS {
            let events = std::mem::replace(&mut batch, Vec::with_capacity(STDIN_BATCH_EVENTS));
            let sent = events.len() as u64;
            if batches
                .send(v1::IngestStreamRequest {
                    events,
                    sent_at: None,
                })
                .await
                .is_err()
            {
                return Ok(());
            }
            progress.inc(sent);
        }
    }
    if !batch.is_empty() {
        let sent = batch.len() as u64;
        let _ = batches
            .send(v1::IngestStreamRequest {
                events: batch,
                sent_at: None,
            })
            .await;
        progress.inc(sent);
    }
    Ok(())
}

/// Prints each event the server reported on (to stderr), then the totals.
fn print_summary(summary: &v1::IngestStreamResponse) {
    for result in &summary.results {
        let status = v1::IngestStatus::try_from(result.status).unwrap_or_default();
        eprintln!(
            "event {} ({}): {} {}",
            result.index,
            result.event_id,
            status.as_str_name(),
            result.error
        );
    }
    println!(
        "accepted {}, duplicates {}, rejected {}",
        summary.accepted, summary.duplicates, summary.rejected
    );
}
