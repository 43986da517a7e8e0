//! One request on a connection, as the HTTP layer sees it before the router:
//! who the client is ([`ClientAddr`]), how long its body may stall, and whether
//! the connection can be reused afterwards.
//!
//! Keep-alive: when a handler answers without reading the whole request body
//! (a 401 challenge, a 404, any early error), the unread bytes are still on
//! the wire. Left there, they would be parsed as the next request; dropped with
//! the connection, a client that reuses it (Go's HTTP client does) fails with
//! EOF, and a client still writing the body may see a reset instead of the
//! answer. So an unread body of up to [`DRAIN_LIMIT`] is read and discarded
//! (memory: one frame at a time) before the answer goes out, while it keeps
//! arriving ([`DRAIN_IDLE`]) and for at most [`DRAIN_TIME`]; otherwise the
//! answer says `Connection: close`. A client that sent `Expect: 100-continue`
//! sends its body only when the handler starts reading it: if the handler
//! never did, the client gets the answer and the close at once; if it read
//! the body to its end, the connection stays open as for any request.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, Version, header};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::listener::ConnInfo;
use crate::http::client_addr::TrustedProxies;

/// Most of an unread request body that is drained to keep the connection usable.
pub const DRAIN_LIMIT: u64 = 64 << 20;
/// Longest a drain may take.
pub const DRAIN_TIME: Duration = Duration::from_secs(2);
/// A drain stops when the client sends nothing for this long.
pub const DRAIN_IDLE: Duration = Duration::from_millis(250);

/// Serves the requests of one connection through the router.
#[derive(Clone)]
pub struct ConnService {
    router: Router,
    info: Arc<ConnInfo>,
    peer: SocketAddr,
    /// Whether the connection is TLS (HTTPS).
    tls: bool,
    trusted: Arc<TrustedProxies>,
    body_timeout: Duration,
}

impl ConnService {
    pub fn new(
        router: Router,
        info: Arc<ConnInfo>,
        peer: SocketAddr,
        tls: bool,
        trusted: Arc<TrustedProxies>,
        body_timeout: Duration,
    ) -> ConnService {
        ConnService {
            router,
            info,
            peer,
            tls,
            trusted,
            body_timeout,
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.info.begin_request();
        let in_flight = InFlight(self.info.clone());
        let client = self.trusted.client_addr(self.peer, req.headers());
        let scheme = self.trusted.scheme(self.tls, self.peer, req.headers());
        let (mut parts, incoming) = req.into_parts();
        parts.extensions.insert(client);
        parts.extensions.insert(scheme);
        let expects_continue = req_expects_continue(&parts.headers);
        let unread_body = !incoming.is_end_stream();
        let h1 = parts.version < Version::HTTP_2;
        let body = Arc::new(Mutex::new(GuardedBody::new(incoming, self.body_timeout)));
        let req = Request::from_parts(parts, Body::new(SharedBody(body.clone())));
        let mut router = self.router.clone();
        Box::pin(async move {
            let mut resp = match tower_service::Service::call(&mut router, req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            if h1 && unread_body && !body_consumed(&body, expects_continue).await {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            let (parts, body) = resp.into_parts();
            Ok(Response::from_parts(
                parts,
                ResponseBody {
                    inner: body,
                    _in_flight: in_flight,
                },
            ))
        })
    }
}

/// Whether the connection can take another request after this one's answer:
/// the handler read the body to its end, or what it left is drained. A
/// client that sent `Expect: 100-continue` sends its body only once it is
/// asked for (hyper asks on the first read), so a body the handler never
/// touched is not on the wire and will not be: the connection closes.
async fn body_consumed(body: &Arc<Mutex<GuardedBody>>, expects_continue: bool) -> bool {
    {
        let b = body.lock().expect("body lock");
        if b.finished {
            return true;
        }
        if expects_continue && !b.polled {
            return false;
        }
    }
    drain(body).await
}

/// Read and discard what is left of a request body, if it is small enough;
/// true when the body was read to its end (the connection stays reusable).
async fn drain(body: &Arc<Mutex<GuardedBody>>) -> bool {
    {
        let b = body.lock().expect("body lock");
        if b.finished {
            return true;
        }
        if b.inner.size_hint().lower() > DRAIN_LIMIT.saturating_sub(b.received) {
            return false;
        }
    }
    let read = async {
        loop {
            let next = std::future::poll_fn(|cx| {
                let mut b = body.lock().expect("body lock");
                Pin::new(&mut *b).poll_frame(cx)
            });
            let Ok(frame) = tokio::time::timeout(DRAIN_IDLE, next).await else {
                return false;
            };
            let b = body.lock().expect("body lock");
            match frame {
                None => return true,
                Some(Ok(_)) if b.received <= DRAIN_LIMIT => continue,
                _ => return false,
            }
        }
    };
    tokio::time::timeout(DRAIN_TIME, read)
        .await
        .unwrap_or(false)
}

fn req_expects_continue(h: &axum::http::HeaderMap) -> bool {
    h.get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
}

/// The request body as the router sees it: shared with [`ConnService`], which
/// drains what the handler left unread.
struct SharedBody(Arc<Mutex<GuardedBody>>);

impl HttpBody for SharedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut b = self.0.lock().expect("body lock");
        Pin::new(&mut *b).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        let b = self.0.lock().expect("body lock");
        b.finished || b.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.lock().expect("body lock").inner.size_hint()
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client sent no body bytes for {0:?}")]
    Stalled(Duration),
    #[error("reading the request body failed: {0}")]
    Read(#[from] hyper::Error),
}

/// A request body that fails once it has delivered nothing for `timeout`.
struct GuardedBody {
    inner: Incoming,
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether bytes arrived since the timer was last set.
    progressed: bool,
    received: u64,
    finished: bool,
    /// Whether anyone asked for the body (for `Expect: 100-continue`, the
    /// moment the client is told to send it).
    polled: bool,
}

impl GuardedBody {
    fn new(inner: Incoming, timeout: Duration) -> GuardedBody {
        GuardedBody {
            inner,
            timeout,
            timer: None,
            progressed: true,
            received: 0,
            finished: false,
            polled: false,
        }
    }

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        this.polled = true;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.finished = true;
                this.timer = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.received += d.len() as u64;
                }
                this.progressed = true;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Pending => {
                if this.progressed {
                    this.progressed = false;
                    let deadline = Instant::now() + this.timeout;
                    match &mut this.timer {
                        Some(t) => t.as_mut().reset(deadline),
                        None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                match this.timer.as_mut().map(|t| t.as_mut().poll(cx)) {
                    Some(Poll::Ready(())) => {
                        Poll::Ready(Some(Err(BodyError::Stalled(this.timeout))))
                    }
                    _ => Poll::Pending,
                }
            }
        }
    }
}

/// Marks a request in flight on its connection until the response body is gone.
struct InFlight(Arc<ConnInfo>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// A response body that keeps its request counted as in flight until it has
/// been sent (or abandoned), so an active download is never taken for an idle
/// connection. Over HTTP/2 it tells its stream's send watch when hyper takes
/// a frame and when it asks for the next ([`super::listener::body_polled`]).
pub struct ResponseBody {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        super::listener::body_polled(matches!(r, Poll::Ready(Some(Ok(_)))));
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
