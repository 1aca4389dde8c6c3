//! The command line: `serve` (the default), `check` and `healthcheck`.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

use crate::{check, settings::Settings, shutdown, startup::Application, telemetry, variables};

/// graph-mailer: send email as Microsoft 365 mailboxes through Microsoft Graph, over gRPC.
#[derive(Debug, Parser)]
#[command(name = "graph-mailer", version, after_help = variables::help_text())]
pub struct Cli {
    /// A TOML file with settings; GRAPH_MAILER_* environment variables override its values.
    #[arg(long, global = true, env = variables::CONFIG, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default): gRPC on GRAPH_MAILER_GRPC_ADDR, HTTP on GRAPH_MAILER_HTTP_ADDR.
    /// Stops gracefully on SIGTERM or SIGINT.
    Serve,
    /// Check the configuration and the Microsoft setup step by step, printing what to fix.
    /// Exits 0 only when every check passes.
    Check {
        /// Print the results as JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also send the set-up test mail ("graph-mailer test – <date>") to this address through
        /// the real transport.
        #[arg(long, value_name = "ADDRESS")]
        send_test: Option<String>,
        /// The mailbox to send the test mail as (default: the only connected mailbox).
        #[arg(long, value_name = "MAILBOX")]
        from: Option<String>,
    },
    /// Ask the running service's gRPC health check whether it is SERVING; exit 0 if so, 1 if not.
    /// For container health checks (images carry no grpc-health-probe).
    Healthcheck {
        /// The service's gRPC address; default: GRAPH_MAILER_HEALTH_ADDR (the plaintext health
        /// listener, on when TLS is), else GRAPH_MAILER_GRPC_ADDR, with 0.0.0.0 as 127.0.0.1.
        #[arg(long, value_name = "HOST:PORT")]
        addr: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Print a new caller key (once) and the callers-file entry that admits it. The service
    /// keeps only the key's SHA-256; hand the key to the caller and paste the entry into
    /// GRAPH_MAILER_CALLERS_FILE.
    NewKey {
        /// The caller's name: in logs, metrics and the audit log.
        #[arg(long)]
        name: String,
        /// `sender` (sends as its mailboxes) or `admin` (also Connect and Disconnect).
        #[arg(long, default_value = "sender")]
        role: String,
        /// A mailbox the caller may send as (`noreply@contoso.com` or `*@contoso.com`); repeat
        /// for several. Senders need at least one.
        #[arg(long = "mailbox", value_name = "MAILBOX")]
        mailboxes: Vec<String>,
    },
}

/// Runs the command line; the binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("graph-mailer: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let settings = Settings::load(cli.config.as_deref());
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let settings = match settings {
                Ok(settings) => settings,
                Err(errors) => {
                    eprintln!("graph-mailer cannot start; fix these settings:\n{errors}");
                    return ExitCode::from(2);
                }
            };
            let _flush_logs_at_exit = telemetry::init(settings.log_format);
            match serve(settings).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("graph-mailer stopped with an error: {error:#}");
                    eprintln!("graph-mailer: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check {
            json,
            send_test,
            from,
        } => {
            let options = check::Options {
                json,
                send_test,
                from,
                skip_token_refresh: false,
            };
            check::run(settings, options).await
        }
        Command::Healthcheck { addr, timeout } => {
            let addr = addr.unwrap_or_else(|| match &settings {
                Ok(settings) => local_address(settings.health_addr.unwrap_or(settings.grpc_addr)),
                Err(_) => "127.0.0.1:50051".to_owned(),
            });
            healthcheck(&addr, Duration::from_secs(timeout)).await
        }
        Command::NewKey {
            name,
            role,
            mailboxes,
        } => new_key(&name, &role, &mailboxes),
    }
}

/// `new-key`: checks the entry as the callers file would, then prints the key and the entry.
fn new_key(name: &str, role: &str, mailboxes: &[String]) -> ExitCode {
    let (key, entry) = crate::callers::key::new_key_text(name, role, mailboxes);
    if let Err(problem) = crate::callers::file::parse(&entry) {
        eprintln!("graph-mailer new-key: {problem}");
        return ExitCode::from(2);
    }
    println!(
        "Key for caller {name} (shown once; graph-mailer keeps only its SHA-256). Give it to the \
         caller, who sends it as the gRPC metadata \"authorization: Bearer <key>\":\n\n  {key}\n\n\
         Add this entry to the callers file ({}); the service picks it up within seconds:\n\n{entry}",
        variables::CALLERS_FILE
    );
    ExitCode::SUCCESS
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let application = Application::build(settings).await?;
    application.run_until_stopped(shutdown::signal()).await
}

/// A listen address as a local one to connect to.
fn local_address(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

async fn healthcheck(addr: &str, timeout: Duration) -> ExitCode {
    let check = async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
            .connect_timeout(timeout)
            .connect()
            .await?;
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let response = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: crate::proto::SERVICE_NAME.to_owned(),
            })
            .await?;
        anyhow::Ok(response.into_inner().status)
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(Ok(status))
            if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 =>
        {
            println!("SERVING");
            ExitCode::SUCCESS
        }
        Ok(Ok(status)) => {
            println!("NOT SERVING (status {status})");
            ExitCode::FAILURE
        }
        Ok(Err(error)) => {
            println!("unhealthy: {error:#}");
            ExitCode::FAILURE
        }
        Err(_) => {
            println!(
                "unhealthy: no answer from {addr} within {} s",
                timeout.as_secs()
            );
            ExitCode::FAILURE
        }
    }
}
