//! The command line: `serve`, `migrate`, `createsuperuser`, `changepassword`, `import-django`.

use std::{
    io::{self, BufRead, IsTerminal, Write},
    net::SocketAddr,
    process::ExitCode,
};

use clap::{Parser, Subcommand};

use crate::{
    config::Config,
    domain::{text, username},
    import,
    service::{
        accounts::{self, RegistrationForm},
        FieldErrors, ServiceError,
    },
    startup::{shutdown_signal, Application},
    state::AppState,
    store::Db,
    telemetry,
};

#[derive(Parser)]
#[command(
    name = "mrm-chat",
    version,
    about = "A real-time multi-person chat server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations and serve HTTP until SIGINT or SIGTERM.
    Serve {
        /// Address to listen on (overrides MRM_BIND).
        #[arg(long)]
        bind: Option<SocketAddr>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create a staff superuser. Prompts for what is not given when a terminal is attached.
    Createsuperuser {
        #[arg(long)]
        username: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// Prefer the prompt: a password on the command line is visible to other local users.
        #[arg(long)]
        password: Option<String>,
    },
    /// Set a user's password. Prompts twice in a terminal; otherwise reads one line from stdin.
    /// Ends the user's sessions and revokes their bearer tokens; with REDIS_URL set, running
    /// servers close the sockets opened with them.
    Changepassword { username: String },
    /// Import a database of MRM Chat 2 (the Django original) into DATABASE_URL, keeping every
    /// id: users (with their password hashes), chats, messages and AI conversations. Stop the
    /// original first. Safe to run again: rows already imported are left alone.
    ImportDjango {
        /// The original's database: postgres://… or sqlite:PATH (opened read-only).
        #[arg(long)]
        from: String,
        /// Check the source and the target and say what would be imported; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// The model imported replies are recorded as written by (the original's OPENAI_MODEL).
        #[arg(long, default_value = "gpt-3.5-turbo")]
        model: String,
    },
}

/// Runs the command line: parses the arguments, tunes the process (open-file limit, allocator),
/// reads `.env` and the configuration, starts logging and runs the subcommand. A failure is one
/// `error: …` line on standard error and exit status 1.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::os::tune_process();
    // A missing .env is normal; a malformed one is worth stopping for.
    if let Err(err) = dotenvy::dotenv() {
        if !err.not_found() {
            eprintln!("error: .env: {err}");
            return ExitCode::FAILURE;
        }
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(config.log_format);
    let outcome = match cli.command {
        Command::Serve { bind } => serve(config, bind).await,
        Command::Migrate => migrate(config).await,
        Command::Createsuperuser {
            username,
            email,
            password,
        } => createsuperuser(config, username, email, password).await,
        Command::Changepassword { username } => changepassword(config, username).await,
        Command::ImportDjango {
            from,
            dry_run,
            model,
        } => {
            let options = import::Options {
                from,
                dry_run,
                reply_model: model,
            };
            import_django(config, options).await
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(mut config: Config, bind: Option<SocketAddr>) -> anyhow::Result<()> {
    if let Some(bind) = bind {
        config.bind = bind;
    }
    let app = Application::build(config).await?;
    app.run_until(shutdown_signal()).await
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let db = Db::connect(&config.database_url, 1).await?;
    db.migrate().await?;
    println!("migrations applied ({})", db.backend());
    db.close().await;
    Ok(())
}

/// A progress bar on standard error (drawn only on a terminal).
struct Bar(indicatif::ProgressBar);

impl import::Progress for Bar {
    fn start(&self, phase: &str, total: u64) {
        self.0.reset();
        self.0.set_length(total);
        self.0.set_message(phase.to_owned());
    }
    fn advance(&self, rows: u64) {
        self.0.inc(rows);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

async fn import_django(config: Config, options: import::Options) -> anyhow::Result<()> {
    let db = Db::connect(&config.database_url, 2).await?;
    db.migrate().await?;
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {human_pos}/{human_len} rows, {per_sec}, {eta} left",
        )?
        .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let outcome = import::import(&db, &options, &Bar(bar)).await;
    db.close().await;
    let summary = outcome?;
    println!("{summary}");
    println!("({:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}

async fn createsuperuser(
    config: Config,
    username: Option<String>,
    email: Option<String>,
    password: Option<String>,
) -> anyhow::Result<()> {
    let interactive = io::stdin().is_terminal();
    let username = match username {
        Some(u) => u,
        None if interactive => prompt("Username: ")?,
        None => anyhow::bail!("--username is required when no terminal is attached"),
    };
    let email = match email {
        Some(e) => e,
        None if interactive => prompt("Email address (optional): ")?,
        None => String::new(),
    };
    let (password, confirm) = match password {
        Some(p) => (p.clone(), p),
        None if interactive => (secret("Password: ")?, secret("Password (again): ")?),
        None => anyhow::bail!("--password is required when no terminal is attached"),
    };

    let db = Db::connect(&config.database_url, 2).await?;
    db.migrate().await?;
    let mut config = config;
    // Creating an account needs no fan-out.
    config.redis_url = None;
    let state = AppState::new(db.clone(), config).await?;
    let form = RegistrationForm {
        username: Some(username),
        email: Some(email),
        password: Some(password),
        password_confirm: Some(confirm),
        user_type: Some("staff".into()),
    };
    let outcome = accounts::register(&state, form, FieldErrors::new(), true, true).await;
    db.close().await;
    match outcome {
        Ok(user) => {
            println!("Superuser {:?} created (id {}).", user.username, user.id);
            Ok(())
        }
        Err(ServiceError::Validation(errors)) => anyhow::bail!("{}", errors),
        Err(err) => Err(err.into()),
    }
}

async fn changepassword(config: Config, username: String) -> anyhow::Result<()> {
    let db = Db::connect(&config.database_url, 2).await?;
    db.migrate().await?;
    // With REDIS_URL set, the running servers hear that the user's credentials ended and close
    // the sockets opened with them. A password reset must not wait on Redis, though: when it
    // does not answer, the password is still changed, and the sockets close as they reconnect.
    let state = match AppState::new(db.clone(), config.clone()).await {
        Ok(state) => state,
        Err(err) if config.redis_url.is_some() => {
            eprintln!(
                "warning: Redis does not answer ({err:#}); open sockets of this user stay open \
                 until they reconnect"
            );
            let config = Config {
                redis_url: None,
                ..config
            };
            AppState::new(db.clone(), config).await?
        }
        Err(err) => return Err(err),
    };
    let stored_form = vec![username::normalize(&username)];
    let found = crate::store::users::by_usernames(&db, &stored_form).await?;
    let Some(user) = found.into_iter().next() else {
        anyhow::bail!("no user named {username:?}");
    };
    let (password, confirm) = if io::stdin().is_terminal() {
        let first = secret(&format!("New password for {username}: "))?;
        let again = secret("New password (again): ")?;
        (first, again)
    } else {
        let line = read_line()?;
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        (line.clone(), line)
    };
    let outcome = accounts::change_password(&state, &user, password, &confirm, None).await;
    db.close().await;
    match outcome {
        Ok(changed) => {
            println!(
                "Password changed for {username:?}; {} session(s) ended, {} token(s) revoked.",
                changed.sessions_ended, changed.tokens_revoked
            );
            Ok(())
        }
        Err(ServiceError::Validation(errors)) => {
            anyhow::bail!("{}", errors.messages().collect::<Vec<_>>().join(" "))
        }
        Err(ServiceError::NotFound) => anyhow::bail!("no user named {username:?}"),
        Err(err) => Err(err.into()),
    }
}

/// Asks for one line in the terminal; the answer stripped as Django's form fields strip text.
fn prompt(label: &str) -> anyhow::Result<String> {
    print!("{label}");
    io::stdout().flush()?;
    Ok(text::strip(&read_line()?).to_owned())
}

/// A password typed in the terminal without echo; NUL refused as in [`read_line`].
fn secret(label: &str) -> anyhow::Result<String> {
    let password = rpassword::prompt_password(label)?;
    if text::has_nul(&password) {
        anyhow::bail!("{}", text::NUL_REFUSED);
    }
    Ok(password)
}

/// One line of standard input. Text holding NUL is refused here, as every surface refuses it
/// where it is read (arguments and the environment cannot hold NUL at all).
fn read_line() -> anyhow::Result<String> {
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    if text::has_nul(&line) {
        anyhow::bail!("{}", text::NUL_REFUSED);
    }
    Ok(line)
}
