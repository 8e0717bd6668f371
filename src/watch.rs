//! Watches files and folders and calls back after each burst of changes: the descriptors (the
//! catalog reloads), the config file, the TLS listener's certificate files.
//!
//! Events are debounced: a file copied in several writes, or a folder of files dropped at once,
//! causes one reload, not one per write. A half-written file can still be seen; the reload then
//! fails, the old state keeps serving, and the write's final event triggers another reload.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// Whether a change at `path` can touch one of `files` (watched through their folder): the file
/// itself, or a Kubernetes volume's `..data` symlink swapped over, which the files point through.
pub fn touches_files(path: &Path, files: &[PathBuf]) -> bool {
    files.iter().any(|f| f == path) || path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(".."))
}

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
/// `on_change` on a blocking thread after each burst of changes to a path `relevant` accepts.
/// Must be called inside a tokio runtime.
pub fn watch<R, F>(paths: &[PathBuf], relevant: R, on_change: F) -> Result<Watcher, String>
where
    R: Fn(&Path) -> bool + Send + 'static,
    F: Fn() + Send + Sync + Clone + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut inner = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        if event.paths.iter().any(|p| relevant(p)) {
            let _ = tx.send(());
        }
    })
    .map_err(|e| format!("cannot watch files: {e}"))?;
    for path in paths {
        let (target, mode) = if path.is_dir() {
            (path.as_path(), RecursiveMode::Recursive)
        } else {
            (path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")), RecursiveMode::NonRecursive)
        };
        inner.watch(target, mode).map_err(|e| format!("{}: cannot watch: {e}", target.display()))?;
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
