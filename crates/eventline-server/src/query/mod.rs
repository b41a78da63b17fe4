//! QueryService: listings, search, counts (optionally broken down by a property), top
//! types, series, funnels, retention, export and tail, each scoped to the
//! tenant of a query-scoped API key.

mod breakdown;
pub(crate) mod cursor;
mod horizon;
mod tail;

use std::{collections::HashMap, pin::Pin, sync::Arc, time::Duration};

use eventline_core::{
    Error, Scope, TenantId,
    breakdown::BreakdownRow,
    query::{self, EventQuery, Measure, Order, UserCounts},
    request::{
        Counting, EventTimeseries, ExportEvents, Funnel, ListEvents, Retention, SearchEvents,
        TailEvents, TopEventTypes,
    },
    search::SearchQuery,
    time,
};
use eventline_proto::v1::{self, query_service_server::QueryService};
use eventline_store::Store;
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{auth::Authenticator, bus::CommitBus};
use chrono::{DateTime, Utc};
use cursor::{Cursor, filter_digest, micros, search_digest};
use horizon::Reads;

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
    horizons: horizon::Horizons,
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
            horizons: horizon::Horizons::new(Arc::clone(&store)),
            store,
            bus,
            shutdown,
        }
    }

    /// The request's tenant (from its query-scoped key) and its domain query.
    async fn accept<R, Q>(&self, request: Request<R>) -> Result<(TenantId, Q), Status>
    where
        Q: TryFrom<R, Error = Error>,
    {
        let tenant_id = self
            .auth
            .tenant_with_scope(request.metadata(), Scope::Query)
            .await?;
        Ok((tenant_id, Q::try_from(request.into_inner())?))
    }

    /// Counts (of events, or of users as `counting.measure` says) for a statistics RPC,
    /// once its `min_watermark` is visible, and whether they are exact.
    async fn count(&self, tenant_id: TenantId, counting: &Counting) -> Result<UserCounts, Error> {
        self.wait_for(tenant_id, &counting.min_watermark).await?;
        let query = counting.query(tenant_id);
        match counting.measure {
            Measure::Events => {
                self.horizons
                    .count_from(tenant_id, query.start, query.end, query.grouping)
                    .await?
            }
            Measure::UniqueUsers => {
                self.horizons
                    .raw_from(tenant_id, query.start, "start_time")
                    .await?
            }
        }
        Ok(match counting.measure {
            Measure::Events => UserCounts {
                rows: self.store.count(&query).await?,
                exact: true,
            },
            Measure::UniqueUsers => {
                self.store
                    .count_users(&query, query::EXACT_USERS_UP_TO_EVENTS)
                    .await?
            }
        })
    }

    /// The (bucket, type, value) rows of a count with `group_by_property`, and how many
    /// values get a group of their own; `None` for a count without one.
    async fn breakdown(
        &self,
        tenant_id: TenantId,
        counting: &Counting,
    ) -> Result<Option<(Vec<BreakdownRow>, usize)>, Error> {
        let (Some(query), Some(group_by)) =
            (counting.breakdown_query(tenant_id), &counting.group_by)
        else {
            return Ok(None);
        };
        self.wait_for(tenant_id, &counting.min_watermark).await?;
        self.horizons
            .raw_from(tenant_id, counting.start, "start_time")
            .await?;
        Ok(Some((self.store.breakdown(&query).await?, group_by.limit)))
    }

    /// Moves a defaulted window start to what the tenant's retention can count exactly
    /// (README "Data lifecycle"); a start the caller gave is left as it is.
    async fn default_count_start(
        &self,
        tenant_id: TenantId,
        counting: &mut Counting,
        start_given: bool,
    ) -> Result<(), Error> {
        if start_given {
            return Ok(());
        }
        let reads = match (counting.measure, &counting.group_by) {
            (Measure::Events, None) => horizon::Reads::Counts,
            _ => horizon::Reads::Raw,
        };
        counting.start = self
            .horizons
            .default_start(tenant_id, counting.start, reads)
            .await?;
        Ok(())
    }

    /// Waits (bounded) until the writes behind `watermark` are visible.
    async fn wait_for(&self, tenant_id: TenantId, watermark: &str) -> Result<(), Error> {
        if watermark.is_empty() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + WATERMARK_WAIT;
        loop {
            let visible = self
                .store
                .watermark_visible(tenant_id, watermark)
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

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn list_events(
        &self,
        request: Request<v1::ListEventsRequest>,
    ) -> Result<Response<v1::ListEventsResponse>, Status> {
        let start_given = request.get_ref().start_time.is_some();
        let (tenant_id, mut listing): (_, ListEvents) = self.accept(request).await?;
        if !start_given {
            listing.start = self
                .horizons
                .default_start(tenant_id, listing.start, Reads::Raw)
                .await?;
        }
        self.wait_for(tenant_id, &listing.min_watermark).await?;
        let query = listing_query(tenant_id, listing)?;
        self.horizons
            .raw_from(tenant_id, query.start, "start_time")
            .await?;
        let mut events = self.store.list_events(&query).await.map_err(Error::from)?;
        let next_page_token = page_end(
            &mut events,
            query.limit - 1,
            (query.start, query.end),
            filter_digest(tenant_id, &query.filter),
        );
        Ok(Response::new(v1::ListEventsResponse {
            events: events.iter().map(|event| event.to_proto()).collect(),
            next_page_token,
        }))
    }

    async fn search_events(
        &self,
        request: Request<v1::SearchEventsRequest>,
    ) -> Result<Response<v1::SearchEventsResponse>, Status> {
        let start_given = request.get_ref().start_time.is_some();
        let (tenant_id, mut search): (_, SearchEvents) = self.accept(request).await?;
        if !start_given {
            search.start = self
                .horizons
                .default_start(tenant_id, search.start, Reads::Raw)
                .await?;
        }
        let index = self
            .store
            .search_index(tenant_id)
            .await
            .map_err(Error::from)?;
        if !index.enabled {
            return Err(Error::FailedPrecondition(
                "search is off for this tenant: an admin turns it on with \
                 AdminService.SetSearchIndex (README \"Search\")"
                    .into(),
            )
            .into());
        }
        let query = search_query(tenant_id, search)?;
        let mut events = self
            .store
            .search_events(&query)
            .await
            .map_err(Error::from)?;
        let next_page_token = page_end(
            &mut events,
            query.limit - 1,
            (query.start, query.end),
            search_digest(tenant_id, &query.filter, &query.text),
        );
        Ok(Response::new(v1::SearchEventsResponse {
            events: events.iter().map(|event| event.to_proto()).collect(),
            next_page_token,
        }))
    }

    type ExportEventsStream = EventStream<v1::ExportEventsResponse>;

    async fn export_events(
        &self,
        request: Request<v1::ExportEventsRequest>,
    ) -> Result<Response<Self::ExportEventsStream>, Status> {
        let start_given = request.get_ref().start_time.is_some();
        let (tenant_id, mut export): (_, ExportEvents) = self.accept(request).await?;
        if !start_given {
            export.start = self
                .horizons
                .default_start(tenant_id, export.start, Reads::Raw)
                .await?;
        }
        let query = export_query(tenant_id, export)?;
        self.horizons
            .raw_from(tenant_id, query.start, "start_time")
            .await?;
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        // Its pages' store calls stay in the call's trace (README "Tracing").
        tokio::spawn(tracing::Instrument::in_current_span(stream_export(
            Arc::clone(&self.store),
            query,
            sender,
        )));
        Ok(Response::new(
            Box::pin(ReceiverStream::new(receiver)) as Self::ExportEventsStream
        ))
    }

    type TailEventsStream = EventStream<v1::TailEventsResponse>;

    async fn tail_events(
        &self,
        request: Request<v1::TailEventsRequest>,
    ) -> Result<Response<Self::TailEventsStream>, Status> {
        let (tenant_id, tail): (_, TailEvents) = self.accept(request).await?;
        if let Some(start) = tail.start {
            self.horizons
                .raw_from(tenant_id, start, "start_time")
                .await?;
        }
        let resume = match tail.cursor.as_str() {
            "" => None,
            token => Some(Cursor::decode("cursor", token, tenant_id, &tail.filter)?),
        };
        let tail = tail::Tail::begin(
            Arc::clone(&self.store),
            tenant_id,
            tail.filter,
            tail.start,
            resume,
        )
        .await?;
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
        let start_given = request.get_ref().start_time.is_some();
        let (tenant_id, mut counting): (_, Counting) = self.accept(request).await?;
        self.default_count_start(tenant_id, &mut counting, start_given)
            .await?;
        if let Some((rows, limit)) = self.breakdown(tenant_id, &counting).await? {
            return Ok(Response::new(breakdown::count(&rows, limit)));
        }
        let counts = self.count(tenant_id, &counting).await?;
        Ok(Response::new(v1::CountEventsResponse {
            count: counts.rows.iter().map(|row| row.count).sum(),
            groups: Vec::new(),
            exact: counts.exact,
        }))
    }

    async fn top_event_types(
        &self,
        request: Request<v1::TopEventTypesRequest>,
    ) -> Result<Response<v1::TopEventTypesResponse>, Status> {
        let start_given = request.get_ref().start_time.is_some();
        let (tenant_id, mut top): (_, TopEventTypes) = self.accept(request).await?;
        self.default_count_start(tenant_id, &mut top.counting, start_given)
            .await?;
        if let Some((rows, limit)) = self.breakdown(tenant_id, &top.counting).await? {
            return Ok(Response::new(breakdown::top_event_types(
                &rows, top.limit, limit,
            )));
        }
        let rows = self.count(tenant_id, &top.counting).await?.rows;
        let mut event_types: Vec<v1::EventTypeCount> = rows
            .into_iter()
            .filter_map(|row| {
                let count = row.count;
                row.event_type.map(|event_type| v1::EventTypeCount {
                    event_type,
                    count,
                    groups: Vec::new(),
                })
            })
            .collect();
        rank_event_types(&mut event_types, top.limit);
        Ok(Response::new(v1::TopEventTypesResponse { event_types }))
    }

    async fn event_timeseries(
        &self,
        request: Request<v1::EventTimeseriesRequest>,
    ) -> Result<Response<v1::EventTimeseriesResponse>, Status> {
        let start_given = request.get_ref().start_time.is_some();
        let (tenant_id, mut series): (_, EventTimeseries) = self.accept(request).await?;
        self.default_count_start(tenant_id, &mut series.counting, start_given)
            .await?;
        if let Some((rows, limit)) = self.breakdown(tenant_id, &series.counting).await? {
            return Ok(Response::new(breakdown::timeseries(
                &rows,
                series.buckets,
                limit,
            )));
        }
        let counted = self.count(tenant_id, &series.counting).await?;
        let counts: HashMap<_, _> = counted
            .rows
            .into_iter()
            .filter_map(|row| Some((row.bucket?, row.count)))
            .collect();
        let buckets = series
            .buckets
            .into_iter()
            .map(|bucket| v1::TimeseriesBucket {
                start_time: Some(time::to_proto(bucket)),
                count: counts.get(&bucket).copied().unwrap_or(0),
                groups: Vec::new(),
            })
            .collect();
        Ok(Response::new(v1::EventTimeseriesResponse {
            buckets,
            exact: counted.exact,
        }))
    }

    async fn funnel(
        &self,
        request: Request<v1::FunnelRequest>,
    ) -> Result<Response<v1::FunnelResponse>, Status> {
        let (tenant_id, funnel): (_, Funnel) = self.accept(request).await?;
        self.wait_for(tenant_id, &funnel.min_watermark).await?;
        self.horizons
            .raw_from(tenant_id, funnel.start, "start_time")
            .await?;
        let counts = self
            .store
            .funnel(&funnel.query(tenant_id))
            .await
            .map_err(Error::from)?;
        let groups = match &funnel.group_by {
            Some(group_by) => {
                breakdown::funnel_groups(counts.by_value, &funnel.steps, group_by.limit)
            }
            None => Vec::new(),
        };
        let steps = funnel
            .steps
            .into_iter()
            .zip(counts.reached)
            .map(|(event_type, users)| v1::FunnelStep { event_type, users })
            .collect();
        Ok(Response::new(v1::FunnelResponse { steps, groups }))
    }

    async fn retention(
        &self,
        request: Request<v1::RetentionRequest>,
    ) -> Result<Response<v1::RetentionResponse>, Status> {
        let (tenant_id, retention): (_, Retention) = self.accept(request).await?;
        self.wait_for(tenant_id, &retention.min_watermark).await?;
        self.horizons
            .raw_from(tenant_id, retention.start, "start_time")
            .await?;
        let cohorts = self
            .store
            .retention(&retention.query(tenant_id))
            .await
            .map_err(Error::from)?;
        Ok(Response::new(v1::RetentionResponse {
            cohorts: cohorts
                .into_iter()
                .map(|cohort| v1::RetentionCohort {
                    start_time: Some(time::to_proto(cohort.start)),
                    users: cohort.users,
                    returned: cohort.returned,
                })
                .collect(),
        }))
    }
}

/// Orders types by descending count, ties by name, and keeps the first `limit`.
fn rank_event_types(event_types: &mut Vec<v1::EventTypeCount>, limit: usize) {
    event_types.sort_by(|left, right| {
        right
            .count
            .cmp(&left.count)
            .then_with(|| left.event_type.cmp(&right.event_type))
    });
    event_types.truncate(limit);
}

/// A listing's store query: the window and position of its page token, when it has one
/// (the first page's resolved window holds for every later page), one row over the page
/// to tell whether another page follows.
fn listing_query(tenant_id: TenantId, listing: ListEvents) -> Result<EventQuery, Error> {
    let digest = filter_digest(tenant_id, &listing.filter);
    let (start, end, after) = page_start(
        &listing.page_token,
        digest,
        (listing.start, listing.end),
        "ListEvents",
    )?;
    Ok(EventQuery {
        tenant_id,
        filter: listing.filter,
        start,
        end,
        order: Order::NewestFirst,
        after,
        committed_before: None,
        limit: listing.page_size + 1,
    })
}

/// A search's store query, resuming after its page token when it has one.
fn search_query(tenant_id: TenantId, search: SearchEvents) -> Result<SearchQuery, Error> {
    let digest = search_digest(tenant_id, &search.filter, &search.text);
    let (start, end, after) = page_start(
        &search.page_token,
        digest,
        (search.start, search.end),
        "SearchEvents",
    )?;
    Ok(SearchQuery {
        tenant_id,
        text: search.text,
        filter: search.filter,
        start,
        end,
        after,
        limit: search.page_size + 1,
    })
}

/// A page's window and the position it continues after (none on the first page).
type PageStart = (DateTime<Utc>, DateTime<Utc>, Option<query::Position>);

/// Where a newest-first page starts: the request's window, or the window and position a
/// `page_token` (issued for the same `digest`) carries.
fn page_start(
    page_token: &str,
    digest: String,
    window: (DateTime<Utc>, DateTime<Utc>),
    rpc: &str,
) -> Result<PageStart, Error> {
    if page_token.is_empty() {
        return Ok((window.0, window.1, None));
    }
    let Cursor::Page { t, i, s, e, .. } = Cursor::decode_for("page_token", page_token, &digest)?
    else {
        return Err(Error::invalid(
            "page_token",
            format!("is not a {rpc} page token"),
        ));
    };
    Ok((
        cursor::time("page_token", s)?,
        cursor::time("page_token", e)?,
        Some(cursor::position("page_token", t, &i)?),
    ))
}

/// Cuts a page read with one event more than `page_size` to its size, and returns the
/// token of the next page (empty on the last).
fn page_end(
    events: &mut Vec<eventline_core::Event>,
    page_size: usize,
    window: (DateTime<Utc>, DateTime<Utc>),
    digest: String,
) -> String {
    if events.len() <= page_size {
        return String::new();
    }
    events.truncate(page_size);
    let last = events.last().expect("a full page has a last event");
    Cursor::Page {
        t: micros(last.timestamp),
        i: last.event_id.clone(),
        s: micros(window.0),
        e: micros(window.1),
        f: digest,
    }
    .encode()
}

/// An export's first store query, resuming after its cursor when it has one.
fn export_query(tenant_id: TenantId, export: ExportEvents) -> Result<EventQuery, Error> {
    let mut after = None;
    if !export.cursor.is_empty() {
        let Cursor::Export { t, i, .. } =
            Cursor::decode("cursor", &export.cursor, tenant_id, &export.filter)?
        else {
            return Err(Error::invalid("cursor", "is not an ExportEvents cursor"));
        };
        after = Some(cursor::position("cursor", t, &i)?);
    }
    Ok(EventQuery {
        tenant_id,
        filter: export.filter,
        start: export.start,
        end: export.end,
        order: Order::OldestFirst,
        after,
        committed_before: None,
        limit: STREAM_PAGE,
    })
}

/// Streams an export page by page until the window is exhausted or the client leaves.
async fn stream_export(
    store: Arc<dyn Store>,
    mut query: EventQuery,
    sender: mpsc::Sender<Result<v1::ExportEventsResponse, Status>>,
) {
    let digest = filter_digest(query.tenant_id, &query.filter);
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
}
