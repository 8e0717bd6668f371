//! Watches the descriptor paths and calls back when a descriptor file appears, changes or goes.
//!
//! Events are debounced: a file copied in several writes, or a folder of files dropped at once,
//! causes one reload, not one per write. A half-written file can still be seen; the reload then
//! fails, the old catalog keeps serving, and the write's final event triggers another reload.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use super::{CatalogError, is_descriptor_file};

/// Quiet time after the last event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Keeps the OS watches alive; dropping it stops watching.
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `paths` (folders recursively, files through their folder) and runs
/// `on_change` on a blocking thread after each burst of changes.
pub fn watch<F>(paths: &[PathBuf], on_change: F) -> Result<Watcher, CatalogError>
where
    F: Fn() + Send + Sync + Clone + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let files: Vec<PathBuf> = paths.iter().filter(|p| !p.is_dir()).cloned().collect();
    let mut inner = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        if event.paths.iter().any(|p| relevant(p, &files)) {
            let _ = tx.send(());
        }
    })
    .map_err(|e| CatalogError::Other(format!("cannot watch descriptors: {e}")))?;
    for path in paths {
        let (target, mode) = if path.is_dir() {
            (path.as_path(), RecursiveMode::Recursive)
        } else {
            (path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")), RecursiveMode::NonRecursive)
        };
        inner.watch(target, mode).map_err(|e| CatalogError::file(target, format!("cannot watch: {e}")))?;
    }
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Swallow the rest of the burst.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            let on_change = on_change.clone();
            let _ = tokio::task::spawn_blocking(on_change).await;
        }
    });
    Ok(Watcher { _inner: inner, task })
}

/// A descriptor file or a folder (which may bring files of its own: inotify cannot report files
/// written into a folder before its watch is set up) under a watched folder, or a watched file.
/// Editor swap files and other non-descriptor files are ignored.
fn relevant(path: &Path, files: &[PathBuf]) -> bool {
    let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
    let folder = path.extension().is_none();
    !hidden && (is_descriptor_file(path) || folder || files.iter().any(|f| f == path))
}
