//! The gateway assembled: config, the current catalog snapshot with what each frontend derives
//! from it, the frontends, the policy stack and the upstream.
//!
//! Snapshots are swapped atomically (`arc-swap`): a request loads the current one once and keeps
//! it to the end, so a reload never disturbs calls in flight. A reload that fails keeps the old
//! snapshot serving and reports why.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::util::BoxCloneSyncService;

use crate::builtin::TonicService;
use crate::catalog::{Catalog, CatalogError};
use crate::config::Config;
use crate::frontends::grpc::GrpcFrontend;
use crate::frontends::rest::{self, RestFrontend};
use crate::frontends::soap::{self, SoapFrontend};
use crate::frontends::websocket::WebSocketFrontend;
use crate::observe::trace::Tracer;
use crate::stack;
use crate::upstream::Upstream;

/// One catalog and everything derived from it, read by requests as a unit.
pub struct Snapshot {
    pub catalog: Arc<Catalog>,
    /// Shared, so a WebSocket's later calls can load the tables of the snapshot current then.
    pub rest: Arc<rest::Tables>,
    pub soap: soap::Tables,
}

impl Snapshot {
    /// Everything the frontends derive from a catalog (and the config's settings that shape it:
    /// the OpenAPI document says what `rest:` makes the gateway accept); what `dragoman check`
    /// validates too.
    pub fn build(catalog: Catalog, config: &Config) -> Result<Self, CatalogError> {
        let rest = Arc::new(rest::Tables::new(&catalog, &config.rest));
        let soap = soap::Tables::new(&catalog, &config.soap);
        Ok(Snapshot { catalog: Arc::new(catalog), rest, soap })
    }

    /// What the snapshot serves differently from what the descriptors ask for (HTTP bindings it
    /// had to drop), in plain words.
    pub fn warnings(&self) -> &[String] {
        &self.rest.routes.warnings
    }

    fn log_warnings(&self) {
        for warning in self.warnings() {
            tracing::warn!("{warning}");
        }
    }
}

/// One server worker's frontends (see [`Gateway::worker`]).
pub struct Worker {
    pub grpc: GrpcFrontend,
    pub rest: RestFrontend,
    pub websocket: WebSocketFrontend,
    pub soap: SoapFrontend,
}

/// The outcome of the latest reloads, for whoever wants to follow them (tests, an admin API).
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// Catalogs built so far; the first one is 1.
    pub generation: u64,
    /// Failed reloads so far.
    pub failures: u64,
    /// Why the latest reload failed, if it did.
    pub last_error: Option<String>,
}

/// A running gateway's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

struct Shared {
    config: Config,
    snapshot: ArcSwap<Snapshot>,
    health: HealthReporter,
    health_service: TonicService,
    reloads: watch::Sender<ReloadStatus>,
    runtime: tokio::runtime::Handle,
    /// Set once shutdown begins: readiness is false from then on.
    draining: std::sync::atomic::AtomicBool,
    /// Every method's counters, kept across reloads.
    metrics: Arc<crate::observe::metrics::Metrics>,
    /// Starts every call's span (off unless `traces.otlp_endpoint` is set); one exporter for
    /// every worker's stack.
    tracer: Tracer,
}

impl Gateway {
    /// Loads the catalog the config names. Must be called inside a tokio runtime.
    pub fn new(config: Config) -> Result<Self, CatalogError> {
        let metrics = Arc::new(crate::observe::metrics::Metrics::default());
        let tracer = Tracer::new(&config.traces).map_err(|e| CatalogError::Other(e.to_string()))?;
        let snapshot = Snapshot::build(Catalog::load(&config, &metrics)?, &config)?;
        snapshot.log_warnings();
        let (health, health_service) = tonic_health::server::health_reporter();
        let (reloads, _) = watch::channel(ReloadStatus { generation: 1, ..Default::default() });
        let gateway = Gateway {
            shared: Arc::new(Shared {
                config,
                snapshot: ArcSwap::from_pointee(snapshot),
                health,
                health_service: BoxCloneSyncService::new(health_service),
                reloads,
                runtime: tokio::runtime::Handle::current(),
                draining: std::sync::atomic::AtomicBool::new(false),
                metrics,
                tracer,
            }),
        };
        gateway.shared.runtime.spawn(gateway.report_health(None));
        Ok(gateway)
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Marks the gateway as shutting down (the server does, as it stops accepting).
    pub fn start_draining(&self) {
        self.shared.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The call metrics (`/metrics` on the admin listener).
    pub fn metrics(&self) -> &crate::observe::metrics::Metrics {
        &self.shared.metrics
    }

    /// Sends the spans still queued to the collector and stops exporting (the end of serving,
    /// once calls in flight are done). Waits at most `traces.export_timeout`, off the workers.
    pub async fn shutdown_traces(&self) {
        let tracer = self.shared.tracer.clone();
        let _ = tokio::task::spawn_blocking(move || tracer.shutdown()).await;
    }

    /// Whether shutdown has begun: the readiness probe's answer.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The current snapshot; hold it for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// What one server worker needs of its own: frontends over a policy stack whose upstream
    /// connections belong to that worker's runtime, so a call never crosses threads.
    pub fn worker(&self) -> Worker {
        let stack = stack::build(
            Upstream::new(&self.shared.config),
            self.shared.health_service.clone(),
            self.shared.tracer.clone(),
        );
        Worker {
            grpc: GrpcFrontend { stack: stack.clone(), max_message_size: self.shared.config.server.max_message_size },
            rest: RestFrontend { stack: stack.clone(), options: self.shared.config.rest.clone() },
            websocket: WebSocketFrontend {
                stack: stack.clone(),
                options: self.shared.config.websocket.clone(),
                rest: self.shared.config.rest.clone(),
            },
            soap: SoapFrontend {
                stack,
                options: self.shared.config.soap.clone(),
                rest: self.shared.config.rest.clone(),
            },
        }
    }

    /// Follows reloads.
    pub fn reloads(&self) -> watch::Receiver<ReloadStatus> {
        self.shared.reloads.subscribe()
    }

    /// Rebuilds the catalog from disk and swaps it in; on failure the old one keeps serving.
    pub fn reload(&self) -> Result<(), CatalogError> {
        let config = &self.shared.config;
        let result = Catalog::load(config, &self.shared.metrics).and_then(|catalog| Snapshot::build(catalog, config));
        match result {
            Ok(snapshot) => {
                snapshot.log_warnings();
                let services = snapshot.catalog.services().len();
                let previous = self.shared.snapshot.swap(Arc::new(snapshot));
                tracing::info!(services, "descriptors reloaded");
                // The reload counts as done once health says so too.
                let health = self.report_health(Some(&previous));
                let shared = self.shared.clone();
                self.shared.runtime.spawn(async move {
                    health.await;
                    shared.reloads.send_modify(|s| {
                        s.generation += 1;
                        s.last_error = None;
                    });
                });
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "descriptor reload failed; the previous catalog keeps serving");
                self.shared.reloads.send_modify(|s| {
                    s.failures += 1;
                    s.last_error = Some(e.to_string());
                });
                Err(e)
            }
        }
    }

    /// Starts watching the descriptor paths, reloading on change, if the config asks for it.
    pub fn watch(&self) -> Result<Option<crate::watch::Watcher>, CatalogError> {
        if !self.shared.config.watch {
            return Ok(None);
        }
        let paths: Vec<PathBuf> = self.shared.config.descriptors.clone();
        let files: Vec<PathBuf> = paths.iter().filter(|p| !p.is_dir()).cloned().collect();
        let gateway = self.clone();
        let _guard = self.shared.runtime.enter();
        let relevant = move |path: &std::path::Path| crate::catalog::touches_catalog(path, &files);
        crate::watch::watch(&paths, relevant, move || {
            let _ = gateway.reload();
        })
        .map(Some)
        .map_err(CatalogError::Other)
    }

    /// Health: the gateway itself serves; a service serves when a backend rule routes it.
    /// Health: the gateway itself serves; a service serves when a backend rule routes it; a
    /// service that a reload removed is no longer known (NOT_FOUND), instead of SERVING for ever.
    fn report_health(&self, previous: Option<&Snapshot>) -> impl std::future::Future<Output = ()> + use<> {
        let mut health = self.shared.health.clone();
        let current = self.snapshot();
        let statuses: Vec<(String, ServingStatus)> = current
            .catalog
            .services()
            .iter()
            .map(|s| {
                let status = if s.rule.is_some() { ServingStatus::Serving } else { ServingStatus::NotServing };
                (s.descriptor.full_name().to_owned(), status)
            })
            .collect();
        let removed: Vec<String> = previous
            .map(|p| p.catalog.services())
            .unwrap_or_default()
            .iter()
            .map(|s| s.descriptor.full_name())
            .filter(|name| !statuses.iter().any(|(kept, _)| kept == name))
            .map(str::to_owned)
            .collect();
        async move {
            health.set_service_status("", ServingStatus::Serving).await;
            for (name, status) in statuses {
                health.set_service_status(name, status).await;
            }
            for name in removed {
                health.clear_service_status(&name).await;
            }
        }
    }
}
