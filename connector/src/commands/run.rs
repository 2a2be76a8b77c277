//! `lark-sink run`: the connector as a service. It starts the admin server (when
//! `admin.listener` is set), then runs the sink, restarting it in place when the admin API asks,
//! until the shutdown future resolves.
//!
//! The restart loop lives here rather than in [`crate::sink`] because a restart is an operator
//! action on the process: the sink runs once per call, and the statistics and the [`Control`]
//! handle outlive each run so `/status` and `/metrics` stay continuous across restarts.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::admin::AdminState;
use crate::config::{ConfigError, ConnectorConfig};
use crate::control::Control;
use crate::sink::{self, SinkError};
use crate::telemetry::SinkStats;

/// The command line of `lark-sink run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Connector config file: {"name": ..., "config": {...}} (see docs/configuration.md).
    #[arg(long, short)]
    pub config: PathBuf,
}

/// Why `run` stopped with an error (a clean stop is `Ok`).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The admin listener's address is taken or not allowed; nothing was consumed yet.
    #[error("admin.listener: cannot listen on {addr}")]
    Admin {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Events(#[from] crate::inbound::InboundError),
}

/// Loads the config and runs the connector until `shutdown` resolves.
pub async fn command(
    args: Args,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ExitCode, RunError> {
    let cfg = ConnectorConfig::from_file(&args.config)?;
    let control = Arc::new(Control::default());
    // Installed with or without the admin server: the recorder is what the counters feed.
    let metrics = crate::telemetry::install();
    if let Some(addr) = cfg.admin.listener {
        serve_admin(&cfg, addr, control.clone(), metrics).await?;
    }
    // One stop flag for every run of the loop: a restart must not swallow the signal.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        stop_tx.send_replace(true);
    });
    let stats = Arc::new(SinkStats::default());
    // The way back (`lark.events.*`): beside the sink for the process's life; it stopping on a
    // terminal error (wrong credentials, the connection limit) stops the connector too.
    let events_stop = tokio_util::sync::CancellationToken::new();
    let events_ended = tokio_util::sync::CancellationToken::new();
    let events = cfg.events.is_some().then(|| {
        let (cfg, stop, ended) = (cfg.clone(), events_stop.clone(), events_ended.clone());
        tokio::spawn(async move {
            let done = crate::inbound::run(&cfg, stop).await;
            ended.cancel();
            done
        })
    });
    let result = run_sink(&cfg, &stats, &control, &stop_rx, &events_ended).await;
    events_stop.cancel();
    if let Some(events) = events {
        if let Ok(Err(e)) = events.await {
            control.set_failed(e.to_string());
            return Err(e.into());
        }
    }
    result
}

/// The sink's loop, restarted in place when the admin API asks; it stops when the process is
/// asked to, or when the events pipeline ended (`events_ended`; [`command`] returns its error).
async fn run_sink(
    cfg: &ConnectorConfig,
    stats: &Arc<SinkStats>,
    control: &Arc<Control>,
    stop_rx: &tokio::sync::watch::Receiver<bool>,
    events_ended: &tokio_util::sync::CancellationToken,
) -> Result<ExitCode, RunError> {
    loop {
        let mut stop = stop_rx.clone();
        let ended = events_ended.clone();
        let shutdown = async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = ended.cancelled() => {}
            }
        };
        if let Err(e) = sink::run(cfg.clone(), stats.clone(), control.clone(), shutdown).await {
            control.set_failed(e.to_string());
            return Err(e.into());
        }
        if control.take_restart() && !*stop_rx.borrow() && !events_ended.is_cancelled() {
            tracing::info!("restarting the connector (admin API request)");
            continue;
        }
        tracing::info!("stopped cleanly");
        return Ok(ExitCode::SUCCESS);
    }
}

/// Binds the admin listener (failing start-up if it cannot) and serves it in the background.
async fn serve_admin(
    cfg: &ConnectorConfig,
    addr: SocketAddr,
    control: Arc<Control>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> Result<(), RunError> {
    let bind_error = |source| RunError::Admin { addr, source };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    tracing::info!("admin API listening on {local}");
    let state = AdminState {
        name: cfg.name.clone(),
        config: cfg.as_given.clone(),
        control,
        metrics,
        token: cfg.admin.token.clone(),
        worker_id: crate::admin::worker_id(local),
    };
    tokio::spawn(crate::admin::serve(listener, state));
    Ok(())
}
