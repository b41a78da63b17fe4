//! The request memory budget: one pool of bytes shared by every connection of both
//! listeners, charged by request messages while they are being received and by decoded
//! ingest batches until their commit is answered. Past the budget a request is refused at
//! once with RESOURCE_EXHAUSTED and a retry delay (429 + Retry-After over REST), so the
//! server's memory stays bounded whatever clients send (README "Limits and timeouts").

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, extract::Request, middleware::Next, response::Response};
use bytes::{Buf, Bytes};
use eventline_core::Error;
use http_body::Frame;
use pin_project_lite::pin_project;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

/// Retry delay suggested when the budget is spent: requests commit within about this.
const BUDGET_RETRY_AFTER: Duration = Duration::from_millis(500);
/// Length of a gRPC message frame's prefix (compression flag and length).
const GRPC_FRAME_HEADER: usize = 5;

/// Bytes of requests in memory, shared by all connections; cheap to clone.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

/// Bytes held from the budget until dropped.
#[derive(Debug)]
pub struct Charge(Option<OwnedSemaphorePermit>);

/// The refusal counter at zero, so an alert's `increase()` sees the first refusal.
pub(crate) fn register_metrics() {
    metrics::counter!("eventline_budget_refusals_total").absolute(0);
}

impl Charge {
    fn add(&mut self, other: Charge) {
        match (&mut self.0, other.0) {
            (Some(held), Some(more)) => held.merge(more),
            (held @ None, more) => *held = more,
            (Some(_), None) => {}
        }
    }
}

impl MemoryBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> Self {
        Self {
            bytes: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))),
            total,
        }
    }

    /// Takes `bytes` from the budget, or refuses at once when they are not free.
    pub fn try_charge(&self, bytes: usize) -> Result<Charge, Error> {
        if bytes == 0 {
            return Ok(Charge(None));
        }
        let wanted = u32::try_from(bytes).unwrap_or(u32::MAX);
        match Arc::clone(&self.bytes).try_acquire_many_owned(wanted) {
            Ok(permit) => Ok(Charge(Some(permit))),
            Err(_) => {
                metrics::counter!("eventline_budget_refusals_total").increment(1);
                Err(Error::Overloaded {
                    what: format!(
                        "the server's request memory budget ({} bytes) is in use",
                        self.total
                    ),
                    retry_after: BUDGET_RETRY_AFTER,
                })
            }
        }
    }

    /// Bytes charged right now.
    pub fn in_use(&self) -> usize {
        self.total
            .min(Semaphore::MAX_PERMITS)
            .saturating_sub(self.bytes.available_permits())
    }
}

/// What the gRPC body wrapper knows of the message it is inside.
#[derive(Debug, Default)]
struct FrameCursor {
    /// Prefix bytes of the next message seen so far.
    header: [u8; GRPC_FRAME_HEADER],
    header_len: usize,
    /// Payload bytes of the current message still to come.
    payload_left: usize,
}

impl FrameCursor {
    /// Advances over `data`; true when it ends between messages.
    fn advance(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let taken = self.payload_left.min(data.len());
                self.payload_left -= taken;
                data.advance(taken);
                continue;
            }
            let taken = (GRPC_FRAME_HEADER - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + taken].copy_from_slice(&data[..taken]);
            self.header_len += taken;
            data.advance(taken);
            if self.header_len == GRPC_FRAME_HEADER {
                let length = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                self.payload_left = length as usize;
                self.header_len = 0;
            }
        }
        self.at_boundary()
    }

    fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.payload_left == 0
    }
}

pin_project! {
    /// A gRPC request body whose partly received message is charged to the budget, must
    /// arrive whole within the message timeout once its first byte came, and may not be
    /// cut short by the end of the stream.
    struct BudgetedBody {
        #[pin]
        inner: Body,
        deadline: Pin<Box<Sleep>>,
        budget: MemoryBudget,
        charge: Charge,
        cursor: FrameCursor,
        message_timeout: Duration,
        failed: bool,
    }
}

impl http_body::Body for BudgetedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        // Everything handed over so far formed whole messages, which the decoder has
        // taken by now (it asks for more only then): their bytes are no longer ours.
        if this.cursor.at_boundary() {
            *this.charge = Charge(None);
        }
        match this.inner.poll_frame(context) {
            Poll::Ready(Some(Ok(frame))) => {
                let Some(data) = frame.data_ref() else {
                    return Poll::Ready(Some(Ok(frame)));
                };
                let was_at_boundary = this.cursor.at_boundary();
                match this.budget.try_charge(data.len()) {
                    Ok(charge) => this.charge.add(charge),
                    Err(error) => {
                        *this.failed = true;
                        return Poll::Ready(Some(Err(tonic::Status::from(error))));
                    }
                }
                if was_at_boundary {
                    this.deadline
                        .as_mut()
                        .reset(Instant::now() + *this.message_timeout);
                }
                this.cursor.advance(data);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                Poll::Ready(Some(Err(tonic::Status::from_error(error.into()))))
            }
            // tonic calls a message cut short by the end of the stream INTERNAL; it is
            // the client's doing.
            Poll::Ready(None) if !this.cursor.at_boundary() => {
                *this.failed = true;
                Poll::Ready(Some(Err(tonic::Status::invalid_argument(
                    "the request stream ended inside a message (truncated)",
                ))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.cursor.at_boundary() {
                    return Poll::Pending;
                }
                match this.deadline.as_mut().poll(context) {
                    Poll::Ready(()) => {
                        *this.failed = true;
                        Poll::Ready(Some(Err(tonic::Status::deadline_exceeded(format!(
                            "a request message did not arrive whole within {} ms of its first byte",
                            this.message_timeout.as_millis()
                        )))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }
}

/// The budget and the per-message deadline, as axum middleware state.
#[derive(Debug, Clone)]
pub(crate) struct MessageLimits {
    pub(crate) budget: MemoryBudget,
    pub(crate) message_timeout: Duration,
}

/// Middleware on the gRPC routes: every request body is read through the budget.
pub(crate) async fn limit_grpc_body(
    axum::extract::State(limits): axum::extract::State<MessageLimits>,
    request: Request,
    next: Next,
) -> Response {
    let request = request.map(|inner| {
        Body::new(BudgetedBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(limits.message_timeout)),
            budget: limits.budget.clone(),
            charge: Charge(None),
            cursor: FrameCursor::default(),
            message_timeout: limits.message_timeout,
            failed: false,
        })
    });
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut framed = vec![0];
        framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        framed.extend_from_slice(payload);
        framed
    }

    #[test]
    fn cursor_finds_message_boundaries_across_chunks() {
        let mut data = frame(b"hello");
        data.extend(frame(b""));
        data.extend(frame(b"world!"));
        let mut cursor = FrameCursor::default();
        assert!(!cursor.advance(&data[..3]), "inside the first prefix");
        assert!(!cursor.advance(&data[3..8]), "inside the first payload");
        assert!(cursor.advance(&data[8..10]), "first message done");
        assert!(
            cursor.advance(&data[10..15]),
            "an empty message is whole at once"
        );
        assert!(!cursor.advance(&data[15..20]));
        assert!(cursor.advance(&data[20..]));
    }

    #[test]
    fn budget_refuses_past_its_total_and_frees_on_drop() {
        let budget = MemoryBudget::new(100);
        let first = budget.try_charge(60).unwrap();
        let refused = budget.try_charge(41).unwrap_err();
        assert_eq!(refused.code(), eventline_core::ErrorCode::ResourceExhausted);
        assert!(refused.retry_after().is_some());
        assert_eq!(budget.in_use(), 60);
        drop(first);
        assert_eq!(budget.in_use(), 0);
        let _second = budget.try_charge(100).unwrap();
    }
}
