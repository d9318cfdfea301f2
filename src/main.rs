use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    mrm_chat::cli::main().await
}
