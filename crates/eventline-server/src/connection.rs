//! Limits on the connections of both listeners (gRPC and HTTP), so that no client can
//! hold the server's connection slots: a cap on open connections per listener, a
//! deadline for a new connection's first byte (silent TCP connections), and an idle
//! timeout once no request is active on the connection (idle HTTP/1 keep-alive, idle h2c
//! and gRPC connections; HTTP/2 keep-alive pings do not count as activity). At the cap,
//! the oldest connections that have sent nothing for 100 ms are closed to make room, so a flood
//! of silent connections delays a real client by no more than it takes to close them;
//! with none to close, new connections wait in the kernel's accept backlog. Header, body
//! and message deadlines live with the protocol code; README "Limits and timeouts" lists
//! them all.

use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, extract::Request, middleware::Next, response::Response};
use futures::task::AtomicWaker;
use pin_project_lite::pin_project;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

/// TCP keep-alive on accepted sockets: finds peers that vanished without a FIN.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Silent connections closed at once when a listener is at its cap: closing them one per
/// accept would let a flood delay a real client by one round trip per silent connection.
const EVICTIONS_AT_CAP: usize = 32;
/// Only a connection silent for this long is closed to make room: a client that just
/// connected has its first bytes on the way (or already buffered, unread).
const EVICTION_MIN_SILENCE: Duration = Duration::from_millis(100);

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    /// Most connections open at once.
    pub(crate) max_connections: usize,
    /// Longest wait from accept to the connection's first byte.
    pub(crate) first_byte_timeout: Duration,
    /// Longest time a connection stays open with no active request.
    pub(crate) idle_timeout: Duration,
}

/// Requests active on one connection, and since when none is.
#[derive(Debug)]
pub(crate) struct Activity {
    active: AtomicUsize,
    accepted_at: Instant,
    /// Whether the connection has sent anything yet.
    spoke: AtomicBool,
    /// Set by the acceptor to close a silent connection and free its slot.
    evicted: AtomicBool,
    idle_since: Mutex<Instant>,
    /// Wakes the connection's reader when its last request ends, so the idle timer starts.
    waker: AtomicWaker,
}

/// The eviction counter at zero, so an alert's `increase()` sees the first eviction.
pub(crate) fn register_metrics() {
    metrics::counter!("eventline_connections_evicted_total").absolute(0);
}

impl Activity {
    fn new() -> Self {
        Self {
            active: AtomicUsize::new(0),
            accepted_at: Instant::now(),
            spoke: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            idle_since: Mutex::new(Instant::now()),
            waker: AtomicWaker::new(),
        }
    }

    /// Marks a request active until the guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> ActiveRequest {
        self.active.fetch_add(1, Ordering::SeqCst);
        ActiveRequest(Arc::clone(self))
    }

    fn idle_deadline(&self, idle_timeout: Duration) -> Option<Instant> {
        if self.active.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let idle_since = *self
            .idle_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(idle_since + idle_timeout)
    }
}

/// One active request; the connection counts as idle once every guard is dropped.
#[derive(Debug)]
pub(crate) struct ActiveRequest(Arc<Activity>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self
                .0
                .idle_since
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Instant::now();
            self.0.waker.wake();
        }
    }
}

/// What each request learns about its connection (a request extension on both ports).
#[derive(Debug, Clone)]
pub(crate) struct ConnectionInfo {
    pub(crate) activity: Arc<Activity>,
}

pin_project! {
    /// An accepted TCP connection holding its slot, with its first-byte and idle deadlines.
    #[derive(Debug)]
    pub(crate) struct GuardedStream {
        #[pin]
        inner: TcpStream,
        deadline: Pin<Box<Sleep>>,
        info: ConnectionInfo,
        limits: ConnectionLimits,
        accepted_at: Instant,
        _slot: OwnedSemaphorePermit,
    }
}

impl GuardedStream {
    fn new(inner: TcpStream, slot: OwnedSemaphorePermit, limits: ConnectionLimits) -> Self {
        let _ = inner.set_nodelay(true);
        let _ = socket2::SockRef::from(&inner)
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE));
        let accepted_at = Instant::now();
        Self {
            info: ConnectionInfo {
                activity: Arc::new(Activity::new()),
            },
            inner,
            deadline: Box::pin(tokio::time::sleep_until(
                accepted_at + limits.first_byte_timeout,
            )),
            limits,
            accepted_at,
            _slot: slot,
        }
    }

    /// The connection's request-visible information.
    pub(crate) fn info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let activity = &this.info.activity;
        let spoke = activity.spoke.load(Ordering::Relaxed);
        if !spoke && activity.evicted.load(Ordering::Relaxed) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "closed to make room: no request yet and the listener is at its cap",
            )));
        }
        let filled_before = buffer.filled().len();
        match this.inner.poll_read(context, buffer) {
            Poll::Ready(Ok(())) => {
                if !spoke && buffer.filled().len() > filled_before {
                    activity.spoke.store(true, Ordering::Relaxed);
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => {}
        }
        activity.waker.register(context.waker());
        let deadline = if spoke {
            activity.idle_deadline(this.limits.idle_timeout)
        } else {
            Some(*this.accepted_at + this.limits.first_byte_timeout)
        };
        let Some(deadline) = deadline else {
            return Poll::Pending;
        };
        if this.deadline.deadline() != deadline {
            this.deadline.as_mut().reset(deadline);
        }
        match this.deadline.as_mut().poll(context) {
            Poll::Ready(()) => {
                let what = if spoke {
                    "connection idle for longer than the idle timeout"
                } else {
                    "no request within the first-byte timeout"
                };
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(context, buffer)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(context)
    }
}

impl tonic::transport::server::Connected for GuardedStream {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info()
    }
}

/// Accepts connections while fewer than `limits.max_connections` are open.
#[derive(Debug)]
pub(crate) struct Acceptor {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    limits: ConnectionLimits,
    /// Connections in accept order, to find the oldest silent one at the cap; entries of
    /// closed or talking connections are dropped as they are met.
    accepted: Mutex<VecDeque<Weak<Activity>>>,
}

impl Acceptor {
    pub(crate) fn new(listener: TcpListener, limits: ConnectionLimits) -> Self {
        Self {
            listener,
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            accepted: Mutex::new(VecDeque::new()),
        }
    }

    /// Waits for a free slot (closing the oldest silent connection when there is none),
    /// then for a connection. Transient accept errors (the peer reset before accept, out
    /// of file descriptors) are logged and retried after a pause.
    pub(crate) async fn accept(&self) -> GuardedStream {
        let slot = loop {
            if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
                break slot;
            }
            // At the cap: close silent connections old enough, and look again soon, as
            // the ones too young to close now age.
            self.evict_oldest_silent(EVICTIONS_AT_CAP);
            tokio::select! {
                slot = Arc::clone(&self.slots).acquire_owned() => {
                    break slot.expect("the slot semaphore is never closed");
                }
                () = tokio::time::sleep(EVICTION_MIN_SILENCE / 2) => {}
            }
        };
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let stream = GuardedStream::new(stream, slot, self.limits);
                    self.remember(&stream.info.activity);
                    return stream;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn remember(&self, activity: &Arc<Activity>) {
        let mut accepted = self.lock_accepted();
        if accepted.len() >= 2 * self.limits.max_connections {
            accepted.retain(|entry| {
                entry
                    .upgrade()
                    .is_some_and(|activity| !activity.spoke.load(Ordering::Relaxed))
            });
        }
        accepted.push_back(Arc::downgrade(activity));
    }

    fn evict_oldest_silent(&self, count: usize) {
        let mut accepted = self.lock_accepted();
        let mut evicted = 0;
        while evicted < count
            && let Some(entry) = accepted.front()
        {
            let Some(activity) = entry.upgrade() else {
                accepted.pop_front();
                continue;
            };
            if activity.spoke.load(Ordering::Relaxed) {
                accepted.pop_front();
                continue;
            }
            // In accept order: every later connection is younger still.
            if activity.accepted_at.elapsed() < EVICTION_MIN_SILENCE {
                break;
            }
            accepted.pop_front();
            activity.evicted.store(true, Ordering::Relaxed);
            activity.waker.wake();
            evicted += 1;
        }
        metrics::counter!("eventline_connections_evicted_total").increment(evicted as u64);
    }

    fn lock_accepted(&self) -> std::sync::MutexGuard<'_, VecDeque<Weak<Activity>>> {
        self.accepted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pin_project! {
    /// A response body that keeps its request counted as active until it is done.
    struct TrackedBody {
        #[pin]
        inner: Body,
        _active: ActiveRequest,
    }
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: counts the request as active on its connection until its response body
/// is finished (streams included), so the idle timeout never cuts a live request.
pub(crate) async fn track_activity(request: Request, next: Next) -> Response {
    let active = request
        .extensions()
        .get::<ConnectionInfo>()
        .map(|info| info.activity.begin());
    let response = next.run(request).await;
    match active {
        Some(active) => response.map(|inner| {
            Body::new(TrackedBody {
                inner,
                _active: active,
            })
        }),
        None => response,
    }
}
