//! The control plane: the one owner of the snapshot and of every change to it (start-up,
//! the license directory, SIGHUP, the admin API, time passing a license boundary or a month,
//! a license reaching its records limit). Its state lives on a thread of its own (see
//! `plane`), which does the compiling and all store and file work; the async world holds a
//! [`Control`] handle that sends commands and awaits replies, and the request path reads the
//! live snapshot through [`Shared`] without ever waiting on the control plane.

mod build;
mod changes;
mod error;
mod fleet;
mod metering;
mod plane;
mod reports;
mod restart;
mod settings;
mod shared;
#[cfg(test)]
mod tests;
mod watch;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::oneshot;

pub use error::{ControlError, Refusal};
pub use shared::{Live, Shared};

use crate::clock::Clock;
use plane::{Command, Plane, Reply};

/// The handle on a running control plane.
pub struct Control {
    shared: Arc<Shared>,
    commands: Sender<Command>,
    ready: AtomicBool,
    /// The plane's thread, joined by [`Control::stop`].
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Kept alive for as long as the license directory is watched.
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

impl Control {
    /// Starts the control plane's thread, which loads the config, its licenses and stored flow
    /// states and compiles the first snapshot; returns once it is live (or why it is not).
    pub async fn start(
        config_path: &Path,
        clock: Arc<dyn Clock>,
        lanes: usize,
    ) -> Result<Arc<Control>, ControlError> {
        let (commands, received) = mpsc::channel();
        let (started, start_result) = oneshot::channel();
        let path = config_path.to_owned();
        let plane_commands = commands.clone();
        let runtime = tokio::runtime::Handle::try_current().ok();
        let thread = std::thread::Builder::new()
            .name("tollgate-control".into())
            .spawn(
                move || match Plane::start(&path, clock, plane_commands, runtime, lanes) {
                    Ok(plane) => {
                        let dir = plane.config.licensing.license_dir.clone();
                        if started.send(Ok((plane.shared.clone(), dir))).is_ok() {
                            plane.run(received);
                        }
                    }
                    Err(err) => {
                        let _ = started.send(Err(err));
                    }
                },
            )
            .map_err(|err| ControlError::io(config_path, "cannot start the control thread", err))?;
        let (shared, dir) = start_result.await.map_err(|_| ControlError::Stopped)??;
        let watcher = match watch::watch_license_dir(&dir, commands.clone()) {
            Ok(watcher) => {
                let _ = commands.send(Command::Watching(dir));
                Some(watcher)
            }
            Err(err) => {
                tracing::warn!(error = %err, "license directory not watched; use SIGHUP or the admin API to reload");
                None
            }
        };
        Ok(Arc::new(Control {
            shared,
            commands,
            ready: AtomicBool::new(false),
            thread: Mutex::new(Some(thread)),
            watcher: Mutex::new(watcher),
        }))
    }

    /// What the request path shares.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// The current live snapshot.
    pub fn snapshot(&self) -> Arc<Live> {
        self.shared.live.load_full()
    }

    /// Marks the sidecar ready (listeners bound); `/readyz` answers 200 from then on.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether `/readyz` should answer 200: listeners bound and, in fleet mode, Redis
    /// reachable, the fleet joined and the clock in step with Redis'.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && self
                .shared
                .fleet
                .as_ref()
                .is_none_or(|fleet| fleet.is_ready())
    }

    /// Sends a command and awaits its reply.
    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)
    }

    /// Re-reads the config file (SIGHUP); a bad one is reported and the running one stays.
    pub async fn reload_config(&self) {
        if let Err(err) = self.ask(Command::ReloadConfig).await {
            tracing::error!(error = %err, "the configuration could not be reloaded");
        }
    }

    /// Enables a flow: refused when its pair cannot get a point or no valid license covers it.
    pub async fn enable_flow(&self, id: &str) -> Result<(), Refusal> {
        self.ask(|reply| Command::EnableFlow(id.to_owned(), reply))
            .await?
    }

    /// Disables a flow (operator); its pair's point is released with its last enabled flow.
    pub async fn disable_flow(&self, id: &str) -> Result<(), Refusal> {
        self.ask(|reply| Command::DisableFlow(id.to_owned(), reply))
            .await?
    }

    /// Verifies and installs a license file; returns its id and the flows it disabled.
    pub async fn upload_license(&self, bytes: Bytes) -> Result<(String, Vec<String>), Refusal> {
        self.ask(|reply| Command::UploadLicense(bytes, reply))
            .await?
    }

    /// Removes an installed license; flows holding its points are disabled (`license-removed`).
    pub async fn remove_license(&self, id: &str) -> Result<(), Refusal> {
        self.ask(|reply| Command::RemoveLicense(id.to_owned(), reply))
            .await?
    }

    /// The admin status: generation, rejected license files, reload notes, clock.
    pub async fn status(&self) -> Result<Value, ControlError> {
        self.ask(Command::Status).await
    }

    /// Records of a month per license and per flow (live counters or the store).
    pub async fn usage(&self, month: u32) -> Result<Value, ControlError> {
        Ok(self.ask(|reply| Command::Usage(month, reply)).await??)
    }

    /// A page of the audit trail, newest first.
    pub async fn audit(&self, limit: usize, before: Option<u64>) -> Result<Value, ControlError> {
        Ok(self
            .ask(|reply| Command::Audit(limit, before, reply))
            .await??)
    }

    /// Writes pending counts, the clock high-water mark and the journal, stops the plane's
    /// thread and joins it (shutdown).
    pub async fn stop(&self) -> Result<(), ControlError> {
        let flushed = self.ask(Command::Flush).await;
        if let Ok(mut watcher) = self.watcher.lock() {
            watcher.take();
        }
        let _ = self.commands.send(Command::Stop);
        let thread = self.thread.lock().ok().and_then(|mut thread| thread.take());
        if let Some(thread) = thread {
            if tokio::task::spawn_blocking(move || thread.join())
                .await
                .is_err()
            {
                tracing::warn!("the control thread could not be joined");
            }
        }
        Ok(flushed??)
    }
}
