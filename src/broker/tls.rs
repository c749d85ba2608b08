//! MQTT over TLS (`mqtt.tls_listen`, usually port 8883). rumqttd 0.20 is built here without its
//! TLS features, so the box terminates TLS itself (rustls, the `[tls]` certificate) and hands the
//! decrypted stream to the plain device listener over loopback; the guard, authentication and
//! topic rights are the same for both. The plain listener stays for devices that cannot do TLS.
//!
//! Bounds: the handshake must finish within 5 s (as rumqttd's wait for CONNECT), at most
//! `mqtt.max_connections` TLS connections are open, and a failing accept backs off like HTTP's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Where the proxy reaches the plain listener: its own address, or loopback when it listens on
/// every interface.
fn inner_addr(plain: SocketAddr) -> SocketAddr {
    match plain.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), plain.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), plain.port())
        }
        _ => plain,
    }
}

/// Binds `listen` and serves MQTT over TLS in front of `plain`; returns the bound address.
pub async fn start(
    listen: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    plain: SocketAddr,
    max_connections: usize,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let inner = inner_addr(plain);
    let open = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let task = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(10);
        let errors = crate::ops::logging::Throttle::new(Duration::from_secs(1));
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => {
                    backoff = Duration::from_millis(10);
                    x
                }
                Err(e) => {
                    if let Some(suppressed) = errors.allow() {
                        tracing::error!(error = %e, suppressed, "mqtt tls: accept failed");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let Ok(permit) = open.clone().try_acquire_owned() else {
                drop(stream); // mqtt.max_connections reached
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _ = stream.set_nodelay(true);
                let mut tls =
                    match tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "mqtt tls: handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                let mut plain = match TcpStream::connect(inner).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "mqtt tls: device listener unreachable");
                        return;
                    }
                };
                let _ = plain.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    Ok((addr, task))
}
