//! The `lark-sink` command line: `run`, `check`, `send`, `demo`, `emulator`, `bench` and
//! `transform test`.
//!
//! This is the binary edge, so errors are `anyhow` here and typed everywhere below.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use lark_sink::admin::AdminState;
use lark_sink::config::ConnectorConfig;
use lark_sink::control::Control;
use lark_sink::emulator::{Directory, Emulator, EmulatorConfig, Limits};
use lark_sink::sink::{self, SinkStats};

/// mimalloc instead of glibc malloc: per message the engine allocates requests, JSON and task
/// state on two threads, and glibc's arena consolidation showed up in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "lark-sink",
    version,
    about = "Kafka → Lark/Feishu IM sink connector"
)]
struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the connector until SIGTERM/SIGINT.
    Run {
        /// Connector config file: {"name": ..., "config": {...}} (see docs/configuration.md).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Test a config before going live: broker, topics, dead-letter topic, app credentials, bot
    /// ability, scopes and webhooks, one line each with the fix for every failure. Delivers
    /// nothing. Exit 0 if nothing failed, 1 if a check failed, 2 if the config itself is invalid.
    Check {
        /// Connector config file (see docs/configuration.md).
        #[arg(long, short)]
        config: PathBuf,
        /// Time limit of each check, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        /// Do not write the probe record that proves the dead-letter topic is writable.
        #[arg(long)]
        no_write: bool,
        /// Checks not to run, comma-separated.
        #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(lark_sink::check::CHECK_IDS))]
        skip: Vec<String>,
    },
    /// Run the whole pipeline on an embedded broker and the Lark emulator, then print a summary.
    Demo,
    /// Send one message with a connector config's app or webhook (no Kafka involved); prints
    /// the message_id, or the classified error and exits 1.
    Send {
        /// Connector config file (its lark.* keys are used).
        #[arg(long, short)]
        config: PathBuf,
        /// user, open_id, union_id, user_id, email, chat, phone or webhook.
        #[arg(long, default_value = "user")]
        receive_type: String,
        /// The receiver (an open_id, chat_id, email, phone number or webhook name).
        #[arg(long)]
        receive_id: String,
        /// The Lark msg_type.
        #[arg(long, default_value = "text")]
        content_type: String,
        /// The content JSON; `@FILE` reads it from a file, `-` from stdin.
        #[arg(long)]
        content: String,
    },
    /// Measure the delivery engine (see docs/performance.md); needs a running broker.
    Bench {
        /// Bootstrap servers of the broker to produce to and consume from.
        #[arg(long, default_value = "127.0.0.1:19092")]
        broker: String,
        /// Scenarios to run, comma-separated: ceiling, hot, engine, latency, memory, and soak
        /// (not in the default set: fault-injected endurance run, docs/reliability.md).
        #[arg(long, default_value = "ceiling,hot,engine,latency,memory")]
        scenario: String,
        /// Smaller volumes and shorter runs.
        #[arg(long)]
        quick: bool,
        /// Record count for the soak (default 1 000 000; 100 000 with --quick).
        #[arg(long)]
        records: Option<usize>,
    },
    /// Serve the Lark Open Platform emulator for your own pipeline tests.
    Emulator {
        #[arg(long, default_value_t = 8089)]
        port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// JSON file with apps, users, chats and webhooks (default: the built-in demo directory).
        #[arg(long)]
        directory: Option<PathBuf>,
        /// Turn Lark's rate limits off (for throughput tests).
        #[arg(long)]
        no_limits: bool,
    },
    /// Work with the transform chain of a connector config.
    Transform {
        #[command(subcommand)]
        command: TransformCommand,
    },
}

#[derive(Subcommand)]
enum TransformCommand {
    /// Run the configured transforms over JSON-lines records and show the envelopes they produce,
    /// their validation, and every error. No Kafka or Lark needed. Exit code 1 if any record fails.
    Test {
        /// Connector config file whose `transforms*` keys define the chain.
        #[arg(long, short)]
        config: PathBuf,
        /// Records, one JSON value per line (default: stdin).
        #[arg(long, short)]
        input: Option<PathBuf>,
        /// Each line is {"value": ..., "topic", "partition", "offset", "key", "headers", "timestamp"}.
        #[arg(long)]
        with_meta: bool,
    },
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LARK_SINK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only on a terminal: log files and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on the first SIGTERM/SIGINT; a second signal exits at once (the uuid makes the
/// replay of whatever was in flight safe).
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutdown requested: finishing records in flight (signal again to exit now)");
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::warn!("second signal: exiting immediately");
        std::process::exit(130);
    });
}

/// `lark-sink run`: the admin server, then the sink, restarted in place when the admin API asks,
/// until a signal stops it.
async fn run(cfg: ConnectorConfig) -> anyhow::Result<()> {
    let control = Arc::new(Control::default());
    let metrics = lark_sink::telemetry::install();
    if let Some(addr) = cfg.admin.listener {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("admin.listener: cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        tracing::info!("admin API listening on {local}");
        let state = AdminState {
            name: cfg.name.clone(),
            config: cfg.as_given.clone(),
            control: control.clone(),
            metrics,
            token: cfg.admin.token.clone(),
            worker_id: lark_sink::admin::worker_id(local),
        };
        tokio::spawn(lark_sink::admin::serve(listener, state));
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        stop_tx.send_replace(true);
    });
    let stats = Arc::new(SinkStats::default());
    loop {
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = sink::run(cfg.clone(), stats.clone(), control.clone(), shutdown).await {
            control.set_failed(e.to_string());
            return Err(e.into());
        }
        if control.take_restart() && !*stop_rx.borrow() {
            tracing::info!("restarting the connector (admin API request)");
            continue;
        }
        tracing::info!("stopped cleanly");
        return Ok(());
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            init_logging(cli.log_format, "info,librdkafka=warn,rdkafka=warn");
            let cfg = ConnectorConfig::from_file(&config)?;
            run(cfg).await?;
        }
        Command::Transform {
            command:
                TransformCommand::Test {
                    config,
                    input,
                    with_meta,
                },
        } => {
            init_logging(cli.log_format, "info");
            let cfg = ConnectorConfig::from_file(&config)?;
            let options = lark_sink::transform_test::TestOptions { with_meta };
            let mut out = std::io::stdout().lock();
            let summary = match input {
                Some(path) => {
                    let file = std::fs::File::open(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let reader = std::io::BufReader::new(file);
                    lark_sink::transform_test::run(&cfg, reader, &options, &mut out)?
                }
                None => lark_sink::transform_test::run(
                    &cfg,
                    std::io::stdin().lock(),
                    &options,
                    &mut out,
                )?,
            };
            if !summary.success() {
                std::process::exit(1);
            }
        }
        Command::Check {
            config,
            timeout_ms,
            no_write,
            skip,
        } => {
            // librdkafka's reasons are captured and reported per check, not logged.
            init_logging(cli.log_format, "error,librdkafka=off,rdkafka=off");
            // The config is loaded as `run` loads it, so its errors read the same; exit code 2
            // tells them apart from a failed check.
            let cfg = match ConnectorConfig::from_file(&config) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("Error: {e}");
                    std::process::exit(2);
                }
            };
            println!(
                "lark-sink check: connector '{}' ({})",
                cfg.name,
                config.display()
            );
            let opts = lark_sink::check::CheckOptions {
                timeout: std::time::Duration::from_millis(timeout_ms.max(1)),
                write_probe: !no_write,
                skip,
            };
            let report = lark_sink::check::run(&cfg, &opts, |f| println!("{f}")).await;
            println!("{}", report.summary());
            if !report.passed() {
                std::process::exit(1);
            }
        }
        Command::Demo => {
            init_logging(cli.log_format, "error");
            lark_sink::demo::run(true).await?;
        }
        Command::Send {
            config,
            receive_type,
            receive_id,
            content_type,
            content,
        } => {
            init_logging(cli.log_format, "warn,librdkafka=warn,rdkafka=warn");
            let cfg = ConnectorConfig::from_file(&config)?;
            let content = match content.as_str() {
                "-" => std::io::read_to_string(std::io::stdin()).context("reading stdin")?,
                c => match c.strip_prefix('@') {
                    Some(path) => {
                        std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?
                    }
                    None => c.to_string(),
                },
            };
            let args = lark_sink::send_command::SendArgs {
                receive_type,
                receive_id,
                content_type,
                content,
            };
            let ok = lark_sink::send_command::send(&cfg, &args).await?;
            if ok.message_id.is_empty() {
                println!("sent ({})", ok.chat_id); // webhooks return no message_id
            } else {
                println!("{}", ok.message_id);
            }
        }
        Command::Bench {
            broker,
            scenario,
            quick,
            records,
        } => {
            init_logging(cli.log_format, "warn,librdkafka=error,rdkafka=error");
            let opts = lark_sink::bench::BenchOptions {
                broker,
                scenarios: scenario.split(',').map(|s| s.trim().to_string()).collect(),
                quick,
                records,
            };
            lark_sink::bench::run(&opts).await?;
        }
        Command::Emulator {
            port,
            host,
            directory,
            no_limits,
        } => {
            init_logging(cli.log_format, "info");
            let mut cfg = EmulatorConfig::default();
            if let Some(path) = directory {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                cfg.directory = serde_json::from_str::<Directory>(&text)
                    .with_context(|| format!("parsing directory {}", path.display()))?;
            }
            if no_limits {
                cfg.limits = Limits {
                    enabled: false,
                    ..Limits::default()
                };
            }
            let handle = Emulator::start(cfg, SocketAddr::new(host, port)).await?;
            println!("Lark emulator listening on {}", handle.base_url());
            println!(
                "  set \"lark.domain\": \"{}\" in a connector config to use it",
                handle.base_url()
            );
            shutdown_signal().await;
            handle.shutdown().await;
        }
    }
    Ok(())
}
