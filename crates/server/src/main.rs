use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use gatehouse_db::MigrateOptions;
use gatehouse_keys::{ApiRole, SigningAlgorithm};
use gatehouse_server::commands::{audit, init, jobs, keys, migrate, policy_test, serve};
use gatehouse_server::config::{Config, Overrides};

// mimalloc: a request allocates and frees many small objects across threads, where
// glibc's allocator spent about a fifth of a point read's time (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gatehouse: the whole backend of a web app in one binary, secure by default.
#[derive(Parser)]
#[command(name = "gatehouse", version)]
struct Cli {
    /// The configuration file (default: ./gatehouse.toml when present; or GATEHOUSE_CONFIG).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Production mode: refuse to start without strong operator-supplied secrets.
    #[arg(long, global = true)]
    production: bool,
    /// The data folder (default: ./gatehouse-data; or GATEHOUSE_DATA_DIR).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on (default 127.0.0.1:54321; or GATEHOUSE_LISTEN).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Bring the database to the schema declared in gatehouse.toml.
    Migrate {
        /// Print the plan and its SQL without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Allow steps that lose data (dropping tables or columns, narrowing types).
        #[arg(long)]
        allow_destructive: bool,
    },
    /// Write a commented starter gatehouse.toml.
    Init {
        #[arg(long, default_value = "gatehouse.toml")]
        path: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Check row policies against a fixture of users, rows and expectations.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Manage signing keys and API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Inspect and operate the background job queue.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Print the security audit log, newest first, one JSON object per line.
    Audit {
        /// Only this action (sign_in, sign_out, password_change, admin_user_deleted, ...).
        #[arg(long)]
        action: Option<String>,
        /// Only this actor (a user id, `service` or `cli`).
        #[arg(long)]
        actor: Option<String>,
        /// Only entries older than this id (paging).
        #[arg(long)]
        before: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run a fixture on a throwaway database; exits non-zero when an expectation fails.
    Test { file: PathBuf },
}

#[derive(Clone, Copy, ValueEnum)]
enum Algorithm {
    Es256,
    Eddsa,
}

#[derive(Clone, Copy, ValueEnum)]
enum ApiKeyKind {
    Publishable,
    Secret,
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Jobs newest first, one JSON object per line.
    List {
        /// Only this state: waiting, running, done, dead or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// One job, with its payload and last error.
    Show { id: String },
    /// Run a dead, cancelled or waiting job again now, with its attempts renewed.
    Retry { id: String },
    /// Stop a waiting or running job from running (again).
    Cancel { id: String },
    /// Remove finished jobs.
    Purge {
        /// done, dead or cancelled.
        #[arg(long, default_value = "done")]
        state: String,
        /// Only those finished longer ago than this.
        #[arg(long, default_value_t = 24)]
        older_than_hours: u32,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a new signing key set, or with --api-key a new API key, in a file.
    Generate {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "es256")]
        alg: Algorithm,
        #[arg(long, value_enum)]
        api_key: Option<ApiKeyKind>,
    },
    /// List the signing keys (public facts only).
    List {
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Add a new current signing key; older keys keep verifying.
    Rotate {
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "es256")]
        alg: Algorithm,
    },
    /// Remove a signing key that is no longer current.
    Retire {
        /// Key ids are base64url and may start with `-`.
        #[arg(allow_hyphen_values = true)]
        kid: String,
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

fn algorithm(alg: Algorithm) -> SigningAlgorithm {
    match alg {
        Algorithm::Es256 => SigningAlgorithm::Es256,
        Algorithm::Eddsa => SigningAlgorithm::EdDsa,
    }
}

/// Key changes go into the audit log of the database the configuration names.
fn audit_key_change(overrides: &Overrides, action: &'static str, kid: &str) -> anyhow::Result<()> {
    let env = |name: &str| std::env::var(name).ok();
    let config = Config::load(overrides, &env)?;
    let event =
        gatehouse_auth::audit::Event::new(action, "success").with(serde_json::json!({"kid": kid}));
    tokio::runtime::Runtime::new()?.block_on(audit::record(&config, event));
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut overrides = Overrides {
        config_file: cli.config,
        production: cli.production,
        listen: None,
        data_dir: cli.data_dir,
    };
    let env = |name: &str| std::env::var(name).ok();
    match cli.command {
        Command::Serve { listen } => {
            overrides.listen = listen;
            let config = Config::load(&overrides, &env)?;
            gatehouse_server::logging::init();
            tokio::runtime::Runtime::new()?.block_on(serve::run(config))
        }
        Command::Migrate {
            dry_run,
            allow_destructive,
        } => {
            let config = Config::load(&overrides, &env)?;
            let options = MigrateOptions {
                dry_run,
                allow_destructive,
            };
            tokio::runtime::Runtime::new()?.block_on(migrate::run(config, options))
        }
        Command::Init { path, force } => init::run(&path, force),
        Command::Policy(PolicyCommand::Test { file }) => {
            tokio::runtime::Runtime::new()?.block_on(policy_test::run(&file, &overrides))
        }
        Command::Keys(command) => {
            let data_dir = || Config::load(&overrides, &env).map(|config| config.data_dir);
            match command {
                KeysCommand::Generate {
                    out,
                    api_key: Some(kind),
                    ..
                } => keys::generate_api(
                    &out,
                    match kind {
                        ApiKeyKind::Publishable => ApiRole::Anon,
                        ApiKeyKind::Secret => ApiRole::Service,
                    },
                ),
                KeysCommand::Generate {
                    out,
                    alg,
                    api_key: None,
                } => keys::generate_signing(&out, algorithm(alg)),
                KeysCommand::List { file } => keys::list(&keys::key_set_path(file, &data_dir()?)),
                KeysCommand::Rotate { file, alg } => {
                    let kid =
                        keys::rotate(&keys::key_set_path(file, &data_dir()?), algorithm(alg))?;
                    audit_key_change(&overrides, "signing_key_rotated", &kid)
                }
                KeysCommand::Retire { kid, file } => {
                    keys::retire(&keys::key_set_path(file, &data_dir()?), &kid)?;
                    audit_key_change(&overrides, "signing_key_retired", &kid)
                }
            }
        }
        Command::Jobs(command) => {
            let config = Config::load(&overrides, &env)?;
            let action = match command {
                JobsCommand::List {
                    state,
                    queue,
                    limit,
                } => jobs::Action::List {
                    state,
                    queue,
                    limit: limit.clamp(1, 10_000),
                },
                JobsCommand::Show { id } => jobs::Action::Show(id),
                JobsCommand::Retry { id } => jobs::Action::Retry(id),
                JobsCommand::Cancel { id } => jobs::Action::Cancel(id),
                JobsCommand::Purge {
                    state,
                    older_than_hours,
                } => jobs::Action::Purge {
                    state,
                    older_than_hours,
                },
            };
            tokio::runtime::Runtime::new()?.block_on(jobs::run(config, action))
        }
        Command::Audit {
            action,
            actor,
            before,
            limit,
        } => {
            let config = Config::load(&overrides, &env)?;
            let query = gatehouse_auth::audit::Query {
                action,
                actor,
                before,
                limit: limit.clamp(1, gatehouse_auth::audit::MAX_PAGE),
            };
            tokio::runtime::Runtime::new()?.block_on(audit::show(config, query))
        }
    }
}
