//! The gateway assembled: config, the current catalog snapshot with what each frontend derives
//! from it, the frontends, the policy stack and the upstream.
//!
//! Snapshots are swapped atomically (`arc-swap`): a request loads the current one once and keeps
//! it to the end, so a reload never disturbs calls in flight. A reload that fails keeps the old
//! snapshot serving and reports why. A snapshot holds its config too: reloading the config file
//! builds a whole new snapshot off to the side (the catalog binds services to the config's rules),
//! and each server worker rebuilds its frontends and backend pools when it sees a new config.
//! The backends' health checkers and the resolvers of backends named by DNS, shared by every
//! worker, run on the gateway's runtime: started with each config that becomes current, aborted
//! when it is replaced (a descriptor reload keeps them).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures_util::FutureExt;
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
use crate::upstream::{HealthChecks, Resolvers, Upstream};
use crate::watch::Watcher;

/// One config, its catalog and everything derived from them, read by requests as a unit.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub catalog: Arc<Catalog>,
    /// Shared, so a WebSocket's later calls can load the tables of the snapshot current then.
    pub rest: Arc<rest::Tables>,
    pub soap: soap::Tables,
}

impl Snapshot {
    /// Everything the frontends derive from a catalog (and the config's settings that shape it:
    /// the OpenAPI document says what `rest:` makes the gateway accept); what `dragoman check`
    /// validates too.
    pub fn build(catalog: Catalog, config: Arc<Config>) -> Result<Self, CatalogError> {
        let rest = Arc::new(rest::Tables::new(&catalog, &config.rest));
        let soap = soap::Tables::new(&catalog, &config.soap);
        Ok(Snapshot { config, catalog: Arc::new(catalog), rest, soap })
    }

    /// Loads the catalog `config` names and builds on it.
    fn load(config: Arc<Config>, metrics: &crate::observe::metrics::Metrics) -> Result<Self, CatalogError> {
        Self::build(Catalog::load(&config, metrics)?, config)
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
    /// The config they were built from: a worker seeing a newer one builds anew.
    pub config: Arc<Config>,
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
    /// Config files reloaded and applied so far (a file saved unchanged does not count).
    pub config_reloads: u64,
    /// Config reloads that failed: the file did not parse or its catalog did not build.
    pub config_failures: u64,
}

/// A running gateway's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

struct Shared {
    snapshot: ArcSwap<Snapshot>,
    health: HealthReporter,
    /// The services `health` has a status for; held while it is brought in line, so that two
    /// reloads' updates cannot interleave (see [`Gateway::report_health`]).
    health_reported: tokio::sync::Mutex<Vec<String>>,
    health_service: TonicService,
    reloads: watch::Sender<ReloadStatus>,
    runtime: tokio::runtime::Handle,
    /// Set once shutdown begins: readiness is false from then on.
    draining: std::sync::atomic::AtomicBool,
    /// Every method's counters, kept across reloads.
    metrics: Arc<crate::observe::metrics::Metrics>,
    /// Every backend endpoint's figures, kept across reloads.
    backends: Arc<crate::observe::backends::Backends>,
    /// Held while a snapshot is built and swapped in: a descriptor reload and a config reload at
    /// once must not swap in a snapshot of the config the other replaced.
    reloading: std::sync::Mutex<()>,
    /// The descriptor watch and the config file's, replaced when a reload moves them.
    watches: std::sync::Mutex<Watches>,
    /// The current config's health checkers and resolvers; replacing them aborts the old ones.
    following: std::sync::Mutex<Following>,
    /// Starts every call's span (off unless `traces.otlp_endpoint` is set); one exporter for
    /// every worker's stack, set up at start (`traces:` changes on restart).
    tracer: Tracer,
}

/// The background tasks that follow one config's backends: held only to be dropped (aborted)
/// when the next config's start.
#[derive(Default)]
#[expect(dead_code, reason = "held for their Drop")]
struct Following {
    /// The checkers of backends that are IP addresses (a named backend's addresses are checked by
    /// its resolver's checkers).
    health_checks: HealthChecks,
    resolvers: Resolvers,
}

#[derive(Default)]
struct Watches {
    descriptors: Option<Watcher>,
    config: Option<Watcher>,
}

impl Gateway {
    /// Loads the catalog the config names. Must be called inside a tokio runtime.
    pub fn new(config: Config) -> Result<Self, CatalogError> {
        let metrics = Arc::new(crate::observe::metrics::Metrics::default());
        let tracer = Tracer::new(&config.traces).map_err(|e| CatalogError::Other(e.to_string()))?;
        let snapshot = Snapshot::load(Arc::new(config), &metrics)?;
        snapshot.log_warnings();
        let (health, health_service) = tonic_health::server::health_reporter();
        let (reloads, _) = watch::channel(ReloadStatus { generation: 1, ..Default::default() });
        let gateway = Gateway {
            shared: Arc::new(Shared {
                snapshot: ArcSwap::from_pointee(snapshot),
                health,
                health_reported: Default::default(),
                health_service: BoxCloneSyncService::new(health_service),
                reloads,
                runtime: tokio::runtime::Handle::current(),
                draining: std::sync::atomic::AtomicBool::new(false),
                metrics,
                backends: Default::default(),
                reloading: Default::default(),
                watches: Default::default(),
                following: Default::default(),
                tracer,
            }),
        };
        gateway.check_backends();
        // Health is right before the first call can ask: nothing else holds the new reporter's
        // locks yet, so this finishes in one poll.
        tokio::task::unconstrained(gateway.report_health())
            .now_or_never()
            .expect("a new health reporter is not contended");
        Ok(gateway)
    }

    /// The current config (the current snapshot's).
    pub fn config(&self) -> Arc<Config> {
        self.shared.snapshot.load().config.clone()
    }

    /// Marks the gateway as shutting down (the server does, as shutdown begins): `/readyz` and
    /// `grpc.health.v1.Health` say NOT_SERVING from then on, for load balancers of either kind.
    pub fn start_draining(&self) {
        self.shared.draining.store(true, std::sync::atomic::Ordering::Relaxed);
        self.shared.runtime.spawn(self.report_health());
    }

    /// The call metrics (`/metrics` on the admin listener).
    pub fn metrics(&self) -> &crate::observe::metrics::Metrics {
        &self.shared.metrics
    }

    /// The backend endpoints' figures (`/metrics`, `/admin/backends`, `/readyz`).
    pub fn backends(&self) -> &crate::observe::backends::Backends {
        &self.shared.backends
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
    pub fn worker(&self, config: &Arc<Config>) -> Worker {
        let stack = stack::build(
            config,
            Upstream::new(config, &self.shared.backends),
            self.shared.health_service.clone(),
            self.shared.tracer.clone(),
        );
        Worker {
            config: config.clone(),
            grpc: GrpcFrontend { stack: stack.clone(), max_message_size: config.server.max_message_size },
            rest: RestFrontend { stack: stack.clone(), options: config.rest.clone() },
            websocket: WebSocketFrontend {
                stack: stack.clone(),
                options: config.websocket.clone(),
                rest: config.rest.clone(),
            },
            soap: SoapFrontend { stack, options: config.soap.clone(), rest: config.rest.clone() },
        }
    }

    /// Follows reloads.
    pub fn reloads(&self) -> watch::Receiver<ReloadStatus> {
        self.shared.reloads.subscribe()
    }

    /// Rebuilds the catalog from disk and swaps it in; on failure the old one keeps serving.
    pub fn reload(&self) -> Result<(), CatalogError> {
        let _reloading = self.shared.reloading.lock().unwrap_or_else(|e| e.into_inner());
        match self.swap_in(self.config()) {
            Ok(()) => {
                tracing::info!(services = self.snapshot().catalog.services().len(), "descriptors reloaded");
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

    /// Reads the config file again and, if it changed, serves by it: a new snapshot (catalog and
    /// all) built off to the side and swapped in; each worker then rebuilds its frontends and
    /// backend pools. A file that does not parse, or whose catalog does not build, leaves the
    /// current config serving and says why. What only a restart can change
    /// ([`Config::RESTART_ONLY`]) is kept as it is, with a warning. Ok(false): nothing changed.
    /// `force` (SIGHUP) rebuilds even when the file is unchanged, so that the files it names
    /// (backend CA files, descriptors) are read again.
    pub fn reload_config(&self, path: &Path, force: bool) -> Result<bool, String> {
        let reloading = self.shared.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.config();
        let result = Config::reload(path, &current).map_err(|e| e.to_string()).and_then(|(config, kept)| {
            if config.written == current.written && !force {
                return Ok(None);
            }
            let config = Arc::new(config);
            self.swap_in(config.clone()).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(Some((config, kept)))
        });
        drop(reloading);
        let (config, restart) = match result {
            Ok(None) => return Ok(false),
            Ok(Some(reloaded)) => reloaded,
            Err(e) => {
                tracing::error!(error = %e, "config reload failed; the previous config keeps serving");
                self.shared.reloads.send_modify(|s| {
                    s.config_failures += 1;
                    s.last_error = Some(e.clone());
                });
                return Err(e);
            }
        };
        if !restart.is_empty() {
            tracing::warn!(keys = ?restart, "config reloaded, but these settings change only on restart: kept as they were");
        }
        tracing::info!(file = %path.display(), services = self.snapshot().catalog.services().len(), "config reloaded");
        self.shared.reloads.send_modify(|s| s.config_reloads += 1);
        if config.descriptors != current.descriptors || config.watch != current.watch {
            if let Err(e) = self.watch() {
                tracing::error!(error = %e, "cannot watch the new descriptor paths");
            }
        }
        Ok(true)
    }

    /// Builds a snapshot of `config` and swaps it in, health and reload status following.
    fn swap_in(&self, config: Arc<Config>) -> Result<(), CatalogError> {
        let snapshot = Snapshot::load(config, &self.shared.metrics)?;
        snapshot.log_warnings();
        let current = self.config();
        // A descriptor reload keeps the config, and its checkers and resolvers with it.
        let config_changed = !Arc::ptr_eq(&snapshot.config, &current);
        if config_changed {
            // The new config's pools start from the addresses the old one's names resolved to.
            crate::upstream::carry_over(&snapshot.config, &current);
        }
        self.shared.snapshot.store(Arc::new(snapshot));
        if config_changed {
            self.check_backends();
        }
        // The reload counts as done once health says so too.
        let health = self.report_health();
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

    /// Starts the current config's resolvers and health checkers, then aborts the previous
    /// config's: an address both check keeps its verdict (see `EndpointStats::checker`).
    fn check_backends(&self) {
        let config = self.config();
        let (backends, runtime) = (&self.shared.backends, &self.shared.runtime);
        let started = Following {
            resolvers: Resolvers::start(&config, backends, runtime),
            health_checks: HealthChecks::start(&config, backends, runtime),
        };
        let mut running = self.shared.following.lock().unwrap_or_else(|e| e.into_inner());
        let previous = std::mem::replace(&mut *running, started);
        drop(running);
        drop(previous);
    }

    /// Watches the descriptor paths, reloading on change, if the config asks for it (a config
    /// reload that moves them watches the new ones).
    pub fn watch(&self) -> Result<(), CatalogError> {
        let config = self.config();
        let mut watches = self.shared.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches.descriptors = None;
        if !config.watch {
            return Ok(());
        }
        let files: Vec<PathBuf> = config.descriptors.iter().filter(|p| !p.is_dir()).cloned().collect();
        let relevant = move |path: &Path| crate::catalog::touches_catalog(path, &files);
        let gateway = Arc::downgrade(&self.shared);
        let _guard = self.shared.runtime.enter();
        let watcher = crate::watch::watch(&config.descriptors, relevant, move || {
            if let Some(shared) = gateway.upgrade() {
                let _ = Gateway { shared }.reload();
            }
        })
        .map_err(CatalogError::Other)?;
        watches.descriptors = Some(watcher);
        Ok(())
    }

    /// Watches the config file (through its folder, so that an editor's or Kubernetes' swap is
    /// seen), reloading it on change, unless the config says `watch: false`.
    pub fn watch_config(&self, path: &Path) -> Result<(), String> {
        if !self.config().watch {
            return Ok(());
        }
        let (gateway, file) = (Arc::downgrade(&self.shared), path.to_path_buf());
        let watched = [file.clone()];
        let relevant = {
            let files = watched.clone();
            move |changed: &Path| crate::watch::touches_files(changed, &files)
        };
        let _guard = self.shared.runtime.enter();
        let watcher = crate::watch::watch(&watched, relevant, move || {
            if let Some(shared) = gateway.upgrade() {
                let _ = Gateway { shared }.reload_config(&file, false);
            }
        })?;
        self.shared.watches.lock().unwrap_or_else(|e| e.into_inner()).config = Some(watcher);
        Ok(())
    }

    /// Brings `grpc.health.v1` in line with the current snapshot: the gateway itself serves; a
    /// service serves when a backend rule routes it; a service a reload removed is no longer known
    /// (NOT_FOUND) instead of SERVING for ever; once draining, all say NOT_SERVING. It reads the
    /// snapshot under `health_reported`'s lock, so whichever update runs last applies the newest.
    fn report_health(&self) -> impl std::future::Future<Output = ()> + use<> {
        let shared = self.shared.clone();
        async move {
            let mut reported = shared.health_reported.lock().await;
            let mut health = shared.health.clone();
            let draining = shared.draining.load(std::sync::atomic::Ordering::Relaxed);
            let serving = |yes: bool| if yes && !draining { ServingStatus::Serving } else { ServingStatus::NotServing };
            let snapshot = shared.snapshot.load_full();
            let services = snapshot.catalog.services();
            health.set_service_status("", serving(true)).await;
            for service in services.iter() {
                health.set_service_status(service.descriptor.full_name(), serving(service.rule.is_some())).await;
            }
            for name in reported.iter() {
                if !services.iter().any(|s| s.descriptor.full_name() == name) {
                    health.clear_service_status(name).await;
                }
            }
            *reported = services.iter().map(|s| s.descriptor.full_name().to_owned()).collect();
        }
    }
}
