//! The connection loop: HTTP/1.1 with Title-Case header names, as Lark's gateway sends them.
//!
//! Why not `axum::serve`: hyper writes header names lower-case by default (`x-tt-logid`), while
//! real Lark answers `X-Tt-Logid` and `Content-Type` over HTTP/1.1, and the official Python SDK
//! (`lark-oapi`) looks headers up case-sensitively, so its `get_log_id()` read None. hyper's
//! http1 `title_case_headers(true)` is only reachable by serving connections ourselves. hyper and
//! hyper-util are the crates axum itself serves with, so nothing new is compiled. HTTP/2 is not
//! served (its header names are lower-case by definition); the TLS listener offers only
//! `http/1.1` in ALPN accordingly.

use std::net::SocketAddr;

use axum::serve::Listener;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

/// Serve `router` on every connection `listener` hands over until `stop` fires (or its sender is
/// dropped); then stop accepting, let open connections finish their in-flight request, and
/// return once all have closed.
pub(crate) async fn run<L>(mut listener: L, router: Router, mut stop: oneshot::Receiver<()>)
where
    L: Listener<Addr = SocketAddr>,
{
    // Tells every connection task to finish gracefully.
    let (draining_tx, draining_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    loop {
        let io = tokio::select! {
            _ = &mut stop => break,
            (io, _peer) = listener.accept() => io,
        };
        // Reap finished connections so the set does not grow with every client.
        while conns.try_join_next().is_some() {}
        let service = TowerToHyperService::new(router.clone());
        let mut draining = draining_rx.clone();
        conns.spawn(async move {
            let conn = http1::Builder::new()
                .title_case_headers(true)
                .serve_connection(TokioIo::new(io), service)
                // The long connection's WebSocket (src/events/longconn.rs) upgrades.
                .with_upgrades();
            tokio::pin!(conn);
            let served = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = draining.wait_for(|d| *d) => None,
            };
            let served = match served {
                Some(r) => r,
                None => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "emulator connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = draining_tx.send(true);
    while conns.join_next().await.is_some() {}
}
