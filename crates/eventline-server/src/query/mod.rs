//! QueryService: listings, counts, top types, series, export and tail, each scoped to the
//! tenant of a query-scoped API key.

pub(crate) mod cursor;
mod stats;
mod tail;

use std::{pin::Pin, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use eventline_core::{
    Error, Scope, TenantId,
    query::{self, BucketWidth, EventFilter, EventQuery, Grouping, Order},
    time,
};
use eventline_proto::v1::{self, query_service_server::QueryService};
use eventline_store::Store;
use futures::Stream;
use pbjson_types::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{auth::Authenticator, bus::CommitBus};
use cursor::{Cursor, filter_digest, micros};

/// Default window of listings and statistics.
const DEFAULT_WINDOW: chrono::Duration = chrono::Duration::days(30);
/// How long a read waits for `min_watermark` before refusing.
const WATERMARK_WAIT: Duration = Duration::from_secs(5);
/// Events read per database round trip by exports and tails.
const STREAM_PAGE: usize = 500;
/// Messages buffered per streaming response; bounds memory per subscriber.
const STREAM_BUFFER: usize = 64;

/// The QueryService implementation.
#[derive(Debug, Clone)]
pub struct QueryApi {
    auth: Authenticator,
    store: Arc<dyn Store>,
    bus: CommitBus,
    shutdown: watch::Receiver<bool>,
}

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl QueryApi {
    /// A service reading `store`; tails wake on `bus` and end when `shutdown` turns true.
    pub fn new(
        auth: Authenticator,
        store: Arc<dyn Store>,
        bus: CommitBus,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            auth,
            store,
            bus,
            shutdown,
        }
    }

    async fn tenant(&self, metadata: &tonic::metadata::MetadataMap) -> Result<TenantId, Status> {
        Ok(self.auth.tenant_with_scope(metadata, Scope::Query).await?)
    }

    /// Waits (bounded) until the writes behind `watermark` are visible.
    async fn wait_for(&self, watermark: &str) -> Result<(), Error> {
        if watermark.is_empty() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + WATERMARK_WAIT;
        loop {
            let visible =
                self.store
                    .watermark_visible(watermark)
                    .await
                    .map_err(|error| match error {
                        eventline_store::StoreError::ForeignWatermark(message) => {
                            Error::invalid("min_watermark", message)
                        }
                        other => Error::from(other),
                    })?;
            if visible {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Unavailable {
                    what: "the writes of min_watermark are not visible yet".into(),
                    retry_after: Duration::from_secs(1),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn optional_time(
    field: &str,
    timestamp: Option<&Timestamp>,
) -> Result<Option<DateTime<Utc>>, Error> {
    timestamp
        .map(|timestamp| {
            time::from_proto(timestamp)
                .ok_or_else(|| Error::invalid(field, "must be a valid timestamp"))
        })
        .transpose()
}

/// Resolves `[start_time, end_time)`: end defaults to now, start to 30 days before end.
fn window(
    start_time: Option<&Timestamp>,
    end_time: Option<&Timestamp>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), Error> {
    let end = optional_time("end_time", end_time)?.unwrap_or_else(time::now);
    let start = optional_time("start_time", start_time)?.unwrap_or(end - DEFAULT_WINDOW);
    if start >= end {
        return Err(Error::invalid("start_time", "must be before end_time"));
    }
    Ok((start, end))
}

pub(crate) fn page_size(requested: i32) -> Result<usize, Error> {
    match requested {
        0 => Ok(query::DEFAULT_PAGE_SIZE),
        size if size < 0 => Err(Error::invalid("page_size", "must not be negative")),
        size if size as usize > query::MAX_PAGE_SIZE => Err(Error::invalid(
            "page_size",
            format!("must be at most {}, got {size}", query::MAX_PAGE_SIZE),
        )),
        size => Ok(size as usize),
    }
}

/// The `event_type` filter of the statistics RPCs, checked like every other filter.
fn event_type_filter(event_type: &str) -> Result<Option<String>, Error> {
    Ok(EventFilter::from_request(event_type, "", &[])?.event_type)
}

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn list_events(
        &self,
        request: Request<v1::ListEventsRequest>,
    ) -> Result<Response<v1::ListEventsResponse>, Status> {
        let tenant_id = self.tenant(request.metadata()).await?;
        let request = request.into_inner();
        let filter = EventFilter::from_request(
            &request.event_type,
            &request.user_id,
            &request.property_filters,
        )?;
        let limit = page_size(request.page_size)?;
        self.wait_for(&request.min_watermark).await?;
        let (mut start, mut end) = window(request.start_time.as_ref(), request.end_time.as_ref())?;
        let mut after = None;
        if !request.page_token.is_empty() {
            let Cursor::Page { t, i, s, e, .. } =
                Cursor::decode("page_token", &request.page_token, tenant_id, &filter)?
            else {
                return Err(Error::invalid("page_token", "is not a ListEvents page token").into());
            };
            // The first page's resolved window holds for every later page.
            start = cursor::time("page_token", s)?;
            end = cursor::time("page_token", e)?;
            after = Some(cursor::position("page_token", t, &i)?);
        }
        let query = EventQuery {
            tenant_id,
            filter: filter.clone(),
            start,
            end,
            order: Order::NewestFirst,
            after,
            committed_before: None,
            limit: limit + 1,
        };
        let mut events = self.store.list_events(&query).await.map_err(Error::from)?;
        let next_page_token = if events.len() > limit {
            events.truncate(limit);
            let last = events.last().expect("a full page has a last event");
            Cursor::Page {
                t: micros(last.timestamp),
                i: last.event_id.clone(),
                s: micros(start),
                e: micros(end),
                f: filter_digest(tenant_id, &filter),
            }
            .encode()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListEventsResponse {
            events: events.iter().map(|event| event.to_proto()).collect(),
            next_page_token,
        }))
    }

    type ExportEventsStream = EventStream<v1::ExportEventsResponse>;

    async fn export_events(
        &self,
        request: Request<v1::ExportEventsRequest>,
    ) -> Result<Response<Self::ExportEventsStream>, Status> {
        let tenant_id = self.tenant(request.metadata()).await?;
        let request = request.into_inner();
        let filter = EventFilter::from_request(
            &request.event_type,
            &request.user_id,
            &request.property_filters,
        )?;
        let start = optional_time("start_time", request.start_time.as_ref())?
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        let end = optional_time("end_time", request.end_time.as_ref())?.unwrap_or_else(time::now);
        let mut after = None;
        if !request.cursor.is_empty() {
            let Cursor::Export { t, i, .. } =
                Cursor::decode("cursor", &request.cursor, tenant_id, &filter)?
            else {
                return Err(Error::invalid("cursor", "is not an ExportEvents cursor").into());
            };
            after = Some(cursor::position("cursor", t, &i)?);
        }
        let mut query = EventQuery {
            tenant_id,
            filter: filter.clone(),
            start,
            end,
            order: Order::OldestFirst,
            after,
            committed_before: None,
            limit: STREAM_PAGE,
        };
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let store = Arc::clone(&self.store);
        let digest = filter_digest(tenant_id, &filter);
        tokio::spawn(async move {
            loop {
                let page = match store.list_events(&query).await {
                    Ok(page) => page,
                    Err(error) => {
                        let _ = sender.send(Err(Status::from(Error::from(error)))).await;
                        return;
                    }
                };
                let Some(last) = page.last() else { return };
                query.after = Some(query::Position::of(last));
                for event in &page {
                    let cursor = Cursor::Export {
                        t: micros(event.timestamp),
                        i: event.event_id.clone(),
                        f: digest.clone(),
                    };
                    let message = v1::ExportEventsResponse {
                        event: Some(event.to_proto()),
                        cursor: cursor.encode(),
                    };
                    if sender.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(
            Box::pin(ReceiverStream::new(receiver)) as Self::ExportEventsStream
        ))
    }

    type TailEventsStream = EventStream<v1::TailEventsResponse>;

    async fn tail_events(
        &self,
        request: Request<v1::TailEventsRequest>,
    ) -> Result<Response<Self::TailEventsStream>, Status> {
        let tenant_id = self.tenant(request.metadata()).await?;
        let request = request.into_inner();
        let filter = EventFilter::from_request(
            &request.event_type,
            &request.user_id,
            &request.property_filters,
        )?;
        let start = optional_time("start_time", request.start_time.as_ref())?;
        let resume = match request.cursor.as_str() {
            "" => None,
            token => Some(Cursor::decode("cursor", token, tenant_id, &filter)?),
        };
        let tail =
            tail::Tail::begin(Arc::clone(&self.store), tenant_id, filter, start, resume).await?;
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(tail.run(sender, self.bus.subscribe(), self.shutdown.clone()));
        Ok(Response::new(
            Box::pin(ReceiverStream::new(receiver)) as Self::TailEventsStream
        ))
    }

    async fn count_events(
        &self,
        request: Request<v1::CountEventsRequest>,
    ) -> Result<Response<v1::CountEventsResponse>, Status> {
        let tenant_id = self.tenant(request.metadata()).await?;
        let request = request.into_inner();
        let (start, end) = window(request.start_time.as_ref(), request.end_time.as_ref())?;
        self.wait_for(&request.min_watermark).await?;
        let counts = stats::counts(
            &*self.store,
            tenant_id,
            event_type_filter(&request.event_type)?,
            start,
            end,
            Grouping::Total,
        )
        .await?;
        Ok(Response::new(v1::CountEventsResponse {
            count: counts.values().sum(),
        }))
    }

    async fn top_event_types(
        &self,
        request: Request<v1::TopEventTypesRequest>,
    ) -> Result<Response<v1::TopEventTypesResponse>, Status> {
        let tenant_id = self.tenant(request.metadata()).await?;
        let request = request.into_inner();
        let limit = match request.limit {
            0 => query::DEFAULT_TOP_LIMIT,
            limit if limit < 0 || limit as usize > query::MAX_TOP_LIMIT => {
                return Err(Error::invalid(
                    "limit",
                    format!("must be 1 to {}, got {limit}", query::MAX_TOP_LIMIT),
                )
                .into());
            }
            limit => limit as usize,
        };
        let (start, end) = window(request.start_time.as_ref(), request.end_time.as_ref())?;
        self.wait_for(&request.min_watermark).await?;
        let counts = stats::counts(
            &*self.store,
            tenant_id,
            None,
            start,
            end,
            Grouping::EventType,
        )
        .await?;
        let mut event_types: Vec<v1::EventTypeCount> = counts
            .into_iter()
            .filter_map(|((_, event_type), count)| {
                event_type.map(|event_type| v1::EventTypeCount { event_type, count })
            })
            .collect();
        event_types.sort_by(|left, right| {
            right
                .count
                .cmp(&left.count)
                .then_with(|| left.event_type.cmp(&right.event_type))
        });
        event_types.truncate(limit);
        Ok(Response::new(v1::TopEventTypesResponse { event_types }))
    }

    async fn event_timeseries(
        &self,
        request: Request<v1::EventTimeseriesRequest>,
    ) -> Result<Response<v1::EventTimeseriesResponse>, Status> {
        let tenant_id = self.tenant(request.metadata()).await?;
        let request = request.into_inner();
        let width = match v1::Interval::try_from(request.interval) {
            Ok(v1::Interval::Minute) => BucketWidth::Minute,
            Ok(v1::Interval::Hour) => BucketWidth::Hour,
            Ok(v1::Interval::Day) => BucketWidth::Day,
            _ => {
                return Err(Error::invalid(
                    "interval",
                    "must be INTERVAL_MINUTE, INTERVAL_HOUR or INTERVAL_DAY",
                )
                .into());
            }
        };
        let (start, end) = window(request.start_time.as_ref(), request.end_time.as_ref())?;
        let starts = stats::bucket_starts(width, start, end, query::MAX_TIMESERIES_BUCKETS)?;
        self.wait_for(&request.min_watermark).await?;
        let counts = stats::counts(
            &*self.store,
            tenant_id,
            event_type_filter(&request.event_type)?,
            start,
            end,
            Grouping::Bucket(width),
        )
        .await?;
        let buckets = starts
            .into_iter()
            .map(|bucket| v1::TimeseriesBucket {
                start_time: Some(time::to_proto(bucket)),
                count: counts.get(&(Some(bucket), None)).copied().unwrap_or(0),
            })
            .collect();
        Ok(Response::new(v1::EventTimeseriesResponse { buckets }))
    }
}
