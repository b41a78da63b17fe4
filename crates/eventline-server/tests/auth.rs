//! Authentication, scopes, tenant isolation and key management over gRPC.

mod common;

use chrono::{TimeZone, Utc};
use common::{ADMIN_TOKEN, TestServer};
use eventline_core::TenantId;
use eventline_proto::v1::{self, IngestStatus, Scope};
use tonic::Code;

fn event(event_id: &str) -> v1::Event {
    v1::Event {
        event_id: event_id.into(),
        event_type: "signup".into(),
        ..Default::default()
    }
}

async fn create_tenant_with_key(
    server: &TestServer,
    name: &str,
    scopes: &[Scope],
) -> (String, String) {
    let mut admin = server.admin(ADMIN_TOKEN).await;
    let tenant = admin
        .create_tenant(v1::CreateTenantRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    let created = admin
        .create_api_key(v1::CreateApiKeyRequest {
            tenant_id: tenant.tenant_id.clone(),
            scopes: scopes.iter().map(|scope| *scope as i32).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (tenant.tenant_id, created.secret)
}

#[tokio::test]
async fn a_request_without_a_key_is_unauthenticated() {
    let server = TestServer::postgres().await;
    let mut client = server.ingest("").await;
    let status = client
        .track(v1::TrackRequest {
            event: Some(event("a")),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("x-api-key"),
        "{}",
        status.message()
    );
    let mut wrong = server.ingest("elk_not-a-real-key-at-all").await;
    assert_eq!(
        wrong
            .track(v1::TrackRequest {
                event: Some(event("a"))
            })
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    server.stop().await;
}

#[tokio::test]
async fn scopes_are_enforced_per_service() {
    let server = TestServer::postgres().await;
    let (_, ingest_only) = create_tenant_with_key(&server, "ingest-only", &[Scope::Ingest]).await;
    let mut admin_with_ingest_key = server.admin(&ingest_only).await;
    let status = admin_with_ingest_key
        .list_tenants(v1::ListTenantsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let mut query = server.query(&ingest_only).await;
    let status = query
        .list_events(v1::ListEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let (_, query_only) = create_tenant_with_key(&server, "query-only", &[Scope::Query]).await;
    let mut ingest_with_query_key = server.ingest(&query_only).await;
    let status = ingest_with_query_key
        .track(v1::TrackRequest {
            event: Some(event("a")),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    server.stop().await;
}

#[tokio::test]
async fn the_bootstrap_key_may_ingest_and_query_but_not_administer() {
    let server = TestServer::postgres().await;
    let mut ingest = server.ingest(&server.api_key).await;
    ingest
        .track(v1::TrackRequest {
            event: Some(event("mine")),
        })
        .await
        .unwrap();
    let mut query = server.query(&server.api_key).await;
    let count = query
        .count_events(v1::CountEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(count.count, 1);
    let status = server
        .admin(&server.api_key)
        .await
        .list_tenants(v1::ListTenantsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    server.stop().await;
}

#[tokio::test]
async fn two_tenants_identical_event_ids_are_two_rows() {
    let server = TestServer::postgres().await;
    let (tenant_b, key_b) = create_tenant_with_key(&server, "b", &[Scope::Ingest]).await;
    let mut client_a = server.ingest(&server.api_key).await;
    let mut client_b = server.ingest(&key_b).await;
    let a = client_a
        .track(v1::TrackRequest {
            event: Some(event("same-id")),
        })
        .await
        .unwrap()
        .into_inner();
    let b = client_b
        .track(v1::TrackRequest {
            event: Some(event("same-id")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.result.unwrap().status(), IngestStatus::Accepted);
    assert_eq!(b.result.unwrap().status(), IngestStatus::Accepted);
    let tenant_a = server
        .store
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name == "default")
        .unwrap()
        .tenant_id;
    let tenant_b = TenantId::parse("tenant_id", &tenant_b).unwrap();
    assert_ne!(tenant_a, tenant_b);
    let (start, end) = (
        Utc.with_ymd_and_hms(1971, 1, 1, 0, 0, 0).unwrap(),
        Utc::now() + chrono::Duration::hours(2),
    );
    assert_eq!(
        eventline_store::testing::stored_events(&*server.store, tenant_a, start, end).await,
        1
    );
    assert_eq!(
        eventline_store::testing::stored_events(&*server.store, tenant_b, start, end).await,
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn a_revoked_key_stops_working_at_once() {
    let server = TestServer::postgres().await;
    let (tenant_id, key) = create_tenant_with_key(&server, "revocable", &[Scope::Ingest]).await;
    let mut client = server.ingest(&key).await;
    client
        .track(v1::TrackRequest {
            event: Some(event("before")),
        })
        .await
        .unwrap();
    let mut admin = server.admin(ADMIN_TOKEN).await;
    let keys = admin
        .list_api_keys(v1::ListApiKeysRequest { tenant_id })
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert_eq!(keys.len(), 1);
    let revoked = admin
        .revoke_api_key(v1::RevokeApiKeyRequest {
            key_id: keys[0].key_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.api_key.unwrap().revoke_time.is_some());
    let status = client
        .track(v1::TrackRequest {
            event: Some(event("after")),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    server.stop().await;
}

#[tokio::test]
async fn admin_requests_are_validated_naming_the_field() {
    let server = TestServer::postgres().await;
    let mut admin = server.admin(ADMIN_TOKEN).await;
    let status = admin
        .create_tenant(v1::CreateTenantRequest {
            name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("name"));
    let status = admin
        .create_api_key(v1::CreateApiKeyRequest {
            tenant_id: "nope".into(),
            scopes: vec![Scope::Ingest as i32],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("tenant_id"));
    let status = admin
        .create_tenant(v1::CreateTenantRequest {
            name: "default".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    let missing = uuid::Uuid::now_v7().to_string();
    let status = admin
        .create_api_key(v1::CreateApiKeyRequest {
            tenant_id: missing,
            scopes: vec![Scope::Ingest as i32],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let wrong_token = server
        .admin("not-the-admin-token-at-all")
        .await
        .list_tenants(v1::ListTenantsRequest {})
        .await;
    assert_eq!(wrong_token.unwrap_err().code(), Code::Unauthenticated);
    server.stop().await;
}
