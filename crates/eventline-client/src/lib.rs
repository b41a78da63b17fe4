//! The Rust SDK for eventline: a [`Client`] with typed queries (listings as a `Stream`
//! across pages, counts, top types, series, and export and tail streams that resume from
//! a cursor) and a [`Producer`] whose `track()` never blocks and whose counts account for
//! every event. The producer keeps the contract shared by every eventline SDK, written in
//! `clients/README.md`.
//!
//! It depends on the generated API (`eventline-proto`) and on `eventline-core` only for
//! the limits and the validation rules, never on the server or the store.
//!
//! ```no_run
//! # async fn example() -> Result<(), eventline_client::Error> {
//! use eventline_client::{Client, ProducerOptions, TrackEvent};
//! let client = Client::connect("http://127.0.0.1:50051", "elk_…").await?;
//! let producer = client.producer(ProducerOptions::default())?;
//! producer.track(TrackEvent::new("signup").user_id("u1"))?;
//! let counts = producer.shutdown(std::time::Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```

mod connect;
mod error;
mod producer;
pub mod query;
mod retry;

pub use connect::{ApiKey, Authorized, Client, ClientBuilder};
pub use error::Error;
/// The generated `eventline.v1` messages and gRPC clients.
pub use eventline_proto::v1;
pub use producer::{
    Counts, Producer, ProducerOptions, QueueFullPolicy, Rejection, RejectionCallback, Stats,
    TrackEvent,
};
pub use query::CursoredEvent;
