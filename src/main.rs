//! The `dragoman` command line: serve a config, run the demo, check a config, compile protos.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use dragoman::catalog::Catalog;
use dragoman::config::Config;
use dragoman::gateway::{Gateway, Snapshot};
use dragoman::server::{Listener, Tls};

/// A gRPC-first API gateway that learns services from protobuf descriptors at run time.
#[derive(Parser)]
#[command(name = "dragoman", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a YAML config file.
    Serve {
        /// The config file.
        #[arg(long, short, default_value = "gateway.yaml")]
        config: PathBuf,
    },
    /// Run the demo shop (users, products, orders, payments) behind the gateway, in one process.
    Demo {
        /// Address the gateway listens on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Descriptor folder to load; the embedded demo set is used when it does not exist.
        #[arg(long, default_value = "descriptors")]
        descriptors: PathBuf,
        /// Server threads; 0 = one per core.
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Address of the admin listener (`/metrics`, `/healthz`, `/readyz`, `/admin/...`), or `off`.
        /// Default: loopback and the port after the gateway's (127.0.0.1:8081), or a free port
        /// when that one is taken or the gateway's is 0.
        #[arg(long)]
        admin: Option<String>,
    },
    /// Validate a config and its descriptors; print every service, its methods and its backends.
    Check {
        /// The config file.
        #[arg(long, short, default_value = "gateway.yaml")]
        config: PathBuf,
        /// Fail on warnings too (HTTP bindings that had to be dropped), not only on errors.
        #[arg(long)]
        strict: bool,
    },
    /// Compile .proto files into a descriptor set (with imports and comments), no protoc needed.
    Compile {
        /// .proto files, or folders searched for them.
        #[arg(required = true)]
        protos: Vec<PathBuf>,
        /// Import paths (the folders the files' import statements are relative to).
        #[arg(long = "include", short = 'I', default_value = ".")]
        include: Vec<PathBuf>,
        /// Where to write the set.
        #[arg(long, short)]
        out: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain, one line: the file, the key, what was expected.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    dragoman::observe::init_tracing();
    match cli.command {
        Command::Serve { config: path } => {
            let config = Config::load(&path)?;
            runtime()?.block_on(serve(config, Some(path), None))
        }
        Command::Demo { listen, descriptors, workers, admin } => {
            runtime()?.block_on(demo(listen, descriptors, workers, admin))
        }
        Command::Check { config, strict } => check(&config, strict),
        Command::Compile { protos, include, out } => {
            let files = dragoman::catalog::proto_sources(&protos)?;
            let set = dragoman::catalog::compile_set(&files, &include)?;
            std::fs::write(&out, set).with_context(|| format!("cannot write {}", out.display()))?;
            println!("wrote {} ({} files compiled)", out.display(), files.len());
            Ok(())
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Serves `config`, read from `path` when it came from a file: the file is then watched and
/// reloaded on change, and on SIGHUP.
async fn serve(
    config: Config,
    path: Option<PathBuf>,
    backends: Option<dragoman::demo::Backends>,
) -> anyhow::Result<()> {
    let gateway = Gateway::new(config)?;
    gateway.watch()?;
    if let Some(path) = &path {
        gateway.watch_config(path).map_err(anyhow::Error::msg)?;
    }
    let bind = |address| std::net::TcpListener::bind(address).with_context(|| format!("cannot listen on {address}"));
    let mut listeners = Vec::new();
    if let Some(address) = gateway.config().listen {
        listeners.push((bind(address)?, None));
    }
    let mut tls = None;
    if let Some(settings) = &gateway.config().tls {
        let terminator = Tls::start(settings).map_err(anyhow::Error::msg)?;
        listeners.push((bind(settings.listen)?, Some(terminator.clone())));
        tls = Some(terminator);
    }
    tokio::spawn(reload_on_hangup(gateway.clone(), path, tls));
    let services = gateway.snapshot().catalog.services().len();
    for (socket, tls) in &listeners {
        // The line tests and scripts wait for: the plain listener's first, if there is one.
        match tls {
            None => tracing::info!(address = %socket.local_addr()?, services, "dragoman listening"),
            Some(_) => tracing::info!(address = %socket.local_addr()?, services, tls = true, "dragoman listening"),
        }
    }
    let listeners = listeners.into_iter().map(|(socket, tls)| Listener::new(socket, tls)).collect();
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(address) = gateway.config().admin {
        let admin = std::net::TcpListener::bind(address).with_context(|| format!("cannot listen on {address}"))?;
        tracing::info!(address = %admin.local_addr()?, "admin listening");
        let admin_gateway = gateway.clone();
        tokio::spawn(async move {
            let stopped = async {
                let _ = admin_stopped.await;
            };
            if let Err(e) = dragoman::admin::serve(admin, admin_gateway, stopped).await {
                tracing::error!(error = %e, "the admin listener failed");
            }
        });
    }
    let workers = gateway.config().workers;
    dragoman::server::serve(listeners, gateway.clone(), workers, shutdown_signal()).await?;
    // The calls in flight are done: their spans are the last to send.
    gateway.shutdown_traces().await;
    // The admin listener answers (`/readyz`: draining) until the calls in flight are done.
    let _ = admin_stop.send(());
    drop(backends);
    Ok(())
}

async fn demo(listen: String, descriptors: PathBuf, workers: usize, admin: Option<String>) -> anyhow::Result<()> {
    let admin = match admin.as_deref() {
        Some("off") => String::new(),
        Some(address) => format!("admin:\n  listen: {}\n", serde_json::to_string(address)?),
        None => format!("admin:\n  listen: \"{}\"\n", default_admin(&listen)?),
    };
    let backends = dragoman::demo::Backends::start().await?;
    let descriptors = if descriptors.exists() {
        descriptors
    } else {
        let dir = std::env::temp_dir().join(format!("dragoman-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("shop.binpb"), dragoman::demo::DESCRIPTOR_SET)?;
        tracing::info!(folder = %dir.display(), "no descriptors/ folder here: using the embedded demo set");
        dir
    };
    let yaml = format!(
        "listen: {listen}\nworkers: {workers}\ndescriptors: [{}]\n{admin}{}",
        serde_json::to_string(&descriptors.display().to_string())?,
        backends.services_yaml()
    );
    let config = Config::parse(&yaml, std::path::Path::new(".")).map_err(anyhow::Error::msg)?;
    for (name, address) in dragoman::demo::SERVICES.iter().zip(backends.addresses) {
        tracing::info!(service = name, backend = %address, "demo backend");
    }
    tracing::info!("try: grpcurl -plaintext {listen} list");
    tracing::info!("try: curl -s {listen}/v1/users/u-1   (the API: {listen}/openapi.json)");
    serve(config, None, Some(backends)).await
}

/// The demo's admin address: loopback (never the public interface `--listen` may name), the next
/// port after the gateway's; any free port when that one is taken or the gateway's is 0.
fn default_admin(listen: &str) -> anyhow::Result<std::net::SocketAddr> {
    let address: std::net::SocketAddr = listen.parse().with_context(|| format!("--listen {listen}"))?;
    let loopback = std::net::Ipv4Addr::LOCALHOST.into();
    let next = address.port().checked_add(1).filter(|_| address.port() != 0);
    let wanted = next.map(|port| std::net::SocketAddr::new(loopback, port));
    match wanted.map(std::net::TcpListener::bind) {
        Some(Ok(_)) => Ok(wanted.unwrap_or_else(|| std::net::SocketAddr::new(loopback, 0))),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "the admin port after --listen's is taken: using a free one (see 'admin listening')");
            Ok(std::net::SocketAddr::new(loopback, 0))
        }
        None => Ok(std::net::SocketAddr::new(loopback, 0)),
    }
}

fn check(path: &std::path::Path, strict: bool) -> anyhow::Result<()> {
    let config = std::sync::Arc::new(Config::load(path)?);
    // Exactly what serving builds, so what is listed here is what is served.
    let snapshot = Snapshot::build(Catalog::load(&config, &Default::default())?, config.clone())?;
    let catalog = &snapshot.catalog;
    let listening = [config.listen.map(|a| a.to_string()), config.tls.as_ref().map(|t| format!("{} (TLS)", t.listen))];
    let listening: Vec<String> = listening.into_iter().flatten().collect();
    println!("{}: ok, listening on {}", path.display(), listening.join(" and "));
    for source in &catalog.sources {
        println!("loaded {}", source.display());
    }
    let mut unrouted = 0;
    for service in catalog.services() {
        let backends = match &service.rule {
            Some(rule) => rule.backends.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", "),
            None => {
                unrouted += 1;
                "(no backend: calls answer UNAVAILABLE)".to_owned()
            }
        };
        println!("\n{}  ->  {backends}", service.descriptor.full_name());
        for method in service.descriptor.methods() {
            let kind = match (method.is_client_streaming(), method.is_server_streaming()) {
                (false, false) => "unary",
                (false, true) => "server streaming",
                (true, false) => "client streaming",
                (true, true) => "bidirectional",
            };
            let http = snapshot.rest.routes.bindings_of(&method);
            println!("  {:<24} {kind:<17} {}", method.name(), http.join(", "));
        }
    }
    for rule in &config.services {
        if !catalog.services().iter().any(|s| s.rule.as_ref().is_some_and(|r| r.index == rule.index)) {
            bail!("services[{}]: match {} matches no loaded service", rule.index, rule.pattern);
        }
    }
    if unrouted > 0 {
        println!("\n{unrouted} service(s) have no backend");
    }
    let warnings = snapshot.warnings();
    if !warnings.is_empty() {
        println!();
        for warning in warnings {
            println!("warning: {warning}");
        }
        if strict {
            bail!("{} warning(s), and --strict makes them errors", warnings.len());
        }
    }
    Ok(())
}

/// SIGHUP reads the config file, the descriptors and the TLS files again (all are watched too;
/// this is for file systems that do not report changes, and for operators used to it).
async fn reload_on_hangup(gateway: Gateway, path: Option<PathBuf>, tls: Option<std::sync::Arc<Tls>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else { return };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            let (gateway, path, tls) = (gateway.clone(), path.clone(), tls.clone());
            let _ = tokio::task::spawn_blocking(move || {
                // The config file rebuilt whole (the files it names read again), or the descriptors.
                match path {
                    Some(path) => {
                        let _ = gateway.reload_config(&path, true);
                    }
                    None => {
                        let _ = gateway.reload();
                    }
                }
                if let Some(tls) = tls {
                    tls.reload();
                }
            })
            .await;
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
