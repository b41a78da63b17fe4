//! A webhook receiver on a free local port, for the tests of outbound webhooks (alerts,
//! streams): it records every request and answers the statuses it is given, then 200;
//! and the Standard Webhooks signature computed from the secret without the server's code.

use std::{
    collections::VecDeque,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Debug, Default)]
pub struct ReceiverState {
    /// Statuses to answer, in order; 200 once they run out.
    statuses: VecDeque<u16>,
    received: Vec<Received>,
}

/// A webhook receiver on a free local port.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub url: String,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    pub async fn start(statuses: &[u16]) -> Self {
        let state = Arc::new(Mutex::new(ReceiverState {
            statuses: statuses.iter().copied().collect(),
            received: Vec::new(),
        }));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, state }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Waits until at least `count` requests came, and returns them all.
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        eventually(&format!("{count} webhook requests"), || async {
            let received = self.received();
            (received.len() >= count).then_some(received)
        })
        .await
    }
}

async fn receive(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<ReceiverState>>>,
    headers: http::HeaderMap,
    body: bytes::Bytes,
) -> http::StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let mut state = state.lock().unwrap();
    state.received.push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
    });
    let status = state.statuses.pop_front().unwrap_or(200);
    http::StatusCode::from_u16(status).unwrap()
}

/// Polls `check` until it answers, for at most 30 seconds.
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The signature as the Standard Webhooks spec defines it, computed here from the
/// secret without the server's code.
pub fn expected_signature(secret: &str, received: &Received) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", received.id, received.timestamp).as_bytes());
    mac.update(&received.body);
    let digest = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{digest}")
}

pub fn assert_signed(secret: &str, received: &Received) {
    assert_eq!(received.signature, expected_signature(secret, received));
    let sent_at: i64 = received.timestamp.parse().expect("unix seconds");
    assert!(
        (Utc::now().timestamp() - sent_at).abs() < 300,
        "webhook-timestamp {sent_at} is now"
    );
}
