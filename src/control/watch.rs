//! Background triggers of the control plane: the license directory watcher and the ticker
//! that notices licenses crossing their start or expiry.

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::Control;

/// Quiet time after a directory event before reloading, so one copy is one reload.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// How often license validity windows are re-checked.
const TICK: Duration = Duration::from_secs(1);

/// Watches the license directory and reloads licenses after changes; the returned watcher
/// must be kept alive.
pub fn spawn_license_watcher(control: Arc<Control>) -> Result<notify::RecommendedWatcher, String> {
    let dir = control.snapshot().config.licensing.license_dir.clone();
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    })
    .map_err(|err| format!("cannot watch {}: {err}", dir.display()))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|err| format!("cannot watch {}: {err}", dir.display()))?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            control.reload_licenses().await;
        }
    });
    Ok(watcher)
}

/// Ticks the control plane every second so expiry, start, month rollover and clock
/// rollback take effect on time.
pub fn spawn_boundary_ticker(control: Arc<Control>) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            control.tick().await;
        }
    });
}
