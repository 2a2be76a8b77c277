//! `lark-sink emulator`: the Lark Open Platform emulator served on its own, for users' own
//! pipeline tests (the same emulator `demo` and the end-to-end tests use).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::emulator::{Directory, Emulator, EmulatorConfig, Limits};

/// The command line of `lark-sink emulator`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 8089)]
    pub port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// JSON file with apps, users, chats and webhooks (default: the built-in demo directory).
    #[arg(long)]
    pub directory: Option<PathBuf>,
    /// Turn Lark's rate limits off (for throughput tests).
    #[arg(long)]
    pub no_limits: bool,
}

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorCommandError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing directory {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The listen address is taken or not allowed.
    #[error(transparent)]
    Listen(std::io::Error),
}

/// Serves the emulator until `shutdown` resolves.
pub async fn command(
    args: Args,
    shutdown: impl Future<Output = ()>,
) -> Result<ExitCode, EmulatorCommandError> {
    let mut cfg = EmulatorConfig::default();
    if let Some(path) = args.directory {
        let text = std::fs::read_to_string(&path).map_err(|source| EmulatorCommandError::Read {
            path: path.clone(),
            source,
        })?;
        cfg.directory = serde_json::from_str::<Directory>(&text)
            .map_err(|source| EmulatorCommandError::Parse { path, source })?;
    }
    if args.no_limits {
        cfg.limits = Limits {
            enabled: false,
            ..Limits::default()
        };
    }
    let handle = Emulator::start(cfg, SocketAddr::new(args.host, args.port))
        .await
        .map_err(EmulatorCommandError::Listen)?;
    println!("Lark emulator listening on {}", handle.base_url());
    println!(
        "  set \"lark.domain\": \"{}\" in a connector config to use it",
        handle.base_url()
    );
    shutdown.await;
    handle.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
