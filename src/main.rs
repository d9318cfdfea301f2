//! The `mrm-chat` binary. Everything lives in the library crate; this only hands over to
//! `mrm_chat::cli::main`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    mrm_chat::cli::main().await
}
