//! tansu 0.6.0's command line (`tansu broker`, `tansu user create`, ...), built against the
//! patched `tansu-storage` (see Cargo.toml). This is upstream's `src/bin/tansu.rs` (Apache-2.0,
//! Peter Morgan) without its dotenv loading and its friendlier client-error messages, which the
//! tests do not need.

use tansu_broker::{TracingFormat, otel};
use tansu_cli::{Cli, Result};
use tansu_sans_io::ErrorCode;
use tracing::{debug, error};

#[tokio::main]
async fn main() -> Result<ErrorCode> {
    let _guard = otel::init(TracingFormat::Text)?;
    Cli::main()
        .await
        .inspect(|code| match code {
            ErrorCode::None => debug!("{code}"),
            _ => error!("{code}"),
        })
        .inspect_err(|err| error!("{err}"))
}
