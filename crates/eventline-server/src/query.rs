//! QueryService. Its RPCs are authenticated (query scope) and answer UNIMPLEMENTED until
//! the query issue lands, so clients and the REST route table can already see them.

use std::pin::Pin;

use eventline_core::{Error, Scope};
use eventline_proto::v1::{self, query_service_server::QueryService};
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::auth::Authenticator;

/// The QueryService implementation.
#[derive(Debug, Clone)]
pub struct QueryApi {
    auth: Authenticator,
}

impl QueryApi {
    /// A service authenticating with `auth`.
    pub fn new(auth: Authenticator) -> Self {
        Self { auth }
    }

    async fn not_yet<T>(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        rpc: &str,
    ) -> Result<T, Status> {
        self.auth.tenant_with_scope(metadata, Scope::Query).await?;
        Err(Error::Unimplemented(format!(
            "QueryService.{rpc} is not implemented yet in this version of eventline"
        ))
        .into())
    }
}

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn list_events(
        &self,
        request: Request<v1::ListEventsRequest>,
    ) -> Result<Response<v1::ListEventsResponse>, Status> {
        self.not_yet(request.metadata(), "ListEvents").await
    }

    type ExportEventsStream = EventStream<v1::ExportEventsResponse>;

    async fn export_events(
        &self,
        request: Request<v1::ExportEventsRequest>,
    ) -> Result<Response<Self::ExportEventsStream>, Status> {
        self.not_yet(request.metadata(), "ExportEvents").await
    }

    type TailEventsStream = EventStream<v1::TailEventsResponse>;

    async fn tail_events(
        &self,
        request: Request<v1::TailEventsRequest>,
    ) -> Result<Response<Self::TailEventsStream>, Status> {
        self.not_yet(request.metadata(), "TailEvents").await
    }

    async fn count_events(
        &self,
        request: Request<v1::CountEventsRequest>,
    ) -> Result<Response<v1::CountEventsResponse>, Status> {
        self.not_yet(request.metadata(), "CountEvents").await
    }

    async fn top_event_types(
        &self,
        request: Request<v1::TopEventTypesRequest>,
    ) -> Result<Response<v1::TopEventTypesResponse>, Status> {
        self.not_yet(request.metadata(), "TopEventTypes").await
    }

    async fn event_timeseries(
        &self,
        request: Request<v1::EventTimeseriesRequest>,
    ) -> Result<Response<v1::EventTimeseriesResponse>, Status> {
        self.not_yet(request.metadata(), "EventTimeseries").await
    }
}
