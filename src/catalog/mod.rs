//! The catalog: one immutable snapshot of everything learned from the descriptors — the merged
//! `DescriptorPool`, every service and method, and which config rule routes each service.
//!
//! A reload builds a new `Catalog` off to the side; the gateway swaps it in atomically, and calls
//! in flight finish on the one they started with. This module does no I/O on the request path and
//! knows nothing about protocols or backends' connections.

mod load;
mod merge;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost_reflect::{DescriptorPool, MethodDescriptor, ServiceDescriptor};

use crate::builtin::{self, Local};
use crate::config::{Config, ServiceRule};
use crate::observe::metrics::Metrics;

pub use load::{compile_set, is_descriptor_file, proto_sources, touches_catalog};

/// Why a catalog could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Other(String),
}

impl CatalogError {
    pub(crate) fn file(path: &Path, message: impl fmt::Display) -> Self {
        Self::File { path: path.to_owned(), message: message.to_string() }
    }
}

/// A method the gateway can route, with everything a call needs to know about it.
#[derive(Debug)]
pub struct MethodRoute {
    /// `/package.Service/Method`, the HTTP/2 path of the gRPC call, parsed once for the requests
    /// to backends.
    pub path_and_query: http::uri::PathAndQuery,
    pub descriptor: MethodDescriptor,
    /// The config rule whose backends serve this method's service; None when no rule matches.
    pub rule: Option<Arc<ServiceRule>>,
    /// Set for the services the gateway answers itself (health, reflection): no backend.
    pub local: Option<Local>,
    /// This method's counters, the same across reloads (`observe::metrics`).
    pub metrics: Arc<crate::observe::metrics::MethodMetrics>,
}

/// A service and the rule that routes it.
#[derive(Debug, Clone)]
pub struct ServiceEntry {
    pub descriptor: ServiceDescriptor,
    pub rule: Option<Arc<ServiceRule>>,
}

impl MethodRoute {
    /// `/package.Service/Method`.
    pub fn path(&self) -> &str {
        self.path_and_query.path()
    }
}

/// What a gRPC path resolves to.
pub enum Lookup<'a> {
    Method(&'a Arc<MethodRoute>),
    UnknownMethod {
        service: &'a str,
        method: &'a str,
    },
    UnknownService {
        service: &'a str,
    },
    /// Not of the form `/service/method` at all.
    Malformed,
}

/// One snapshot of the loaded descriptors.
pub struct Catalog {
    pool: DescriptorPool,
    services: Vec<ServiceEntry>,
    methods: HashMap<Box<str>, Arc<MethodRoute>>,
    /// The files it was built from.
    pub sources: Vec<PathBuf>,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog").field("services", &self.services.len()).field("methods", &self.methods.len()).finish()
    }
}

impl Catalog {
    /// Loads every descriptor the config names and builds a snapshot.
    pub fn load(config: &Config, metrics: &Metrics) -> Result<Self, CatalogError> {
        let files = load::load(&config.descriptors, &config.proto_include)?;
        let mut sources: Vec<PathBuf> = files.iter().map(|f| f.origin.clone()).collect();
        sources.dedup();
        let pool = merge::merge(files)?;
        Self::from_pool(pool, config, sources, metrics)
    }

    /// Builds a snapshot from an already merged pool: the loaded services routed by the config,
    /// and the gateway's own (health, and reflection over this pool).
    pub fn from_pool(
        pool: DescriptorPool,
        config: &Config,
        sources: Vec<PathBuf>,
        metrics: &Metrics,
    ) -> Result<Self, CatalogError> {
        let mut services: Vec<ServiceEntry> = pool
            .services()
            .filter(|descriptor| !builtin::is_builtin(descriptor.full_name()))
            .map(|descriptor| {
                let rule = config.rule_for(descriptor.full_name()).cloned();
                ServiceEntry { descriptor, rule }
            })
            .collect();
        services.sort_by(|a, b| a.descriptor.full_name().cmp(b.descriptor.full_name()));
        let (reflection_v1, reflection_v1alpha) =
            builtin::reflection(&pool.encode_to_vec()).map_err(CatalogError::Other)?;
        let own = builtin::pool().services().map(|descriptor| {
            let local = match descriptor.full_name() {
                builtin::REFLECTION_V1 => Local::Reflection(reflection_v1.clone()),
                builtin::REFLECTION_V1ALPHA => Local::Reflection(reflection_v1alpha.clone()),
                _ => Local::Health,
            };
            (descriptor, None, Some(local))
        });
        let loaded = services.iter().map(|s| (s.descriptor.clone(), s.rule.clone(), None));
        let mut methods = HashMap::new();
        for (service, rule, local) in loaded.chain(own) {
            for descriptor in service.methods() {
                let path: Box<str> = format!("/{}/{}", service.full_name(), descriptor.name()).into();
                // Service and method names are identifiers: always a valid path.
                let path_and_query = http::uri::PathAndQuery::try_from(&*path)
                    .unwrap_or_else(|_| http::uri::PathAndQuery::from_static("/"));
                let metrics = metrics.method(&descriptor);
                let route =
                    MethodRoute { path_and_query, descriptor, rule: rule.clone(), local: local.clone(), metrics };
                methods.insert(path, Arc::new(route));
            }
        }
        Ok(Catalog { pool, services, methods, sources })
    }

    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// Every service, sorted by full name.
    pub fn services(&self) -> &[ServiceEntry] {
        &self.services
    }

    /// Resolves a gRPC request path.
    pub fn lookup<'a>(&'a self, path: &'a str) -> Lookup<'a> {
        if let Some(route) = self.methods.get(path) {
            return Lookup::Method(route);
        }
        let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
            return Lookup::Malformed;
        };
        if self.pool.get_service_by_name(service).is_some() || builtin::is_builtin(service) {
            Lookup::UnknownMethod { service, method }
        } else {
            Lookup::UnknownService { service }
        }
    }
}

/// The leading comment at a descriptor's source path, when the set carries source info.
pub fn comment_at(file: &prost_reflect::FileDescriptor, path: &[i32]) -> Option<String> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let location = info.location.iter().find(|l| l.path == path)?;
    let text = location.leading_comments.as_deref().or(location.trailing_comments.as_deref())?;
    let text = text.lines().map(str::trim).collect::<Vec<_>>().join("\n").trim().to_owned();
    (!text.is_empty()).then_some(text)
}
