//! The license directory watcher: file-system events become commands to the control plane,
//! which debounces them (one copy, one reload).

use std::path::Path;
use std::sync::mpsc::Sender;

use notify::{RecursiveMode, Watcher};

use super::plane::Command;

/// Why the license directory cannot be watched (reloads then come from SIGHUP or the API).
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {}: {source}", dir.display())]
pub struct WatchError {
    /// The license directory.
    pub dir: std::path::PathBuf,
    /// notify's reason.
    pub source: notify::Error,
}

/// Watches `dir` and tells the control plane about every change; the watcher must be kept
/// alive (dropping it stops the watch).
pub(super) fn watch_license_dir(
    dir: &Path,
    commands: Sender<Command>,
) -> Result<notify::RecommendedWatcher, WatchError> {
    let failed = |source| WatchError {
        dir: dir.to_owned(),
        source,
    };
    // An error (events lost, the watch broken) is a reason to look as much as an event is.
    let mut watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
        let _ = commands.send(Command::LicenseDirChanged);
    })
    .map_err(failed)?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(failed)?;
    Ok(watcher)
}
