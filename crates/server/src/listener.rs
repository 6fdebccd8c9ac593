//! Accepting connections with bounds hyper enforces before any handler runs: a
//! hard cap on header count and bytes (431, above the configured limits that the
//! edge enforces itself), time to send the request head (the connection is
//! closed), and connections per client address (a plain 429 and close). Shutdown
//! stops accepting and lets open connections finish their current request.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

/// What one connection may do before it reaches the router.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_headers: usize,
    /// Request line plus headers, in bytes (at least 8 KiB, hyper's floor).
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub max_connections_per_ip: usize,
    /// The operator's proxies: their connections carry many clients, so the
    /// per-address cap does not apply to them.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_headers: 100,
            max_header_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            max_connections_per_ip: 256,
            trusted_proxies: Vec::new(),
        }
    }
}

/// hyper's own head limits sit this many times above the configured ones. The
/// edge's admission layer enforces the configured limits with a full answer (JSON,
/// request id, security headers); hyper's bare 431 is only the hard stop that
/// bounds the memory a head may take before any of our code runs.
const HEAD_HEADROOM: usize = 4;

type Open = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One open connection of an address, counted until dropped.
struct Slot {
    open: Open,
    ip: IpAddr,
}

impl Slot {
    fn take(open: &Open, ip: IpAddr, most: usize) -> Option<Self> {
        let mut counts = open.lock().ok()?;
        let count = counts.entry(ip).or_insert(0);
        if *count >= most {
            return None;
        }
        *count += 1;
        Some(Self {
            open: open.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.open.lock()
            && let Some(count) = counts.get_mut(&self.ip)
        {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

const TOO_MANY_CONNECTIONS: &[u8] =
    b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
content-length: 83\r\nconnection: close\r\n\r\n\
{\"code\":\"too_many_connections\",\"message\":\"Too many open connections from this address.\"}";

async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(TOO_MANY_CONNECTIONS).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Resolves once a stop is asked for; a closed channel means the `Running`
/// handle is gone, which stops as well.
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Serves `app` on `listener` until `stopped` turns true, then waits for open
/// connections to finish (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut connections = tokio::task::JoinSet::new();
    let open: Open = Arc::default();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers.saturating_mul(HEAD_HEADROOM))
        .max_buf_size(
            limits
                .max_header_bytes
                .saturating_mul(HEAD_HEADROOM)
                .max(8192),
        );
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop_requested(&mut stopped) => break,
        };
        let slot = if gatehouse_http::is_trusted_proxy(peer.ip(), &limits.trusted_proxies) {
            None
        } else {
            match Slot::take(
                &open,
                peer.ip().to_canonical(),
                limits.max_connections_per_ip,
            ) {
                Some(slot) => Some(slot),
                None => {
                    tokio::spawn(refuse(stream));
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app
            .clone()
            .map_request(move |mut request: http::Request<Incoming>| {
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
                request
            });
        // With upgrades: a WebSocket (realtime) leaves the connection and
        // lives in its own task; the connection's end releases the slot.
        let connection = http
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
            .with_upgrades();
        let mut stopping = stopped.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stop_requested(&mut stopping) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(slot);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}
