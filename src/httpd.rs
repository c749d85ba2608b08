//! The HTTP listener both roles run on, the store's web server and HQ, with the bounds an
//! outsider cannot push past (DESIGN §9): `axum::serve` has no header-read or idle timeout and no
//! connection cap, so 300 idle or half-sent connections stayed open forever and could exhaust the
//! process's descriptors. Here every connection gets
//!
//! - a header-read timeout (`header_timeout_secs` in `[http]` or `[hq_server]`), which is also
//!   how long a kept-alive connection may wait for its next request (hyper restarts it for every
//!   request head);
//! - an idle timeout (`idle_timeout_secs`): no byte read or written for that long closes it,
//!   which catches a request body sent a byte a minute;
//! - a cap per client address (`max_connections_per_client`) and in all (`max_connections`):
//!   connections beyond are closed right after accept and passed to the caller's `on_refused`
//!   (the store counts them in `storebox_http_connections_refused_total{kind}`);
//!
//! and a failing `accept` (descriptor limit) backs off from 10 ms to 1 s instead of spinning, with
//! its log line rate limited.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

/// What the caller does with a connection refused at a cap (`"total"` or `"per_client"`).
pub type OnRefused = Arc<dyn Fn(&'static str) + Send + Sync>;

/// An [`OnRefused`] that logs a warning naming the cap, at most once a second (with how many
/// were left out), for a role that keeps no metrics of its own.
pub fn log_refused(role: &'static str) -> OnRefused {
    let throttle = crate::ops::logging::Throttle::new(Duration::from_secs(1));
    Arc::new(move |kind| {
        if let Some(suppressed) = throttle.allow() {
            tracing::warn!(
                role,
                cap = kind,
                suppressed,
                "http: connection refused at its cap"
            );
        }
    })
}

/// The bounds, from `[http]` (store) or `[hq_server]` (HQ).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub per_client: usize,
    pub total: usize,
}

impl Limits {
    pub fn new(
        header_timeout_secs: u64,
        idle_timeout_secs: u64,
        per_client: usize,
        total: usize,
    ) -> Self {
        Limits {
            header_timeout: Duration::from_secs(header_timeout_secs),
            idle_timeout: Duration::from_secs(idle_timeout_secs),
            per_client,
            total,
        }
    }
}

/// Open connections per client address.
#[derive(Default)]
struct Open {
    by_ip: HashMap<IpAddr, usize>,
    total: usize,
}

/// Holds one connection's place in [`Open`]; gives it back when dropped.
struct Slot {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        open.total -= 1;
        if let Some(n) = open.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_ip.remove(&self.ip);
            }
        }
    }
}

/// Takes a place for a connection from `ip`, or says which cap is reached.
fn admit(open: &Arc<Mutex<Open>>, ip: IpAddr, limits: &Limits) -> Result<Slot, &'static str> {
    let mut o = open.lock();
    if o.total >= limits.total {
        return Err("total");
    }
    let n = o.by_ip.entry(ip).or_insert(0);
    if *n >= limits.per_client {
        return Err("per_client");
    }
    *n += 1;
    o.total += 1;
    Ok(Slot {
        open: open.clone(),
        ip,
    })
}

/// A socket (plain or TLS) that remembers when a byte last went through it.
struct Watched<S> {
    inner: S,
    last: Arc<AtomicU64>,
    epoch: Instant,
}

impl<S> Watched<S> {
    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Resolves once the connection saw no byte for `idle`.
async fn idle_for(last: Arc<AtomicU64>, epoch: Instant, idle: Duration) {
    loop {
        let quiet_ms =
            (epoch.elapsed().as_millis() as u64).saturating_sub(last.load(Ordering::Relaxed));
        let quiet = Duration::from_millis(quiet_ms);
        if quiet >= idle {
            return;
        }
        tokio::time::sleep(idle - quiet).await;
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then lets open requests finish (the
/// caller bounds how long it waits).
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    on_refused: OnRefused,
    shutdown: impl Future<Output = ()>,
) {
    let open: Arc<Mutex<Open>> = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut backoff = Duration::from_millis(10);
    let accept_errors = crate::ops::logging::Throttle::new(Duration::from_secs(1));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => {
                    backoff = Duration::from_millis(10);
                    x
                }
                Err(e) => {
                    // EMFILE/ENFILE/ENOMEM: the connection stays in the backlog; retrying at once
                    // would spin. Wait for descriptors to come back.
                    if let Some(suppressed) = accept_errors.allow() {
                        tracing::error!(error = %e, suppressed, retry_ms = backoff.as_millis() as u64, "http: accept failed");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        // Finished connection tasks.
        while tasks.try_join_next().is_some() {}
        let slot = match admit(&open, peer.ip(), &limits) {
            Ok(s) => s,
            Err(kind) => {
                on_refused(kind);
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut stop = stop_rx.clone();
        let tls = tls.clone();
        tasks.spawn(async move {
            let _slot = slot;
            match tls {
                None => serve_one(stream, peer, app, limits, &mut stop).await,
                // The handshake is bounded like a request head.
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls)) => serve_one(tls, peer, app, limits, &mut stop).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "https: handshake failed"),
                        Err(_) => tracing::debug!(%peer, "https: handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
}

async fn serve_one<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let epoch = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let io = Watched {
        inner: stream,
        last: last.clone(),
        epoch,
    };
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                use tower::ServiceExt;
                app.oneshot(req.map(axum::body::Body::new)).await
            }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = idle_for(last, epoch, limits.idle_timeout);
    tokio::pin!(idle);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "http: connection ended");
                }
                return;
            }
            _ = &mut idle => {
                tracing::debug!(%peer, "http: connection idle too long; closed");
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_client_and_in_all() {
        let open: Arc<Mutex<Open>> = Arc::default();
        let limits = Limits {
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            per_client: 2,
            total: 3,
        };
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = admit(&open, a, &limits).unwrap();
        let _a2 = admit(&open, a, &limits).unwrap();
        assert_eq!(admit(&open, a, &limits).err(), Some("per_client"));
        let _b1 = admit(&open, b, &limits).unwrap();
        assert_eq!(admit(&open, b, &limits).err(), Some("total"));
        drop(a1);
        assert!(
            admit(&open, a, &limits).is_ok(),
            "a closed slot is given back"
        );
        drop(_a2);
        assert_eq!(
            open.lock().by_ip.get(&a),
            None,
            "no entry kept for a gone client"
        );
        assert_eq!(open.lock().total, 1);
    }
}
