//! Watches files and folders and calls back after each burst of changes: the descriptors (the
//! catalog reloads), the config file, the TLS listener's certificate files.
//!
//! Events are debounced: a file copied in several writes, or a folder of files dropped at once,
//! causes one reload, not one per write. A half-written file can still be seen; the reload then
//! fails, the old state keeps serving, and the write's final event triggers another reload.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
    _source: os::Source,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `paths` (folders recursively, files through their folder) and runs
/// `on_change` on a blocking thread after each burst of changes to a path `relevant` accepts
/// (or when the system lost events and cannot say which). Must be called inside a tokio runtime
/// with its IO driver on.
pub fn watch<R, F>(paths: &[PathBuf], relevant: R, on_change: F) -> Result<Watcher, String>
where
    R: Fn(&Path) -> bool + Send + 'static,
    F: Fn() + Send + Sync + Clone + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let source = os::start(paths, move |path: Option<&Path>| {
        if path.is_none_or(&relevant) {
            let _ = tx.send(());
        }
    })?;
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Swallow the rest of the burst.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            let on_change = on_change.clone();
            let _ = tokio::task::spawn_blocking(on_change).await;
        }
    });
    Ok(Watcher { _source: source, task })
}

/// The folder a file is watched through, as the file names it: empty for a bare `gateway.yaml`,
/// so that its events name it `gateway.yaml` again, not `./gateway.yaml`.
fn folder_of(file: &Path) -> &Path {
    file.parent().unwrap_or(Path::new(""))
}

/// The folder to ask the OS to watch: `.` for the empty name of the working folder.
fn watchable(folder: &Path) -> &Path {
    if folder.as_os_str().is_empty() { Path::new(".") } else { folder }
}

/// Linux: inotify, asked only for the events that can change what a file holds or whether it is
/// there — a file written and closed, created, deleted or moved — and not for every `write`
/// (`IN_MODIFY`) or `open`: a log file in the config's folder would otherwise wake the watcher
/// at every line it gets (notify-rs asks for both, and cannot be told otherwise). So a file kept
/// open and written to, written through `mmap`, or only `chmod`ed is not seen until closed.
#[cfg(target_os = "linux")]
mod os {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
    use tokio_stream::StreamExt;

    const MASK: WatchMask = WatchMask::CLOSE_WRITE
        .union(WatchMask::CREATE)
        .union(WatchMask::DELETE)
        .union(WatchMask::MOVED_FROM)
        .union(WatchMask::MOVED_TO)
        .union(WatchMask::DELETE_SELF)
        .union(WatchMask::MOVE_SELF);

    /// The task reading the events; aborted when dropped.
    pub(super) struct Source(tokio::task::JoinHandle<()>);

    impl Drop for Source {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    /// Each watched folder, and whether its sub-folders are watched too.
    #[derive(Default)]
    struct Folders(HashMap<WatchDescriptor, (PathBuf, bool)>);

    impl Folders {
        /// Watches `folder` (and, `recursive`, every folder under it, through symbolic links as
        /// the catalog reads them), and returns the files found in the folders newly watched.
        fn add(&mut self, watches: &mut Watches, folder: &Path, recursive: bool) -> std::io::Result<Vec<PathBuf>> {
            let wd = watches.add(super::watchable(folder), MASK)?;
            let was_recursive = self.0.get(&wd).is_some_and(|(_, r)| *r);
            self.0.insert(wd, (folder.to_owned(), was_recursive || recursive));
            let mut files = Vec::new();
            // A folder already walked (a link back up the tree, say) is not walked again.
            if recursive && !was_recursive {
                for sub in std::fs::read_dir(super::watchable(folder))?.flatten().map(|e| e.path()) {
                    if sub.is_dir() {
                        // A sub-folder that cannot be watched is skipped, as notify-rs does.
                        files.extend(self.add(watches, &sub, true).unwrap_or_default());
                    } else {
                        files.push(sub);
                    }
                }
            }
            Ok(files)
        }
    }

    pub(super) fn start(paths: &[PathBuf], changed: impl Fn(Option<&Path>) + Send + 'static) -> Result<Source, String> {
        let inotify = Inotify::init().map_err(|e| format!("cannot watch files: {e}"))?;
        let mut watches = inotify.watches();
        let mut folders = Folders::default();
        for path in paths {
            let (folder, recursive) =
                if path.is_dir() { (path.as_path(), true) } else { (super::folder_of(path), false) };
            folders
                .add(&mut watches, folder, recursive)
                .map_err(|e| format!("{}: cannot watch: {e}", super::watchable(folder).display()))?;
        }
        let mut events = inotify.into_event_stream(vec![0; 4096]).map_err(|e| format!("cannot watch files: {e}"))?;
        Ok(Source(tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(e) => {
                        tracing::error!(error = %e, "file watching stopped: changes are no longer reloaded");
                        return;
                    }
                };
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    changed(None);
                    continue;
                }
                if event.mask.contains(EventMask::IGNORED) {
                    folders.0.remove(&event.wd);
                    continue;
                }
                let Some((folder, recursive)) = folders.0.get(&event.wd).cloned() else { continue };
                let path = event.name.map_or_else(|| folder.clone(), |name| folder.join(name));
                if recursive && event.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) && path.is_dir() {
                    // Files put there before the watch was: looked at now.
                    for file in folders.add(&mut watches, &path, true).unwrap_or_default() {
                        changed(Some(&file));
                    }
                }
                changed(Some(&path));
            }
            tracing::error!("file watching ended: changes are no longer reloaded");
        })))
    }
}

/// Elsewhere: notify-rs.
#[cfg(not(target_os = "linux"))]
mod os {
    use std::path::{Path, PathBuf};

    use notify::{EventKind, RecursiveMode, Watcher as _};

    pub(super) type Source = notify::RecommendedWatcher;

    pub(super) fn start(paths: &[PathBuf], changed: impl Fn(Option<&Path>) + Send + 'static) -> Result<Source, String> {
        let mut inner = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            event.paths.iter().for_each(|p| changed(Some(p)));
        })
        .map_err(|e| format!("cannot watch files: {e}"))?;
        for path in paths {
            let (target, mode) = if path.is_dir() {
                (path.as_path(), RecursiveMode::Recursive)
            } else {
                (super::watchable(super::folder_of(path)), RecursiveMode::NonRecursive)
            };
            inner.watch(target, mode).map_err(|e| format!("{}: cannot watch: {e}", target.display()))?;
        }
        Ok(inner)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn a_file_named_without_a_folder_is_known_by_its_events_names() {
        // The watcher names an event `folder_of(file).join(name)`: the name the file was given.
        let event = |file: &str| folder_of(Path::new(file)).join(Path::new(file).file_name().expect("a file"));
        assert_eq!(event("gateway.yaml"), Path::new("gateway.yaml"));
        assert_eq!(event("conf/gateway.yaml"), Path::new("conf/gateway.yaml"));
        assert_eq!(event("/etc/dragoman/tls.pem"), Path::new("/etc/dragoman/tls.pem"));
        assert_eq!(watchable(folder_of(Path::new("gateway.yaml"))), Path::new("."), "watched through `.`");
        let files = [PathBuf::from("gateway.yaml")];
        assert!(touches_files(&event("gateway.yaml"), &files));
        assert!(!touches_files(Path::new("gateway.yaml.swp"), &files));
    }

    // notify-rs, used elsewhere, reports every write.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_log_written_beside_the_config_does_not_wake_the_watcher_a_new_config_does() {
        let folder = tempfile::tempdir().expect("temp folder");
        let config = folder.path().join("dragoman.yaml");
        std::fs::write(&config, "a: 1\n").expect("config");
        let mut log = std::fs::File::create(folder.path().join("dragoman.log")).expect("log");
        let (looked_at, changes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (seen, changed) = (looked_at.clone(), changes.clone());
        let config_path = config.clone();
        let _watcher = watch(
            std::slice::from_ref(&config),
            move |path| {
                seen.fetch_add(1, Ordering::SeqCst);
                path == config_path
            },
            move || {
                changed.fetch_add(1, Ordering::SeqCst);
            },
        )
        .expect("watching");
        for n in 0..200 {
            writeln!(log, "line {n}").expect("log line");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(looked_at.load(Ordering::SeqCst), 0, "no event for lines appended to an open log");
        std::fs::write(&config, "a: 2\n").expect("new config");
        for _ in 0..100 {
            if changes.load(Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(changes.load(Ordering::SeqCst), 1, "one reload for the config written");
    }
}

#[cfg(all(test, target_os = "linux"))]
mod linux_tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Watches `folder` recursively; returns what the filter was shown.
    fn shown(folder: &Path) -> (Watcher, Arc<Mutex<Vec<PathBuf>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let watcher = watch(
            &[folder.to_owned()],
            move |path| {
                log.lock().expect("seen").push(path.to_owned());
                false
            },
            || {},
        )
        .expect("watching");
        (watcher, seen)
    }

    async fn wait_for(seen: &Mutex<Vec<PathBuf>>, path: &Path) {
        for _ in 0..100 {
            if seen.lock().expect("seen").iter().any(|p| p == path) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{} not seen: {:?}", path.display(), seen.lock().expect("seen"));
    }

    #[tokio::test]
    async fn renames_new_folders_and_what_was_in_them_are_seen() {
        let root = tempfile::tempdir().expect("temp folder");
        let outside = tempfile::tempdir().expect("temp folder");
        let folder = root.path().join("descriptors");
        std::fs::create_dir(&folder).expect("folder");
        let (_watcher, seen) = shown(&folder);
        // Written elsewhere, renamed in (how deploy tools replace a file).
        std::fs::write(outside.path().join("a.binpb"), b"a").expect("write");
        std::fs::rename(outside.path().join("a.binpb"), folder.join("a.binpb")).expect("rename");
        wait_for(&seen, &folder.join("a.binpb")).await;
        // A folder made, then a file written into it.
        std::fs::create_dir(folder.join("v2")).expect("sub-folder");
        wait_for(&seen, &folder.join("v2")).await;
        std::fs::write(folder.join("v2/b.binpb"), b"b").expect("write");
        wait_for(&seen, &folder.join("v2/b.binpb")).await;
        // A folder filled elsewhere and moved in: its files are looked at too.
        std::fs::create_dir(outside.path().join("v3")).expect("folder");
        std::fs::write(outside.path().join("v3/c.binpb"), b"c").expect("write");
        std::fs::rename(outside.path().join("v3"), folder.join("v3")).expect("move");
        wait_for(&seen, &folder.join("v3/c.binpb")).await;
    }
}
