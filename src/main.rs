//! The `portcullis` command: parses arguments, sets up logging and the runtime, and
//! hands over to the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use portcullis::config::{Config, LoadError, RouteTarget, WorkerModel};
use tracing_subscriber::EnvFilter;

/// jemalloc instead of glibc malloc: measured in benches/RESULTS.md.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// An async API gateway and reverse proxy.
#[derive(Parser)]
#[command(name = "portcullis", version, about)]
struct Cli {
    /// The configuration file.
    #[arg(
        short,
        long,
        global = true,
        default_value = "gateway.yaml",
        env = "PORTCULLIS_CONFIG"
    )]
    config: PathBuf,
    /// Log line format. Filter with RUST_LOG (e.g. `RUST_LOG=portcullis=debug`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Clone, Copy)]
enum Command {
    /// Serve the configuration (the default).
    Run,
    /// Validate the configuration: print a summary and exit 0, or every error and exit 2.
    Check,
    /// Start sample services on loopback and the gateway in front of them.
    Demo,
}

#[derive(ValueEnum, Clone, Copy)]
enum LogFormat {
    Pretty,
    Json,
}

/// Exit code for an invalid configuration.
const EXIT_INVALID_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let command = cli.command.unwrap_or(Command::Run);
    let text = match std::fs::read_to_string(&cli.config) {
        Ok(text) => text,
        Err(source) => {
            let file = cli.config.display().to_string();
            eprintln!("{}", LoadError::Read { file, source });
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let config = match Config::from_yaml(&text, &cli.config.display().to_string()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    if let Command::Check = command {
        print_summary(&cli.config, &config);
        return ExitCode::SUCCESS;
    }
    let hash = portcullis::reload::content_hash(&text);
    match serve(
        config,
        cli.config.clone(),
        hash,
        matches!(command, Command::Demo),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.compact().init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(config: Config, path: PathBuf, hash: String, demo: bool) -> anyhow::Result<()> {
    match portcullis::raise_open_files_limit() {
        Ok(limit) => tracing::debug!(limit, "open-files limit"),
        Err(error) => tracing::warn!("cannot raise the open-files limit: {error}"),
    }
    // A current-thread runtime, whose run queue is strictly FIFO (the multi-thread
    // scheduler's LIFO slot favours just-woken tasks, which showed as a several times
    // worse p99 at 1,000 connections on one core). With `worker_model: per_core` it is
    // worker 0 and the gateway starts the others (see `portcullis::workers`);
    // `work_stealing` runs tokio's multi-thread runtime instead.
    let runtime = match (config.worker_model, config.workers) {
        (WorkerModel::WorkStealing, workers) if workers > 1 => {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
        }
        _ => tokio::runtime::Builder::new_current_thread()
            .event_interval(portcullis::workers::EVENT_INTERVAL)
            .enable_all()
            .build(),
    }
    .context("cannot start the runtime")?;
    runtime.block_on(async move {
        let mut services = tokio::task::JoinSet::new();
        if demo {
            let addresses =
                portcullis::demo::start(&portcullis::demo::services(), &mut services).await?;
            tracing::info!(?addresses, "demo services listening");
        }
        // Take over SIGHUP before the listeners are up (and logged): a SIGHUP that came
        // before the handler would meet the default action, which ends the process.
        let hangup = hangup_signal();
        let gateway = portcullis::gateway::start_reloadable(config, path, hash).await?;
        if let (Some(reloader), Some(hangup)) = (gateway.reloader(), hangup) {
            reload_on_sighup(reloader.clone(), hangup);
        }
        if demo {
            print_demo_tour(&gateway);
        }
        shutdown_signal().await;
        gateway.shutdown().await;
        services.shutdown().await;
        Ok(())
    })
}

/// The stream of SIGHUPs; from now on SIGHUP no longer ends the process.
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup())
        .map_err(|error| tracing::warn!("cannot listen for SIGHUP: {error}"))
        .ok()
}

/// SIGHUP reloads the configuration file.
fn reload_on_sighup(
    reloader: std::sync::Arc<portcullis::reload::Reloader>,
    mut hangup: tokio::signal::unix::Signal,
) {
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the configuration");
            // The outcome is logged and counted by the reloader.
            let _ = reloader.reload(portcullis::reload::Trigger::Signal).await;
        }
    });
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::warn!("cannot listen for SIGTERM: {error}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
    }
}

fn print_demo_tour(gateway: &portcullis::RunningGateway) {
    let Some(public) = gateway.listener_addrs().first().map(|(_, a)| *a) else {
        return;
    };
    let admin = gateway.admin_addr().map_or_else(
        || "(no admin listener configured)".to_owned(),
        |a| format!("curl -s http://{a}/metrics | grep portcullis_"),
    );
    println!(
        "\nPortcullis demo is running. Try:\n\
         \n  curl -s http://{public}/api/users               # users, balanced over two instances\
         \n  curl -s http://{public}/api/users/2\
         \n  curl -s http://{public}/v2/users/3              # templated path rewrite\
         \n  curl -s 'http://{public}/api/orders?user=2'\
         \n  curl -s -X POST http://{public}/api/users -d '{{\"name\":\"Alan\"}}'\
         \n  curl -s -i http://{public}/api/slow              # upstream too slow: 504 after 1s\
         \n  curl -s -i http://{public}/api/fail              # upstream error passed through\
         \n  curl -s http://{public}/api/dashboard/3         # aggregation: three calls, one answer\
         \n  curl -sN http://{public}/api/dashboard/2/stream # ... streamed as NDJSON\
         \n  curl -s -i http://{public}/nowhere               # no route: 404\
         \n  {admin}\
         \n\nPress Ctrl-C to stop.\n"
    );
}

fn print_summary(path: &Path, config: &Config) {
    println!("{}: configuration is valid", path.display());
    println!(
        "\nworkers: {} ({})",
        config.workers,
        config.worker_model.as_str()
    );
    println!("\nlisteners:");
    for listener in &config.listeners {
        let mode = match (&listener.tls, listener.redirect_to_https) {
            (Some(tls), _) => format!(
                ", TLS 1.2/1.3 (ALPN h2, http/1.1), handshake_timeout {:?}{}",
                tls.handshake_timeout,
                if tls.client_auth.is_some() {
                    ", client certificates checked"
                } else {
                    ""
                }
            ),
            (None, Some(port)) => format!(", redirects to https on port {port}"),
            (None, None) => String::new(),
        };
        let mode = match &listener.client_ip.proxy_protocol {
            Some(proxy) => {
                let trusted: Vec<String> = listener
                    .client_ip
                    .trusted_proxies
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                format!(
                    ", PROXY protocol {} from {}{mode}",
                    proxy.mode.as_str(),
                    trusted.join(" ")
                )
            }
            None => mode,
        };
        println!(
            "  {:<12} {:<22} max_connections {}{mode}",
            listener.name, listener.address, listener.max_connections
        );
        for (is_default, certificate) in listener.tls.iter().flat_map(|t| {
            t.certificates
                .iter()
                .enumerate()
                .map(move |(i, c)| (i == t.default, c))
        }) {
            let expires = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(
                    u64::try_from(certificate.loaded.not_after).unwrap_or(0),
                );
            println!(
                "  {:<12} certificate {} for {}{}, expires {}",
                "",
                certificate.files.certificate.display(),
                certificate.host_labels().join(", "),
                if is_default && !certificate.hosts.is_empty() {
                    " (default)"
                } else {
                    ""
                },
                humantime::format_rfc3339_seconds(expires)
            );
        }
    }
    if let Some(admin) = &config.admin {
        println!(
            "  {:<12} {:<22} /metrics /healthz /ready",
            "(admin)", admin.address
        );
    }
    println!("\nupstreams:");
    for upstream in &config.upstreams {
        let endpoints: Vec<&str> = upstream
            .endpoints
            .iter()
            .map(|e| e.label.as_str())
            .collect();
        println!(
            "  {:<12} {}, max_in_flight {}, max_queue {}, timeout {:?}: {}",
            upstream.name,
            upstream.balance,
            upstream.max_in_flight,
            upstream.max_queue,
            upstream.timeout,
            endpoints.join(" ")
        );
    }
    if !config.rate_limit_stores.is_empty() {
        println!("\nrate-limit stores:");
        for store in &config.rate_limit_stores {
            // The URL's Display masks any password.
            println!(
                "  {:<12} {}, timeout {:?}, pool {}, on_error {}",
                store.name,
                store.redis.url,
                store.redis.timeout,
                store.redis.pool,
                store.on_error.as_str()
            );
        }
    }
    println!("\nroutes, in match order:");
    for (position, index) in
        portcullis::routing::match_order(&config.routes.iter().map(|r| &r.spec).collect::<Vec<_>>())
            .into_iter()
            .enumerate()
    {
        let route = &config.routes[index];
        println!(
            "  {:>3}. {:<16} {} -> {}",
            position + 1,
            route.name,
            portcullis::routing::describe(&route.spec),
            match &route.target {
                RouteTarget::Proxy { .. } => config.upstreams_of(route).join(""),
                RouteTarget::Aggregate(aggregate) => format!(
                    "aggregate of {} call(s) on {}",
                    aggregate.calls.len(),
                    config.upstreams_of(route).join(", ")
                ),
            }
        );
    }
}
