//! The admin listener: a second, optional port for operators (`admin.listen`), with fixed routes
//! built on axum. It never serves API traffic, and API traffic never reaches it.
//!
//! - `GET /healthz`: the process is alive (200 `ok`).
//! - `GET /readyz`: the gateway takes calls (200 `ready`): a catalog is loaded, every service a
//!   rule routes has a backend that can be reached (a connection is open, or a TCP dial connects
//!   within a second), and it is not draining. 503 `draining` once shutdown has begun, while
//!   calls in flight finish; 503 naming the services with no backend in reach.
//! - `GET /metrics`: the call metrics (`observe::metrics`), the catalog's (generation, reloads by
//!   result, services, methods) and the process's (RSS, open descriptors), Prometheus text or
//!   OpenMetrics.
//! - `GET /admin/config`: the config in effect, every default filled in, as JSON.
//! - `GET /admin/catalog`: the current catalog as JSON: its generation, the latest reload error,
//!   each service with its backends, methods, their kinds and HTTP bindings, and the snapshot's
//!   warnings.
//! - `GET /admin/backends`: each backend endpoint: its state (up, down, idle), connections, calls
//!   in flight, calls, failures, dials and failed dials, the last error and when, its health by
//!   the health checks (`unchecked`, `unknown`, `serving`, `not_serving`) with checks passed and
//!   failed and the last failed check's reason, the services it serves; an address a backend's
//!   DNS name resolved to, with that backend as its `name`.

use std::future::Future;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use crate::gateway::Gateway;

/// Serves the admin routes on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: std::net::TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    axum::serve(listener, router(gateway)).with_graceful_shutdown(shutdown).await
}

fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/admin/catalog", get(catalog))
        .route("/admin/backends", get(backends))
        .route("/metrics", get(metrics))
        .route(
            "/admin/config",
            get(|State(gateway): State<Gateway>| async move { axum::Json(gateway.config().effective()) }),
        )
        .with_state(gateway)
}

async fn ready(State(gateway): State<Gateway>) -> (StatusCode, String) {
    if gateway.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_owned());
    }
    let snapshot = gateway.snapshot();
    // Each rule that routes a service is probed once, its backends at once.
    let rules = snapshot.config.services.iter().filter(|rule| {
        snapshot.catalog.services().iter().any(|s| s.rule.as_ref().is_some_and(|r| r.index == rule.index))
    });
    let registry = gateway.backends();
    let probes = rules.map(|rule| {
        let timeout = rule.connect_timeout.min(std::time::Duration::from_secs(1));
        // A backend named by DNS is in reach when one of the addresses it resolved to is; before
        // its first answer, when its name can be dialed.
        let targets = rule.backends.iter().enumerate().flat_map(move |(i, backend)| match rule.addresses(i) {
            Some(addresses) => addresses.iter().map(|a| (a.stats.clone(), a.socket.to_string())).collect(),
            None => vec![(registry.endpoint(&backend.to_string()), backend.authority.clone())],
        });
        let dials = targets.map(move |(stats, authority)| async move { stats.reachable(&authority, timeout).await });
        async move { (rule.index, futures_util::future::join_all(dials).await.contains(&true)) }
    });
    let unreachable: Vec<usize> = futures_util::future::join_all(probes)
        .await
        .into_iter()
        .filter(|(_, up)| !up)
        .map(|(index, _)| index)
        .collect();
    if unreachable.is_empty() {
        return (StatusCode::OK, "ready\n".to_owned());
    }
    let services: Vec<&str> = snapshot
        .catalog
        .services()
        .iter()
        .filter(|s| s.rule.as_ref().is_some_and(|r| unreachable.contains(&r.index)))
        .map(|s| s.descriptor.full_name())
        .collect();
    (StatusCode::SERVICE_UNAVAILABLE, format!("no backend in reach for {}\n", services.join(", ")))
}

async fn backends(State(gateway): State<Gateway>) -> axum::Json<Value> {
    let snapshot = gateway.snapshot();
    let backends: Vec<Value> = gateway
        .backends()
        .current()
        .iter()
        .map(|endpoint| {
            let mut shown = endpoint.to_json();
            let name = endpoint.name();
            let services: Vec<&str> = snapshot
                .catalog
                .services()
                .iter()
                .filter(|s| {
                    // Its address, or the name it was resolved from.
                    let named = |b: &crate::config::Backend| {
                        let b = b.to_string();
                        b == endpoint.address || name.as_ref() == Some(&b)
                    };
                    s.rule.as_ref().is_some_and(|r| r.backends.iter().any(named))
                })
                .map(|s| s.descriptor.full_name())
                .collect();
            shown["services"] = json!(services);
            shown
        })
        .collect();
    axum::Json(json!({ "backends": backends }))
}

/// The Prometheus text format, or OpenMetrics when the scraper lists it in `Accept`.
async fn metrics(State(gateway): State<Gateway>, headers: axum::http::HeaderMap) -> impl axum::response::IntoResponse {
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let openmetrics = accept.contains("application/openmetrics-text");
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    let mut out = gateway.metrics().render(openmetrics);
    gateway.backends().render(&mut out, openmetrics);
    crate::observe::metrics::render_open(&mut out);
    crate::policy::limit::render_store_errors(&mut out, openmetrics);
    crate::policy::retry::render(&mut out, openmetrics);
    gateway_families(&mut out, &gateway, openmetrics);
    if openmetrics {
        out.push_str("# EOF\n");
    }
    ([(axum::http::header::CONTENT_TYPE, content_type)], out)
}

/// The catalog's and the process's figures, read when scraped.
fn gateway_families(out: &mut String, gateway: &Gateway, openmetrics: bool) {
    use crate::observe::metrics::{counter, gauge};
    let reloads = gateway.reloads().borrow().clone();
    let snapshot = gateway.snapshot();
    let services = snapshot.catalog.services();
    let methods: usize = services.iter().map(|s| s.descriptor.methods().len()).sum();
    gauge(out, "dragoman_catalog_generation", "Catalogs built since start; the first is 1.", reloads.generation as f64);
    let reloaded =
        [("result=\"success\"", reloads.generation.saturating_sub(1)), ("result=\"failure\"", reloads.failures)];
    counter(out, openmetrics, "dragoman_catalog_reloads_total", "Catalog reloads, by result.", &reloaded);
    let configs = [("result=\"success\"", reloads.config_reloads), ("result=\"failure\"", reloads.config_failures)];
    let help = "Config file reloads that changed the config, by result.";
    counter(out, openmetrics, "dragoman_config_reloads_total", help, &configs);
    gauge(out, "dragoman_catalog_services", "Services in the current catalog.", services.len() as f64);
    gauge(out, "dragoman_catalog_methods", "Methods of those services.", methods as f64);
    gauge(out, "dragoman_draining", "1 once shutdown has begun.", if gateway.is_draining() { 1.0 } else { 0.0 });
    // Linux's view of the process; elsewhere these families are left out.
    let rss = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse::<f64>().ok()
    });
    if let Some(kib) = rss {
        gauge(out, "process_resident_memory_bytes", "Resident memory size in bytes.", kib * 1024.0);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(out, "process_open_fds", "Open file descriptors (sockets included).", fds.count() as f64);
    }
}

async fn catalog(State(gateway): State<Gateway>) -> axum::Json<Value> {
    let snapshot = gateway.snapshot();
    let reloads = gateway.reloads().borrow().clone();
    let mut services = Vec::new();
    for entry in snapshot.catalog.services() {
        let service = &entry.descriptor;
        let methods: Vec<Value> = service
            .methods()
            .map(|method| {
                let http = snapshot.rest.routes.bindings_of(&method);
                json!({
                    "name": method.name(),
                    "path": format!("/{}/{}", service.full_name(), method.name()),
                    "client_streaming": method.is_client_streaming(),
                    "server_streaming": method.is_server_streaming(),
                    "http": http,
                })
            })
            .collect();
        let backends: Option<Vec<String>> = entry.rule.as_ref().map(|rule| {
            rule.backends
                .iter()
                .map(|b| format!("{}://{}", if b.tls { "https" } else { "http" }, b.authority))
                .collect()
        });
        services.push(json!({ "name": service.full_name(), "backends": backends, "methods": methods }));
    }
    axum::Json(json!({
        "generation": reloads.generation,
        "reload_failures": reloads.failures,
        "last_reload_error": reloads.last_error,
        "services": services,
        "warnings": snapshot.warnings(),
    }))
}
