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
    /// A Unix socket path on which the running gateway hands its listening sockets to
    /// the binary that replaces it (`--upgrade`); also stops a second gateway started
    /// by mistake with the same path.
    #[arg(long, global = true, env = "PORTCULLIS_UPGRADE_SOCKET")]
    upgrade_socket: Option<PathBuf>,
    /// Take over from the gateway serving `--upgrade-socket`: serve on its listening
    /// sockets, then let it drain. Without one there, start afresh.
    #[arg(long, global = true)]
    upgrade: bool,
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
        // `run` raises its soft limit to the hard one: that is the limit that applies.
        let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(u64::MAX, |(_, hard)| hard);
        let budget = portcullis::config::descriptors::DescriptorBudget::of(&config);
        if let Some(warning) = budget.exceeds(limit) {
            eprintln!("warning: {}: {warning}", cli.config.display());
        }
        print_summary(&cli.config, &config);
        return ExitCode::SUCCESS;
    }
    let hash = portcullis::reload::content_hash(&text);
    let upgrade = Upgrade {
        socket: cli.upgrade_socket.clone(),
        take_over: cli.upgrade,
    };
    match serve(
        config,
        cli.config.clone(),
        hash,
        matches!(command, Command::Demo),
        upgrade,
    ) {
        Ok(()) => ExitCode::SUCCESS,
        // Printed once, as `error:`, not also as a log line: whatever reads stderr
        // (a terminal, journald, a container log) gets one line for one failure.
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines go to stderr. Colours only when stderr is a terminal (and `NO_COLOR` is not
/// set): a file, a pipe or journald gets plain text, not escape codes.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.compact().init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The binary-upgrade options of `run`.
struct Upgrade {
    socket: Option<PathBuf>,
    take_over: bool,
}

/// The sockets of the gateway this one replaces, and the handover to finish once this
/// one serves (none when it starts afresh).
fn take_over(
    upgrade: &Upgrade,
) -> anyhow::Result<(
    portcullis::upgrade::Inherited,
    Option<portcullis::upgrade::Handover>,
)> {
    use portcullis::upgrade::{probe, receive, Inherited, Probe};
    let Some(path) = &upgrade.socket else {
        anyhow::ensure!(
            !upgrade.take_over,
            "--upgrade needs --upgrade-socket: the socket of the gateway to replace"
        );
        return Ok((Inherited::none(), None));
    };
    match (probe(path), upgrade.take_over) {
        (Probe::Nobody, take_over) => {
            if take_over {
                tracing::info!(socket = %path.display(), "no gateway serves the upgrade socket: starting afresh");
            }
            Ok((Inherited::none(), None))
        }
        (Probe::Serving { pid }, false) => anyhow::bail!(
            "another gateway (pid {pid}) serves upgrade socket {}; to replace it, start this one with --upgrade",
            path.display()
        ),
        (Probe::Serving { .. }, true) => {
            let (inherited, handover) = receive(path)?;
            tracing::info!(old_pid = handover.old_pid, sockets = inherited.len(), "binary upgrade: received the listening sockets");
            Ok((inherited, Some(handover)))
        }
    }
}

fn serve(
    config: Config,
    path: PathBuf,
    hash: String,
    demo: bool,
    upgrade: Upgrade,
) -> anyhow::Result<()> {
    let (inherited, handover) = take_over(&upgrade)?;
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
        let user1 = user1_signal();
        let gateway = portcullis::gateway::start_replacing(config, path, hash, inherited).await?;
        if let Some(user1) = user1 {
            reopen_on_sigusr1(gateway.access_log_reopener(), user1);
        }
        if let (Some(reloader), Some(hangup)) = (gateway.reloader(), hangup) {
            reload_on_sighup(reloader.clone(), hangup);
        }
        if demo {
            print_demo_tour(&gateway);
        }
        if let Some(handover) = handover {
            let old_pid = handover.old_pid;
            tokio::task::spawn_blocking(move || handover.complete()).await??;
            tracing::info!(old_pid, "binary upgrade: serving; the old process drains");
        }
        let (handed_over_tx, handed_over) = tokio::sync::oneshot::channel();
        if let Some(socket) = &upgrade.socket {
            portcullis::upgrade::serve(socket, gateway.offerer(), move || {
                let _ = handed_over_tx.send(());
            })?;
        }
        tokio::select! {
            () = shutdown_signal() => {}
            Ok(()) = handed_over => {}
        }
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

/// The stream of SIGUSR1s; from now on SIGUSR1 no longer ends the process.
fn user1_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::user_defined1())
        .map_err(|error| tracing::warn!("cannot listen for SIGUSR1: {error}"))
        .ok()
}

/// SIGUSR1 reopens the access-log files (logrotate's convention).
fn reopen_on_sigusr1(
    reopener: portcullis::gateway::AccessLogReopener,
    mut user1: tokio::signal::unix::Signal,
) {
    tokio::spawn(async move {
        while user1.recv().await.is_some() {
            tracing::info!("SIGUSR1 received: reopening the access logs");
            reopener.reopen();
        }
    });
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
         \n  curl -s -i http://{public}/api/quota             # rate limited: the 4th in a minute gets 429\
         \n  curl -s http://{public}/api/dashboard/3         # aggregation: three calls, one answer\
         \n  curl -sN http://{public}/api/dashboard/2/stream # ... streamed as NDJSON\
         \n  curl -s -i http://{public}/nowhere               # no route: 404\
         \n  {admin}\
         \n\nPress Ctrl-C to stop.\n"
    );
}

/// Durations in the file's own notation (`5s`, `1m 30s`), not `Debug`'s (`5s`, `90s`).
fn human(duration: std::time::Duration) -> String {
    portcullis::config::units::HumanDuration(duration).to_string()
}

fn print_summary(path: &Path, config: &Config) {
    println!("{}: configuration is valid", path.display());
    println!(
        "\nworkers: {} ({})",
        config.workers,
        config.worker_model.as_str()
    );
    // One name column for listeners and upstreams, wide enough for the longest name.
    let width = config
        .listeners
        .iter()
        .map(|l| l.name.len())
        .chain(config.upstreams.iter().map(|u| u.name.len()))
        .chain(std::iter::once("(admin)".len()))
        .max()
        .unwrap_or(0)
        .max(12);
    let address_width = config
        .listeners
        .iter()
        .map(|l| l.address.to_string().len())
        .chain(config.admin.iter().map(|a| a.address.to_string().len()))
        .max()
        .unwrap_or(0)
        .max(22);
    println!("\nlisteners:");
    for listener in &config.listeners {
        let mode = match (&listener.tls, listener.redirect_to_https) {
            (Some(tls), _) => format!(
                ", TLS 1.2/1.3 (ALPN h2, http/1.1), handshake_timeout {}{}",
                human(tls.handshake_timeout),
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
            "  {:<width$} {:<address_width$} max_connections {}{mode}",
            listener.name,
            listener.address.to_string(),
            listener.max_connections
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
                "  {:<width$} certificate {} for {}{}, expires {}",
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
            "  {:<width$} {:<address_width$} / /status /metrics /healthz /ready /config /reload",
            "(admin)",
            admin.address.to_string()
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
            "  {:<width$} {}, max_in_flight {}, max_queue {}, timeout {}: {}",
            upstream.name,
            upstream.balance,
            upstream.max_in_flight,
            upstream.max_queue,
            human(upstream.timeout),
            endpoints.join(" ")
        );
        for detail in upstream_details(upstream) {
            println!("  {:<width$}   {detail}", "");
        }
    }
    if !config.rate_limit_stores.is_empty() {
        println!("\nrate-limit stores:");
        for store in &config.rate_limit_stores {
            // The URL's Display masks any password.
            println!(
                "  {:<width$} {}, timeout {}, pool {}, on_error {}",
                store.name,
                store.redis.url,
                human(store.redis.timeout),
                store.redis.pool,
                store.on_error.as_str()
            );
        }
    }
    if let Some(tracing) = &config.tracing {
        println!(
            "\ntracing: OTLP/HTTP to {} (timeout {}), sample {}, service {}, trust_incoming {}, queue {}, batch {}, export_interval {}",
            tracing.endpoint,
            human(tracing.timeout),
            tracing.sample,
            tracing.service_name,
            tracing.trust_incoming.as_str(),
            tracing.queue,
            tracing.batch,
            human(tracing.export_interval)
        );
    }
    if !config.policies.is_empty() {
        let policy_width = config
            .policies
            .iter()
            .map(|p| p.name.len())
            .max()
            .unwrap_or(0)
            .max(12);
        println!("\npolicies:");
        for policy in &config.policies {
            let details = policy_details(policy);
            let mut lines = details.iter();
            println!(
                "  {:<policy_width$} {}",
                policy.name,
                lines.next().map_or("(does nothing)", String::as_str)
            );
            for line in lines {
                println!("  {:<policy_width$} {line}", "");
            }
        }
    }
    let route_width = config
        .routes
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0)
        .max(16);
    println!("\nroutes, in match order:");
    for (position, index) in
        portcullis::routing::match_order(&config.routes.iter().map(|r| &r.spec).collect::<Vec<_>>())
            .into_iter()
            .enumerate()
    {
        let route = &config.routes[index];
        let mut details: String = route_details(route)
            .iter()
            .map(|d| format!("; {d}"))
            .collect();
        if !route.policies.is_empty() {
            let names: Vec<&str> = route
                .policies
                .iter()
                .map(|&i| config.policies[i].name.as_str())
                .collect();
            details.push_str(&format!("; policies {}", names.join(", ")));
        }
        println!(
            "  {:>3}. {:<route_width$} {} -> {}{details}",
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

/// What a policy does, a line per part.
fn policy_details(policy: &portcullis::config::PolicyConfig) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(ip) = &policy.ip {
        let list = |nets: &[ipnet::IpNet]| {
            nets.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut parts = Vec::new();
        if !ip.allow.is_empty() {
            parts.push(format!("allow {}", list(&ip.allow)));
        }
        if !ip.deny.is_empty() {
            parts.push(format!("deny {}", list(&ip.deny)));
        }
        lines.push(format!("ip: {}", parts.join(", ")));
    }
    if let Some(auth) = &policy.auth {
        lines.push(format!("auth: {}", auth.kind()));
    }
    if let Some(cors) = &policy.cors {
        let origins = match &cors.origins {
            portcullis::config::cors::Origins::Any => "any origin".to_owned(),
            portcullis::config::cors::Origins::List(list) => {
                format!("{} origin(s)", list.len())
            }
        };
        lines.push(format!(
            "cors: {origins}, methods {}{}",
            cors.allow_methods.to_str().unwrap_or("?"),
            if cors.credentials {
                ", with credentials"
            } else {
                ""
            }
        ));
    }
    for limit in &policy.rate_limits {
        let key: Vec<String> = limit.key.iter().map(ToString::to_string).collect();
        let store = match &limit.store {
            portcullis::config::RateLimitStoreRef::Local => "local",
            portcullis::config::RateLimitStoreRef::Named(name) => name.as_str(),
        };
        lines.push(format!(
            "rate_limit {}: {} per {}, burst {}, by {}, store {store}{}",
            limit.label,
            limit.count,
            human(limit.period),
            limit.burst,
            key.join("+"),
            match (limit.shadow, limit.advertise) {
                (true, _) => ", shadow",
                (false, false) => ", not advertised",
                (false, true) => "",
            }
        ));
    }
    if let Some(headers) = &policy.headers {
        for (side, edits) in [
            ("request", &headers.request),
            ("response", &headers.response),
        ] {
            let count = edits.remove.len() + edits.set.len() + edits.add.len();
            if count > 0 {
                lines.push(format!("headers: {count} edit(s) on the {side}"));
            }
        }
    }
    lines
}

/// The lines under an upstream's summary: what is set beyond its limits.
fn upstream_details(upstream: &portcullis::config::UpstreamConfig) -> Vec<String> {
    let mut lines = Vec::new();
    if upstream.protocol != portcullis::config::UpstreamProtocol::Http1 {
        lines.push(format!(
            "protocol {}",
            match upstream.protocol {
                portcullis::config::UpstreamProtocol::Http2 => "http2",
                _ => "auto",
            }
        ));
    }
    if let Some(check) = &upstream.health_check {
        lines.push(format!(
            "health_check GET {} every {}, timeout {}, out after {} failed, back after {} passed, status {}-{}",
            check.path,
            human(check.interval),
            human(check.timeout),
            check.unhealthy_threshold,
            check.healthy_threshold,
            check.expected_status.0,
            check.expected_status.1
        ));
    }
    if let Some(outlier) = &upstream.outlier {
        lines.push(format!(
            "outlier: ejected after {} failures in a row for {} (doubling up to {}), at most {}% at once",
            outlier.consecutive_failures,
            human(outlier.base_ejection_time),
            human(outlier.max_ejection_time),
            outlier.max_ejection_percent
        ));
    }
    if let Some(retry) = &upstream.retry {
        lines.push(format!("retry {}", describe_retry(retry)));
    }
    if let Some(tls) = &upstream.tls {
        let mut parts = vec![match (&tls.ca, tls.insecure_skip_verify) {
            (_, true) => "certificates NOT verified (insecure_skip_verify)".to_owned(),
            (Some(ca), false) => format!("verified against {}", ca.display()),
            (None, false) => "verified against the web PKI roots".to_owned(),
        }];
        if let Some(name) = &tls.server_name {
            parts.push(format!("server_name {}", name.to_str()));
        }
        if let Some(client) = &tls.client_certificate {
            parts.push(format!(
                "client certificate {}",
                client.certificate.display()
            ));
        }
        lines.push(format!("tls: {}", parts.join(", ")));
    }
    lines
}

fn describe_retry(retry: &portcullis::config::RetryConfig) -> String {
    let mut on: Vec<String> = Vec::new();
    if retry.on.connect_failure {
        on.push("connect_failure".to_owned());
    }
    if retry.on.reset {
        on.push("reset".to_owned());
    }
    if retry.on.timeout {
        on.push("timeout".to_owned());
    }
    on.extend(retry.on.statuses.iter().map(ToString::to_string));
    let methods: Vec<&str> = retry.methods.iter().map(http::Method::as_str).collect();
    format!(
        "{} attempts on {} for {}{}, budget {}%",
        retry.attempts,
        on.join(","),
        methods.join(","),
        retry
            .per_try_timeout
            .map_or_else(String::new, |t| format!(", per try {}", human(t))),
        retry.budget_percent
    )
}

/// What a route sets beyond its matcher and target: its own timeout and retry, WebSocket
/// limits other than the defaults, an aggregate's timeout and mode.
fn route_details(route: &portcullis::config::RouteConfig) -> Vec<String> {
    use portcullis::config::defaults;
    let mut details = Vec::new();
    match &route.target {
        RouteTarget::Proxy {
            timeout,
            retry,
            websocket,
            hedge,
            ..
        } => {
            if let Some(timeout) = timeout {
                details.push(format!("timeout {}", human(*timeout)));
            }
            if let Some(hedge) = hedge {
                let after = match hedge.after {
                    portcullis::config::HedgeDelay::Fixed(delay) => human(delay),
                    portcullis::config::HedgeDelay::Percentile(p) => format!("p{}", p * 100.0),
                };
                details.push(format!("hedge after {after}, at most {}", hedge.max));
            }
            if let Some(retry) = retry {
                details.push(format!("retry {}", describe_retry(retry)));
            }
            match websocket {
                Some(ws)
                    if (ws.max_connections, ws.idle_timeout)
                        != (
                            defaults::WEBSOCKET_MAX_CONNECTIONS,
                            defaults::WEBSOCKET_IDLE_TIMEOUT,
                        ) =>
                {
                    details.push(format!(
                        "websocket: at most {} connections, closed after {} idle",
                        ws.max_connections,
                        human(ws.idle_timeout)
                    ))
                }
                Some(_) => {}
                None => details.push("no websocket (HTTP/2 upstream)".to_owned()),
            }
        }
        RouteTarget::Aggregate(aggregate) => {
            details.push(format!("timeout {}", human(aggregate.timeout)));
            if aggregate.stream.is_some() {
                details.push("streamed as NDJSON".to_owned());
            } else if aggregate.merge == portcullis::config::MergeMode::Flat {
                details.push("merged flat".to_owned());
            }
        }
    }
    details
}
