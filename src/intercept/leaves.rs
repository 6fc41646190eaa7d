//! The TLS server settings of each intercepted host: minted on a host's first tunnel and
//! kept, so that the engine's handshake (on the hot path: engines open a tunnel per request)
//! costs no key generation or signing after the first. Every host's settings share one
//! session-ticket key and one session cache, so engines resume their sessions.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rustls::crypto::ring as ring_provider;
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::ServerConfig;
use tokio::sync::OnceCell;

use super::Authority;

/// Hosts whose settings are kept at most. Tunnels are opened only to the authorities of
/// configured instances, so a configuration has far fewer hosts; the bound only matters when
/// reloads change the instances many times over a long run (each entry is a few KiB).
pub const MAX_LEAVES: usize = 1024;

/// TLS sessions kept for resumption by session id (TLS 1.2 clients without tickets); tickets
/// need no server memory.
const SESSION_CACHE: usize = 4096;

/// A leaf is minted again once this much of its validity is left ...
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// ... but never sooner than this after it was minted (a CA near its end gives short leaves).
const MIN_REUSE: Duration = Duration::from_secs(600);

/// Why no certificate could be had for a host.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// rcgen could not issue it.
    #[error("cannot issue a certificate for {host}: {source}")]
    Issue {
        /// The host.
        host: String,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// rustls refused the certificate and key.
    #[error("cannot use the certificate issued for {host}: {source}")]
    Tls {
        /// The host.
        host: String,
        /// rustls' reason.
        source: rustls::Error,
    },
}

/// One host's settings, with when to mint them again.
struct Minted {
    config: Arc<ServerConfig>,
    renew_at: SystemTime,
}

/// A host's entry: minted once however many tunnels ask for it at the same time.
type Slot = Arc<OnceCell<Minted>>;

/// The cache proper, under one lock held only to find or make a slot.
#[derive(Default)]
struct State {
    /// The CA the kept settings were minted with.
    authority: Option<Arc<Authority>>,
    slots: HashMap<Box<str>, Slot>,
    /// Hosts in the order they were minted, oldest first, for eviction at the bound.
    order: VecDeque<Box<str>>,
}

/// The per-host TLS server settings of tunnels, minted on first use and kept (bounded).
pub struct Leaves {
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions>,
    state: Mutex<State>,
}

impl Leaves {
    /// An empty cache with a fresh session-ticket key (rotated by rustls every 6 hours).
    pub fn new() -> Result<Leaves, rustls::Error> {
        Ok(Leaves {
            ticketer: ring_provider::Ticketer::new()?,
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE),
            state: Mutex::new(State::default()),
        })
    }

    /// The TLS server settings for `host` (a lowercase DNS name or an IP address without
    /// brackets) with a leaf issued by `authority`: minted on first use, once however many
    /// callers ask at the same time, and kept until it nears its end or the CA changes.
    pub async fn server_config(
        &self,
        authority: &Arc<Authority>,
        host: &str,
    ) -> Result<Arc<ServerConfig>, MintError> {
        let slot = self.slot(authority, host);
        let minted = slot
            .get_or_try_init(|| async { self.mint(authority, host) })
            .await?;
        Ok(minted.config.clone())
    }

    /// How many hosts have settings kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Finds or makes the host's slot; forgets everything minted with another CA, and the
    /// oldest host at the bound.
    fn slot(&self, authority: &Arc<Authority>, host: &str) -> Slot {
        let mut state = self.lock();
        let same_ca = state
            .authority
            .as_ref()
            .is_some_and(|kept| Arc::ptr_eq(kept, authority) || kept.same_as(authority));
        if !same_ca {
            *state = State {
                authority: Some(authority.clone()),
                ..State::default()
            };
        }
        if let Some(slot) = state.slots.get(host) {
            let due = slot
                .get()
                .is_some_and(|minted| SystemTime::now() >= minted.renew_at);
            if !due {
                return slot.clone();
            }
        } else {
            while state.order.len() >= MAX_LEAVES {
                if let Some(oldest) = state.order.pop_front() {
                    state.slots.remove(&oldest);
                }
            }
            state.order.push_back(host.into());
        }
        let slot = Slot::default();
        state.slots.insert(host.into(), slot.clone());
        slot
    }

    fn mint(&self, authority: &Authority, host: &str) -> Result<Minted, MintError> {
        let leaf = authority.issue(host).map_err(|source| MintError::Issue {
            host: host.to_owned(),
            source,
        })?;
        let tls = |source| MintError::Tls {
            host: host.to_owned(),
            source,
        };
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(ring_provider::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(tls)?
                .with_no_client_auth()
                .with_single_cert(vec![leaf.cert], leaf.key.into())
                .map_err(tls)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.ticketer = self.ticketer.clone();
        config.session_storage = self.sessions.clone();
        let minted_at = SystemTime::now();
        let left = leaf.not_after.duration_since(minted_at).unwrap_or_default();
        let reuse = left
            .saturating_sub(RENEW_BEFORE.min(left / 2))
            .max(MIN_REUSE);
        tracing::debug!(host, "minted a certificate for intercepted host");
        Ok(Minted {
            config: Arc::new(config),
            renew_at: minted_at + reuse,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is consistent after every statement; a panic elsewhere cannot break it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intercept::generate;

    fn authority(dir: &std::path::Path, name: &str) -> Arc<Authority> {
        let ca = generate().expect("a CA");
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, &ca.cert_pem).expect("write");
        std::fs::write(&key, &ca.key_pem).expect("write");
        Arc::new(Authority::load(&cert, &key).expect("loads"))
    }

    #[tokio::test]
    async fn a_host_is_minted_once_and_kept() {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let ca = authority(dir.path(), "ca");
        let leaves = Leaves::new().expect("a ticketer");
        let first = leaves
            .server_config(&ca, "jira.example")
            .await
            .expect("minted");
        let again = leaves
            .server_config(&ca, "jira.example")
            .await
            .expect("kept");
        assert!(Arc::ptr_eq(&first, &again));
        let other = leaves.server_config(&ca, "10.0.0.1").await.expect("minted");
        assert!(!Arc::ptr_eq(&first, &other));
        assert!(
            Arc::ptr_eq(&first.ticketer, &other.ticketer),
            "one ticket key"
        );
        assert_eq!(
            first.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(leaves.len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_first_uses_mint_once() {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let ca = authority(dir.path(), "ca");
        let leaves = Arc::new(Leaves::new().expect("a ticketer"));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (leaves, ca) = (leaves.clone(), ca.clone());
                tokio::spawn(async move {
                    leaves
                        .server_config(&ca, "jira.example")
                        .await
                        .expect("minted")
                })
            })
            .collect();
        let mut configs = Vec::new();
        for task in tasks {
            configs.push(task.await.expect("the task ran"));
        }
        assert!(
            configs.iter().all(|c| Arc::ptr_eq(c, &configs[0])),
            "every caller got the one certificate minted"
        );
    }

    #[tokio::test]
    async fn the_cache_is_bounded_and_forgets_the_oldest_host() {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let ca = authority(dir.path(), "ca");
        let leaves = Leaves::new().expect("a ticketer");
        let first = leaves
            .server_config(&ca, "h0.example")
            .await
            .expect("minted");
        for i in 1..=MAX_LEAVES {
            leaves
                .server_config(&ca, &format!("h{i}.example"))
                .await
                .expect("minted");
        }
        assert_eq!(leaves.len(), MAX_LEAVES);
        let again = leaves
            .server_config(&ca, "h0.example")
            .await
            .expect("minted");
        assert!(
            !Arc::ptr_eq(&first, &again),
            "the oldest host was forgotten"
        );
        assert_eq!(leaves.len(), MAX_LEAVES);
    }

    #[tokio::test]
    async fn another_ca_forgets_what_the_old_one_minted() {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let (one, two) = (authority(dir.path(), "one"), authority(dir.path(), "two"));
        let leaves = Leaves::new().expect("a ticketer");
        let first = leaves
            .server_config(&one, "jira.example")
            .await
            .expect("minted");
        let reloaded = Arc::new(
            Authority::load(&dir.path().join("one.pem"), &dir.path().join("one.key"))
                .expect("loads"),
        );
        let same = leaves
            .server_config(&reloaded, "jira.example")
            .await
            .expect("kept");
        assert!(
            Arc::ptr_eq(&first, &same),
            "the same files keep what was minted"
        );
        let other = leaves
            .server_config(&two, "jira.example")
            .await
            .expect("minted");
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(leaves.len(), 1);
    }
}
