//! Typed reads: listings as a [`Stream`] across pages, counts, top types, series, and
//! export and tail streams that resume from their last cursor after a broken connection.

use std::{future::Future, pin::Pin, time::Duration};

use eventline_proto::v1;
use futures::{Stream, StreamExt, TryStreamExt, stream};
use tokio::time::Instant;

use crate::{
    Client, Error,
    retry::{Backoff, is_transient, retry_info_delay},
};

type QueryClient = v1::query_service_client::QueryServiceClient<crate::connect::Authorized>;
/// One page read: the client back, the page's events, and the next page's request.
type Page<R> =
    Pin<Box<dyn Future<Output = Result<(QueryClient, Vec<v1::Event>, Option<R>), Error>> + Send>>;

/// How long an export or tail keeps trying to resume without receiving anything.
const RESUME_FOR: Duration = Duration::from_secs(60);

/// One event of an export or tail, and the cursor to resume after it.
#[derive(Debug, Clone, PartialEq)]
pub struct CursoredEvent {
    /// The event.
    pub event: v1::Event,
    /// Pass as the request's `cursor` to continue after this event.
    pub cursor: String,
}

type Opened<M> = Pin<Box<dyn Future<Output = Result<tonic::Streaming<M>, tonic::Status>> + Send>>;

impl Client {
    /// Lists matching events, newest first, fetching pages as the stream is read.
    /// `request.page_size` sets the page size (default 100, at most 1000).
    pub fn list_events(
        &self,
        request: v1::ListEventsRequest,
    ) -> impl Stream<Item = Result<v1::Event, Error>> + Send + 'static {
        self.pages(request, |mut client, request| {
            Box::pin(async move {
                let page = client.list_events(request.clone()).await?.into_inner();
                let next = (!page.next_page_token.is_empty()).then_some(v1::ListEventsRequest {
                    page_token: page.next_page_token,
                    ..request
                });
                Ok((client, page.events, next))
            })
        })
    }

    /// Finds the events matching `request.query`, newest first, fetching pages as the
    /// stream is read (README "Search"). `request.page_size` sets the page size.
    pub fn search_events(
        &self,
        request: v1::SearchEventsRequest,
    ) -> impl Stream<Item = Result<v1::Event, Error>> + Send + 'static {
        self.pages(request, |mut client, request| {
            Box::pin(async move {
                let page = client.search_events(request.clone()).await?.into_inner();
                let next = (!page.next_page_token.is_empty()).then_some(v1::SearchEventsRequest {
                    page_token: page.next_page_token,
                    ..request
                });
                Ok((client, page.events, next))
            })
        })
    }

    /// The events of every page `fetch` reads, from `first` until it returns no next
    /// request.
    fn pages<R: Send + 'static>(
        &self,
        first: R,
        fetch: fn(QueryClient, R) -> Page<R>,
    ) -> impl Stream<Item = Result<v1::Event, Error>> + Send + 'static {
        let client = self.query_service();
        stream::try_unfold((client, Some(first)), move |(client, request)| async move {
            let Some(request) = request else {
                return Ok(None);
            };
            let (client, events, next) = fetch(client, request).await?;
            Ok::<_, Error>(Some((events, (client, next))))
        })
        .map_ok(|events| stream::iter(events.into_iter().map(Ok)))
        .try_flatten()
    }

    /// Counts matching events.
    pub async fn count_events(&self, request: v1::CountEventsRequest) -> Result<u64, Error> {
        Ok(self
            .query_service()
            .count_events(request)
            .await?
            .into_inner()
            .count)
    }

    /// A count split by a property (`request.group_by_property` set): the groups, largest
    /// value first, then the events without the property, then the rest.
    pub async fn breakdown(
        &self,
        request: v1::CountEventsRequest,
    ) -> Result<Vec<v1::PropertyGroup>, Error> {
        Ok(self
            .query_service()
            .count_events(request)
            .await?
            .into_inner()
            .groups)
    }

    /// The most frequent event types of a window, by descending count.
    pub async fn top_event_types(
        &self,
        request: v1::TopEventTypesRequest,
    ) -> Result<Vec<v1::EventTypeCount>, Error> {
        Ok(self
            .query_service()
            .top_event_types(request)
            .await?
            .into_inner()
            .event_types)
    }

    /// Counts per UTC bucket, oldest first, empty buckets included.
    pub async fn timeseries(
        &self,
        request: v1::EventTimeseriesRequest,
    ) -> Result<Vec<v1::TimeseriesBucket>, Error> {
        Ok(self
            .query_service()
            .event_timeseries(request)
            .await?
            .into_inner()
            .buckets)
    }

    /// The users who reached each step of a funnel, in step order.
    pub async fn funnel(&self, request: v1::FunnelRequest) -> Result<Vec<v1::FunnelStep>, Error> {
        Ok(self
            .query_service()
            .funnel(request)
            .await?
            .into_inner()
            .steps)
    }

    /// A retention table: one cohort per interval, oldest first.
    pub async fn retention(
        &self,
        request: v1::RetentionRequest,
    ) -> Result<Vec<v1::RetentionCohort>, Error> {
        Ok(self
            .query_service()
            .retention(request)
            .await?
            .into_inner()
            .cohorts)
    }

    /// Every matching event, oldest first. A broken connection is resumed from the last
    /// cursor (for up to a minute without progress), so nothing is skipped or repeated;
    /// `request.cursor` resumes an earlier export.
    pub fn export(
        &self,
        request: v1::ExportEventsRequest,
    ) -> impl Stream<Item = Result<CursoredEvent, Error>> + Send + 'static {
        let client = self.query_service();
        let open = move |cursor: String| -> Opened<v1::ExportEventsResponse> {
            let mut client = client.clone();
            let mut request = request.clone();
            if !cursor.is_empty() {
                request.cursor = cursor;
            }
            Box::pin(async move { Ok(client.export_events(request).await?.into_inner()) })
        };
        resuming(open, |message| (message.event, message.cursor), true)
    }

    /// Replays matching events from `request.cursor` or `request.start_time`, then follows
    /// new ones live. The stream never ends by itself: when the connection breaks or the
    /// server restarts, it resumes after the last event it delivered (without a gap or a
    /// repeat), retrying for up to a minute without progress before it yields the error.
    pub fn tail(
        &self,
        request: v1::TailEventsRequest,
    ) -> impl Stream<Item = Result<CursoredEvent, Error>> + Send + 'static {
        let client = self.query_service();
        let open = move |cursor: String| -> Opened<v1::TailEventsResponse> {
            let mut client = client.clone();
            let mut request = request.clone();
            if !cursor.is_empty() {
                request.cursor = cursor;
            }
            Box::pin(async move { Ok(client.tail_events(request).await?.into_inner()) })
        };
        resuming(open, |message| (message.event, message.cursor), false)
    }
}

/// Where a resuming stream is.
struct Resuming<M, F> {
    open: F,
    split: fn(M) -> (Option<v1::Event>, String),
    /// True for export (a clean end is the end); false for tail (it reconnects).
    end_is_final: bool,
    cursor: String,
    stream: Option<tonic::Streaming<M>>,
    backoff: Backoff,
    broken_since: Option<Instant>,
    finished: bool,
}

fn resuming<M, F>(
    open: F,
    split: fn(M) -> (Option<v1::Event>, String),
    end_is_final: bool,
) -> impl Stream<Item = Result<CursoredEvent, Error>> + Send + 'static
where
    M: Send + 'static,
    F: FnMut(String) -> Opened<M> + Send + 'static,
{
    let state = Resuming {
        open,
        split,
        end_is_final,
        cursor: String::new(),
        stream: None,
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
        broken_since: None,
        finished: false,
    };
    stream::unfold(state, |mut state| async move {
        let item = state.next_item().await?;
        Some((item, state))
    })
}

impl<M, F> Resuming<M, F>
where
    F: FnMut(String) -> Opened<M>,
{
    async fn next_item(&mut self) -> Option<Result<CursoredEvent, Error>> {
        loop {
            if self.finished {
                return None;
            }
            let Some(stream) = self.stream.as_mut() else {
                match (self.open)(self.cursor.clone()).await {
                    Ok(stream) => self.stream = Some(stream),
                    Err(status) => {
                        if let Some(error) = self.pause_or_fail(status).await {
                            return Some(Err(error));
                        }
                    }
                }
                continue;
            };
            match stream.next().await {
                Some(Ok(message)) => {
                    let (event, cursor) = (self.split)(message);
                    self.cursor = cursor.clone();
                    self.broken_since = None;
                    self.backoff.reset();
                    if let Some(event) = event {
                        return Some(Ok(CursoredEvent { event, cursor }));
                    }
                }
                None if self.end_is_final => {
                    self.finished = true;
                    return None;
                }
                None => {
                    self.stream = None;
                    let ended = tonic::Status::unavailable("the server ended the stream");
                    if let Some(error) = self.pause_or_fail(ended).await {
                        return Some(Err(error));
                    }
                }
                Some(Err(status)) => {
                    self.stream = None;
                    if let Some(error) = self.pause_or_fail(status).await {
                        return Some(Err(error));
                    }
                }
            }
        }
    }

    /// Sleeps before the next attempt, or gives up with the error.
    async fn pause_or_fail(&mut self, status: tonic::Status) -> Option<Error> {
        let broken_since = *self.broken_since.get_or_insert_with(Instant::now);
        if !is_transient(&status) || broken_since.elapsed() >= RESUME_FOR {
            self.finished = true;
            return Some(status.into());
        }
        let delay = self.backoff.next_delay(retry_info_delay(&status));
        tracing::debug!(code = ?status.code(), ?delay, "resuming a read stream");
        tokio::time::sleep(delay).await;
        None
    }
}
