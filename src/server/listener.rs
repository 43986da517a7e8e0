//! The accept loop and the life of each connection: what a client can hold
//! open and for how long, before it has authenticated and after.
//!
//! - Connections are counted in a [`ConnTable`]: at most `max_connections` in
//!   all and `max_connections_per_ip` from one address (trusted proxies are
//!   exempt from the second). A new connection over a cap evicts the
//!   connection that has been idle longest (no request in flight), so clients
//!   that merely hold sockets open cannot lock out clients that send requests;
//!   only if every connection is busy is the new one refused.
//! - A connection with no request in flight for `idle_timeout` is closed,
//!   whether it never sent a byte, is trickling request headers, or is an idle
//!   keep-alive connection ([`idle_expired`]). Closed connections, idle or
//!   evicted, are told first (HTTP/2 `GOAWAY`) and dropped [`CLOSE_GRACE`] later.
//! - Writes that make no progress for `send_timeout` fail ([`StallGuard`]), so
//!   a client that stops reading a download is dropped, and a download waiting
//!   on a slow client holds one small buffer, not a thread.
//! - HTTP/2 needs more: a client can withhold flow-control credit
//!   (WINDOW_UPDATE) from a stream while it keeps the socket busy (PINGs, other
//!   streams), so the socket never stalls. Each stream's task is watched
//!   ([`StreamExecutor`]): a response body that has handed a frame to hyper and
//!   is not asked for the next one within `send_timeout` is dropped, which
//!   resets the stream (`RST_STREAM`) and closes what the body held open.
//! - Request bodies and the keep-alive rules are in [`super::conn`].
//! - With TLS (`tls_cert`), the handshake runs in the connection's task,
//!   after it was admitted: it holds a slot like any connection, is idle
//!   (evictable) while it lasts, and is abandoned at `idle_timeout` from
//!   the accept, so a client that connects and sends nothing, or stalls
//!   mid-handshake, costs no more than one that never sends its headers.
//!   A failed handshake is counted (`berth_tls_handshakes_failed_total`); a
//!   client that speaks plain HTTP to the port is answered `400` in plain
//!   HTTP, saying to use `https://`.
//! - Shutdown: stop accepting, let requests in flight finish for
//!   `shutdown_timeout`, then drop what is left.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::conn::ConnService;
use crate::config::HttpLimits;
use crate::http::client_addr::{TrustedProxies, limit_key};
use crate::metrics::Metrics;

/// One open connection, as the table and its own task see it.
pub struct ConnInfo {
    id: u64,
    /// The client address as the per-address cap counts it ([`limit_key`]).
    ip: IpAddr,
    /// Requests in flight (from the service call to the end of the response
    /// body) and since when the connection has had none.
    state: Mutex<(usize, Instant)>,
    /// Cancelled when the connection is evicted.
    evicted: CancellationToken,
}

impl ConnInfo {
    pub(super) fn begin_request(&self) {
        let mut s = self.state.lock().expect("conn state lock");
        s.0 += 1;
    }

    pub(super) fn end_request(&self) {
        let mut s = self.state.lock().expect("conn state lock");
        s.0 = s.0.saturating_sub(1);
        if s.0 == 0 {
            s.1 = Instant::now();
        }
    }

    /// When the connection last became idle; `None` while a request is in flight.
    fn idle_since(&self) -> Option<Instant> {
        let s = self.state.lock().expect("conn state lock");
        (s.0 == 0).then_some(s.1)
    }
}

/// Why a new connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// Every slot is held by a connection with a request in flight.
    Full,
    PerIp,
}

/// Every open connection, for the caps and for eviction.
#[derive(Default)]
pub struct ConnTable {
    inner: Mutex<TableInner>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct TableInner {
    conns: HashMap<u64, Arc<ConnInfo>>,
    per_ip: HashMap<IpAddr, usize>,
}

impl TableInner {
    fn remove(&mut self, id: u64) -> Option<Arc<ConnInfo>> {
        let info = self.conns.remove(&id)?;
        if let Some(n) = self.per_ip.get_mut(&info.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&info.ip);
            }
        }
        Some(info)
    }

    /// Evict the connection (of `ip`, if given) idle the longest; false if none is idle.
    fn evict_idlest(&mut self, ip: Option<IpAddr>) -> bool {
        let victim = self
            .conns
            .values()
            .filter(|c| ip.is_none_or(|ip| c.ip == ip))
            .filter_map(|c| c.idle_since().map(|t| (t, c.id)))
            .min();
        match victim.and_then(|(_, id)| self.remove(id)) {
            Some(info) => {
                info.evicted.cancel();
                true
            }
            None => false,
        }
    }
}

impl ConnTable {
    /// Admit a connection from `ip`, evicting idle ones over the caps.
    fn admit(
        &self,
        ip: IpAddr,
        per_ip_exempt: bool,
        limits: &HttpLimits,
    ) -> Result<Arc<ConnInfo>, Refusal> {
        let ip = limit_key(ip);
        let mut t = self.inner.lock().expect("conn table lock");
        if !per_ip_exempt
            && t.per_ip.get(&ip).copied().unwrap_or(0) >= limits.max_connections_per_ip
            && !t.evict_idlest(Some(ip))
        {
            return Err(Refusal::PerIp);
        }
        if t.conns.len() >= limits.max_connections && !t.evict_idlest(None) {
            return Err(Refusal::Full);
        }
        let info = Arc::new(ConnInfo {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            ip,
            state: Mutex::new((0, Instant::now())),
            evicted: CancellationToken::new(),
        });
        t.conns.insert(info.id, info.clone());
        *t.per_ip.entry(ip).or_insert(0) += 1;
        Ok(info)
    }

    fn remove(&self, id: u64) {
        self.inner.lock().expect("conn table lock").remove(id);
    }

    /// A guard that takes connection `id` out of the table when dropped.
    fn entry(self: &Arc<Self>, id: u64) -> TableEntry {
        TableEntry {
            table: self.clone(),
            id,
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("conn table lock").conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A connection's place in the [`ConnTable`], given up when its task ends in
/// any way: normally, or unwinding from a panic in a handler it polled.
struct TableEntry {
    table: Arc<ConnTable>,
    id: u64,
}

impl Drop for TableEntry {
    fn drop(&mut self) {
        self.table.remove(self.id);
    }
}

/// Completes once `info` has had no request in flight for `timeout`.
async fn idle_expired(info: &ConnInfo, timeout: Duration) {
    loop {
        let deadline = match info.idle_since() {
            Some(t) => t + timeout,
            None => Instant::now() + timeout,
        };
        tokio::time::sleep_until(deadline).await;
        if info.idle_since().is_some_and(|t| t.elapsed() >= timeout) {
            return;
        }
    }
}

/// Raise the soft limit on open files to the hard limit; returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes into the `rlimit` we pass by exclusive
    // reference and reads nothing else; RLIMIT_NOFILE is a valid resource.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `setrlimit` only reads the `rlimit` we pass by shared
        // reference; raising the soft limit up to the hard limit is always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    lim.rlim_cur
}

/// The connection cap that fits `fd_limit`: the configured one, but leaving
/// a quarter of the descriptors (at least 64) for files, the database and
/// blob storage.
pub fn fit_connections(configured: usize, fd_limit: u64) -> usize {
    let reserve = (fd_limit / 4).max(64);
    let usable = fd_limit.saturating_sub(reserve).max(16);
    configured.min(usize::try_from(usable).unwrap_or(usize::MAX))
}

/// Everything a connection task needs.
pub struct ListenerContext {
    pub router: Router,
    pub limits: HttpLimits,
    pub trusted: Arc<TrustedProxies>,
    pub metrics: Arc<Metrics>,
    pub table: Arc<ConnTable>,
    /// Handshakes with the current certificate, when serving HTTPS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Accept and serve connections until `shutdown` completes, then drain.
pub async fn run(
    listener: TcpListener,
    ctx: ListenerContext,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let ctx = Arc::new(ctx);
    let mut builder = auto::Builder::new(StreamExecutor {
        send_timeout: ctx.limits.send_timeout,
    });
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.limits.idle_timeout)
        .max_headers(100);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .max_header_list_size(64 << 10)
        .max_pending_accept_reset_streams(32)
        .max_local_error_reset_streams(64)
        .keep_alive_interval(ctx.limits.idle_timeout)
        .keep_alive_timeout(ctx.limits.send_timeout);
    let builder = Arc::new(builder);
    let stop = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let exempt = ctx.trusted.contains(peer.ip());
                    match ctx.table.admit(peer.ip(), exempt, &ctx.limits) {
                        Ok(info) => {
                            ctx.metrics.connections_accepted.inc();
                            let ctx = ctx.clone();
                            let builder = builder.clone();
                            let stop = stop.clone();
                            tokio::spawn(async move {
                                serve_connection(stream, peer, info, &ctx, &builder, &stop).await;
                            });
                        }
                        Err(why) => {
                            ctx.metrics.connections_refused.inc();
                            tracing::debug!(%peer, ?why, "connection refused: every slot is busy");
                            drop(stream);
                        }
                    }
                }
                Err(e) => {
                    // Out of descriptors or a transient accept error: back off
                    // briefly instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    stop.cancel();
    let deadline = Instant::now() + ctx.limits.shutdown_timeout;
    while !ctx.table.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = ctx.table.len();
    if left > 0 {
        tracing::warn!(
            connections = left,
            "shutdown timeout reached; closing connections with requests still in flight"
        );
    }
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    info: Arc<ConnInfo>,
    ctx: &ListenerContext,
    builder: &auto::Builder<StreamExecutor>,
    stop: &CancellationToken,
) {
    let _entry = ctx.table.entry(info.id);
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = &ctx.tls else {
        let guarded = StallGuard::new(stream, ctx.limits.send_timeout);
        return serve_http(guarded, false, peer, &info, ctx, builder, stop).await;
    };
    let send_timeout = ctx.limits.send_timeout;
    let handshake = async move {
        refuse_plain_http(&stream).await?;
        acceptor.accept(StallGuard::new(stream, send_timeout)).await
    };
    // The handshake: bounded by the idle timeout counted from the accept
    // (the connection has had no request yet), by eviction and by shutdown.
    let tls = tokio::select! {
        r = handshake => match r {
            Ok(tls) => tls,
            Err(e) => {
                ctx.metrics.tls_handshakes_failed.inc();
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
        },
        _ = idle_expired(&info, ctx.limits.idle_timeout) => {
            ctx.metrics.tls_handshakes_failed.inc();
            ctx.metrics.connections_idle_closed.inc();
            tracing::debug!(%peer, "TLS handshake not finished within the idle timeout");
            return;
        }
        _ = info.evicted.cancelled() => {
            ctx.metrics.tls_handshakes_failed.inc();
            ctx.metrics.connections_evicted.inc();
            return;
        }
        _ = stop.cancelled() => return,
    };
    serve_http(tls, true, peer, &info, ctx, builder, stop).await;
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a client that speaks plain HTTP to the HTTPS port is told.
const PLAIN_HTTP_BODY: &str = "This port speaks HTTPS: use https:// to reach it.\n";

/// On the HTTPS port, a client whose first byte is not a TLS handshake
/// (plain HTTP, most likely) gets a plain `400` saying to use `https://`,
/// and an error ends the connection; otherwise nothing is read.
async fn refuse_plain_http(stream: &TcpStream) -> io::Result<()> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 || first[0] == TLS_HANDSHAKE_RECORD {
        return Ok(());
    }
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{PLAIN_HTTP_BODY}",
        PLAIN_HTTP_BODY.len()
    );
    // A few dozen bytes: the socket's send buffer takes them at once.
    stream.writable().await?;
    let _ = stream.try_write(answer.as_bytes());
    // Read what the client sent, briefly, before closing: a close with
    // unread bytes would reset the connection under the answer.
    let drain = async {
        let mut sink = [0u8; 4096];
        loop {
            stream.readable().await?;
            match stream.try_read(&mut sink) {
                Ok(0) => return Ok::<(), io::Error>(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), drain).await;
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "plain HTTP on the HTTPS port",
    ))
}

/// Serve HTTP/1.1 or HTTP/2 on an established connection (plain, or TLS
/// after its handshake) until it ends, is idle too long, is evicted, or the
/// server shuts down.
async fn serve_http<I>(
    io: I,
    tls: bool,
    peer: SocketAddr,
    info: &Arc<ConnInfo>,
    ctx: &ListenerContext,
    builder: &auto::Builder<StreamExecutor>,
    stop: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let service = ConnService::new(
        ctx.router.clone(),
        info.clone(),
        peer,
        tls,
        ctx.trusted.clone(),
        ctx.limits.body_timeout,
    );
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    // Set once the connection is being closed for idleness or eviction: it
    // is told so (HTTP/2 `GOAWAY`, so the client opens a new connection
    // instead of seeing its next request fail), then dropped at this deadline
    // whatever the client does.
    let mut closing: Option<Pin<Box<Sleep>>> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = info.evicted.cancelled(), if closing.is_none() => {
                ctx.metrics.connections_evicted.inc();
                if !draining {
                    conn.as_mut().graceful_shutdown();
                }
                closing = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
            }
            _ = idle_expired(info, ctx.limits.idle_timeout), if closing.is_none() => {
                ctx.metrics.connections_idle_closed.inc();
                if !draining {
                    conn.as_mut().graceful_shutdown();
                }
                closing = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
            }
            _ = stop.cancelled(), if !draining && closing.is_none() => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = async { closing.as_mut().expect("closing is set").await }, if closing.is_some() => {
                break;
            }
        }
    }
}

/// How long a connection closed for idleness or eviction gets to deliver
/// its `GOAWAY` (and finish anything that slipped in meanwhile).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

tokio::task_local! {
    /// The send watch of the HTTP/2 stream whose task is running.
    static STREAM_SEND: Arc<SendWatch>;
}

/// Whether an HTTP/2 stream's response body owes hyper nothing: set when
/// the body hands over a frame, cleared when hyper asks for the next one.
/// While it is set, hyper is waiting for the client to grant flow-control
/// credit for what it has already (a body that is slow itself, e.g. waiting
/// on storage, is not timed: hyper has asked and is waiting on it).
#[derive(Default)]
struct SendWatch {
    taken_at: Mutex<Option<Instant>>,
}

impl SendWatch {
    fn owed_since(&self) -> Option<Instant> {
        *self.taken_at.lock().expect("send watch lock")
    }
}

/// Called by a response body each time hyper polls it (`asked`), and when
/// the poll hands over a frame (`taken`). Outside an HTTP/2 stream's task
/// (HTTP/1 bodies are polled by the connection, whose socket the
/// [`StallGuard`] watches) it does nothing.
pub(super) fn body_polled(taken: bool) {
    let _ = STREAM_SEND.try_with(|w| {
        *w.taken_at.lock().expect("send watch lock") = taken.then(Instant::now);
    });
}

/// Runs the tasks hyper spawns, one per HTTP/2 stream, each under a
/// [`StreamSendTimeout`].
#[derive(Clone)]
pub struct StreamExecutor {
    send_timeout: Duration,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(StreamSendTimeout {
            inner: Box::pin(fut),
            watch: Arc::new(SendWatch::default()),
            timeout: self.send_timeout,
            timer: None,
        });
    }
}

/// An HTTP/2 stream's task that ends, dropping the stream (hyper resets it
/// with `RST_STREAM(CANCEL)`, and the response body, with any file it has
/// open, goes with it) once its body has waited `timeout` for the client to
/// take a frame. Completes with `None` then.
struct StreamSendTimeout<F: Future> {
    inner: Pin<Box<F>>,
    watch: Arc<SendWatch>,
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<F: Future> Future for StreamSendTimeout<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let watch = this.watch.clone();
        let inner = &mut this.inner;
        if let Poll::Ready(out) = STREAM_SEND.sync_scope(watch, || inner.as_mut().poll(cx)) {
            return Poll::Ready(Some(out));
        }
        let Some(since) = this.watch.owed_since() else {
            return Poll::Pending;
        };
        let deadline = since + this.timeout;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                tracing::debug!(
                    timeout = ?this.timeout,
                    "an HTTP/2 client took no response data for the send timeout; resetting the stream"
                );
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A socket whose writes fail once they have made no progress for `timeout`
/// (the peer stopped reading). Reads pass through untouched.
pub struct StallGuard<T> {
    io: T,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    armed: bool,
}

impl<T> StallGuard<T> {
    pub fn new(io: T, timeout: Duration) -> StallGuard<T> {
        StallGuard {
            io,
            timeout,
            timer: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
        }
    }

    /// Called when a write could not proceed: start (or check) the stall timer.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.armed {
            self.armed = true;
            let deadline = Instant::now() + self.timeout;
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading the response",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<R>(&mut self, r: R) -> Poll<R> {
        self.armed = false;
        Poll::Ready(r)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(r) => this.progressed(r),
            Poll::Pending => this.stalled(cx).map(|r| r.map(|()| 0)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => this.progressed(r),
            Poll::Pending => this.stalled(cx).map(|r| r.map(|()| 0)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Ready(r) => this.progressed(r),
            Poll::Pending => this.stalled(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_shutdown(cx) {
            Poll::Ready(r) => this.progressed(r),
            Poll::Pending => this.stalled(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize) -> HttpLimits {
        HttpLimits {
            max_connections: total,
            max_connections_per_ip: per_ip,
            ..HttpLimits::default()
        }
    }

    #[tokio::test]
    async fn caps_evict_the_idlest_connection_and_refuse_when_all_are_busy() {
        let t = ConnTable::default();
        let l = limits(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = t.admit(a, false, &l).unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let a2 = t.admit(a, false, &l).unwrap();
        // Per-IP cap: the idlest of a's connections (a1) makes room.
        let a3 = t.admit(a, false, &l).unwrap();
        assert!(a1.evicted.is_cancelled());
        assert!(!a2.evicted.is_cancelled());
        // Both of a's connections busy: a fourth from a is refused...
        a2.begin_request();
        a3.begin_request();
        assert_eq!(t.admit(a, false, &l).err(), Some(Refusal::PerIp));
        // ...unless the address is a trusted proxy.
        let p = t.admit(a, true, &l).unwrap();
        assert_eq!(t.len(), 3);
        // Total cap with p idle: b evicts p.
        let b1 = t.admit(b, false, &l).unwrap();
        assert!(p.evicted.is_cancelled());
        b1.begin_request();
        assert_eq!(t.admit(b, false, &l).err(), Some(Refusal::Full));
        // A request that ends makes its connection idle again, hence evictable.
        a2.end_request();
        assert!(t.admit(b, false, &l).is_ok());
        assert!(a2.evicted.is_cancelled());
    }

    #[tokio::test]
    async fn a_handler_that_panics_gives_its_connection_slot_back() {
        async fn boom() -> &'static str {
            panic!("a handler bug")
        }
        let router = Router::new().route("/", axum::routing::get(boom));
        let table = Arc::new(ConnTable::default());
        let ctx = ListenerContext {
            router,
            limits: HttpLimits::default(),
            trusted: Arc::new(TrustedProxies::default()),
            metrics: Arc::new(Metrics::new()),
            table: table.clone(),
            tls: None,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(run(listener, ctx, stop.clone().cancelled_owned()));
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        // The connection ends without an answer (its task unwound).
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !table.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(table.len(), 0, "the panicked connection still holds a slot");
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_is_timed_only_while_it_waits_for_the_client() {
        fn watched<F: Future>(fut: F) -> StreamSendTimeout<F> {
            StreamSendTimeout {
                inner: Box::pin(fut),
                watch: Arc::new(SendWatch::default()),
                timeout: Duration::from_secs(60),
                timer: None,
            }
        }
        // A frame handed over and never asked for again: dropped at 60 s.
        let start = Instant::now();
        let stalled = watched(async {
            body_polled(true);
            std::future::pending::<()>().await
        });
        assert_eq!(stalled.await, None);
        assert_eq!(start.elapsed().as_secs(), 60);
        // Asked for a frame the body does not have yet (slow storage): not
        // the client's doing, so never timed.
        let slow = watched(async {
            body_polled(true);
            tokio::time::sleep(Duration::from_secs(30)).await;
            body_polled(false);
            std::future::pending::<()>().await
        });
        assert!(
            tokio::time::timeout(Duration::from_secs(600), slow)
                .await
                .is_err()
        );
        // Frames taken in time: runs to its end.
        let steady = watched(async {
            for _ in 0..20 {
                body_polled(true);
                tokio::time::sleep(Duration::from_secs(50)).await;
                body_polled(false);
            }
            7
        });
        assert_eq!(steady.await, Some(7));
    }

    #[test]
    fn ipv6_clients_are_capped_per_64() {
        let t = ConnTable::default();
        let l = limits(100, 2);
        let a1 = t
            .admit("2001:db8:0:1::1".parse().unwrap(), false, &l)
            .unwrap();
        let a2 = t
            .admit("2001:db8:0:1::2".parse().unwrap(), false, &l)
            .unwrap();
        a1.begin_request();
        a2.begin_request();
        // A third address of the same /64 is the same client.
        let same: IpAddr = "2001:db8:0:1:ffff::3".parse().unwrap();
        assert_eq!(t.admit(same, false, &l).err(), Some(Refusal::PerIp));
        // Another /64 is another client.
        assert!(
            t.admit("2001:db8:0:2::1".parse().unwrap(), false, &l)
                .is_ok()
        );
    }

    #[test]
    fn connection_cap_fits_the_descriptor_limit() {
        assert_eq!(fit_connections(4096, 1024), 768);
        assert_eq!(fit_connections(4096, 1_048_576), 4096);
        assert_eq!(fit_connections(4096, 100), 36);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_expire_busy_ones_do_not() {
        let t = ConnTable::default();
        let c = t
            .admit("10.0.0.1".parse().unwrap(), false, &limits(9, 9))
            .unwrap();
        c.begin_request();
        let timeout = Duration::from_secs(30);
        let waited = tokio::time::timeout(Duration::from_secs(300), idle_expired(&c, timeout));
        let ended = async {
            tokio::time::sleep(Duration::from_secs(100)).await;
            c.end_request();
        };
        let start = Instant::now();
        let (r, ()) = tokio::join!(waited, ended);
        assert!(r.is_ok());
        // Idle from t=100s, so closed at t=130s, not at t=30s.
        assert_eq!(start.elapsed().as_secs(), 130);
    }
}
