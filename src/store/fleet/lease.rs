//! Exchanges with a license's lease book: a block for a sidecar whose lease ran dry (the
//! request path waits for it, bounded by `redis_timeout`), a top-up before it runs dry, the
//! return of idle leftovers, the shipping of counts, and the settlement after a restart.
//! Every exchange of a license happens under its lease's lock, so each one tells Redis what
//! the previous one left.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use redis::Value as RedisValue;

use super::book::{Claim, Settled};
use super::{BookView, Fleet, FleetError, FleetNotice, NodeLease, TrackedLicense};
use crate::clock::month_index_label;
use crate::meter::{LicenseMeter, MeterEvent, MeterEventKind};

/// A license's budget as the request path knows it.
#[derive(Debug, Clone, Copy)]
pub struct Budget<'a> {
    /// The license's meter.
    pub meter: &'a Arc<LicenseMeter>,
    /// The monthly limit.
    pub limit: Option<u64>,
    /// The hard limit.
    pub hard: Option<u64>,
}

impl<'a> From<&'a TrackedLicense> for Budget<'a> {
    fn from(tracked: &'a TrackedLicense) -> Budget<'a> {
        Budget {
            meter: &tracked.meter,
            limit: tracked.limit,
            hard: tracked.hard,
        }
    }
}

/// A stale answer is retried once with a sequence number past the one Redis has.
const STALE_RETRIES: usize = 1;

/// What asking the fleet for records came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refill {
    /// The lease holds the records now, or the fleet's budget is spent: the caller tries its
    /// reservation again (and is refused at the limit).
    Ready,
    /// The fleet cannot grant the batch at once: fewer records than it needs are left to this
    /// sidecar (its lease plus what the fleet has not granted to anyone).
    Short {
        /// What this sidecar could still have.
        remaining: u64,
    },
}

impl Fleet {
    /// Request path: the lease of `budget` holds fewer than `records` in `month`; asks Redis for
    /// a block large enough for them, answering within `redis_timeout` whatever Redis does.
    pub async fn replenish(
        &self,
        budget: Budget<'_>,
        month: u32,
        records: u64,
        deadline: Instant,
    ) -> Result<Refill, FleetError> {
        self.admissible()?;
        let Some(lease) = budget.meter.lease() else {
            return Ok(Refill::Ready);
        };
        let _turn = tokio::time::timeout_at(deadline.into(), lease.exchange.lock())
            .await
            .map_err(|_| FleetError::Timeout(self.settings.redis_timeout))?;
        let available = lease.available(month);
        if available >= records || lease.is_spent(month) {
            return Ok(Refill::Ready);
        }
        let need = records - available;
        let ask = self.settings.lease_max.max(need);
        let claim = Claim::Exact(lease.held(month));
        let settled = self
            .exchange(budget, month, claim, (ask, need), deadline)
            .await?;
        let available = lease.available(month);
        if available >= records || lease.is_spent(month) {
            return Ok(Refill::Ready);
        }
        let ungranted = budget
            .hard
            .map_or(0, |hard| hard.saturating_sub(settled.granted));
        Ok(Refill::Short {
            remaining: available + ungranted,
        })
    }

    /// Request path, after a draw: whether the lease is low enough to top up in the background.
    pub fn wants_top_up(&self, meter: &LicenseMeter, month: u32) -> bool {
        meter.lease().is_some_and(|lease| {
            lease.runs_low(month) && !lease.is_spent(month) && self.joined.load(Ordering::Acquire)
        })
    }

    /// Tops a lease up before it runs dry (spawned by the request path; skipped when another
    /// exchange of the license is under way).
    pub async fn top_up(&self, budget: Budget<'_>, month: u32) {
        let Some(lease) = budget.meter.lease() else {
            return;
        };
        if self.admissible().is_err() {
            return;
        }
        let Ok(_turn) = lease.exchange.try_lock() else {
            return;
        };
        let available = lease.available(month);
        let ask = self.settings.lease_max.saturating_sub(available);
        if ask == 0 || lease.is_spent(month) {
            return;
        }
        let claim = Claim::Exact(lease.held(month));
        if let Err(err) = self
            .exchange(budget, month, claim, (ask, 0), self.control_deadline())
            .await
        {
            tracing::debug!(license = %budget.meter.id, error = %err, "topping up the lease failed");
        }
    }

    /// Gives a lease's available records back to the fleet (idle, shutting down, or the clock
    /// is off); ships the counts on the way.
    pub(super) async fn give_back(
        &self,
        budget: Budget<'_>,
        month: u32,
    ) -> Result<u64, FleetError> {
        let Some(lease) = budget.meter.lease() else {
            return Ok(0);
        };
        let _turn = lease.exchange.lock().await;
        let back = lease.take_available(month);
        lease.returned(month, back);
        let claim = Claim::Exact(lease.held(month));
        self.exchange(budget, month, claim, (0, 0), self.control_deadline())
            .await?;
        Ok(back)
    }

    /// Ships a license's count and reads the fleet's (the agent, every round).
    pub(super) async fn ship(
        &self,
        budget: Budget<'_>,
        month: u32,
        ask_if_low: bool,
    ) -> Result<(), FleetError> {
        let Some(lease) = budget.meter.lease() else {
            return Ok(());
        };
        let _turn = lease.exchange.lock().await;
        let ask = if ask_if_low && budget.hard.is_some() && lease.runs_low(month) {
            self.settings
                .lease_max
                .saturating_sub(lease.available(month))
        } else {
            0
        };
        let claim = Claim::Exact(lease.held(month));
        self.exchange(budget, month, claim, (ask, 0), self.control_deadline())
            .await?;
        Ok(())
    }

    /// The first exchange after start: what this sidecar held before it stopped goes back
    /// (strict durability: its counts are exact) or stays spent (batched), and counts Redis
    /// has that the local store lost are taken over.
    pub(super) async fn settle_after_start(
        &self,
        budget: Budget<'_>,
        month: u32,
    ) -> Result<(), FleetError> {
        let Some(lease) = budget.meter.lease() else {
            return Ok(());
        };
        let _turn = lease.exchange.lock().await;
        let claim = if self.strict {
            Claim::Return
        } else {
            Claim::Keep
        };
        let settled = self
            .exchange(budget, month, claim, (0, 0), self.control_deadline())
            .await?;
        budget.meter.raise_committed(month, settled.mine);
        lease.set_held(month, settled.held);
        Ok(())
    }

    /// One exchange with a license's book (the caller holds the lease's lock): settles what
    /// this sidecar holds and has counted, asks for `ask` more (a block of at least `need`, or
    /// none), and takes in the answer.
    async fn exchange(
        &self,
        budget: Budget<'_>,
        month: u32,
        claim: Claim,
        (ask, need): (u64, u64),
        deadline: Instant,
    ) -> Result<Settled, FleetError> {
        let label = month_index_label(month);
        let key = self.keys.book(&budget.meter.id, &label);
        let committed = budget.meter.local_committed(month);
        let hard = budget
            .hard
            .map_or(-1, |hard| i64::try_from(hard).unwrap_or(i64::MAX));
        let ttl = u64::try_from(self.settings.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        let mut attempts = 0;
        let (settled, now_ms, nodes) = loop {
            let seq = self.next_seq();
            let mut connection = self.link.connection();
            let mut invocation = super::scripts::LEASE.key(&key);
            invocation
                .arg(&self.settings.node)
                .arg(seq)
                .arg(claim.encode())
                .arg(committed)
                .arg(ask)
                .arg(hard)
                .arg(self.settings.lease_max)
                .arg(ttl)
                .arg(need);
            let reply: Vec<RedisValue> = self
                .link
                .call(deadline, invocation.invoke_async(&mut connection))
                .await?;
            match parse_lease(&reply)? {
                LeaseReply::Stale(last) if attempts < STALE_RETRIES => {
                    self.skip_seq_past(last);
                    attempts += 1;
                }
                LeaseReply::Stale(last) => {
                    return Err(self.link.failed(FleetError::Protocol(format!(
                        "Redis keeps a later sequence number ({last}) for node {:?}: is another sidecar using the same node name?",
                        self.settings.node
                    ))))
                }
                LeaseReply::Settled(settled, now_ms, nodes) => break (settled, now_ms, nodes),
            }
        };
        self.check_clock(now_ms);
        let lease = budget.meter.lease();
        if let Some(lease) = lease {
            if settled.grant > 0 {
                lease.grant(month, settled.grant);
            }
            // Spent: nothing is left for the fleet to grant (a batch refused a block for want
            // of headroom leaves the budget open to smaller loads).
            if let Some(hard) = budget.hard {
                if ask > 0 || settled.granted < hard {
                    lease.set_spent(month, settled.granted >= hard);
                }
            }
        }
        budget
            .meter
            .set_others(month, settled.total.saturating_sub(settled.mine));
        let view = BookView {
            month: label,
            granted: settled.granted,
            nodes: nodes
                .into_iter()
                .map(|(node, held, committed, seen)| NodeLease {
                    live: now_ms.saturating_sub(seen) < ttl,
                    node,
                    held,
                    committed,
                })
                .collect(),
        };
        self.views().insert(budget.meter.id.clone(), view);
        self.report_crossings(budget, month, settled.total);
        Ok(settled)
    }

    /// Tells the control plane, once per month each, that the fleet's count reached the
    /// limit or the hard limit.
    fn report_crossings(&self, budget: Budget<'_>, month: u32, total: u64) {
        let (Some(limit), Some(hard)) = (budget.limit, budget.hard) else {
            return;
        };
        for (kind, threshold, is_hard) in [
            (MeterEventKind::Warning, limit, false),
            (MeterEventKind::Limit, hard, true),
        ] {
            if total < threshold {
                continue;
            }
            let first = self
                .crossed
                .lock()
                .map(|mut crossed| crossed.insert((budget.meter.id.clone(), month, is_hard)))
                .unwrap_or(false);
            if first {
                (self.notify)(FleetNotice::Crossed(MeterEvent {
                    kind,
                    license: budget.meter.id.clone(),
                    month,
                    used: total,
                    limit,
                    hard_limit: hard,
                }));
            }
        }
    }

    /// Refuses counted loads while the clock is off or the sidecar has not joined.
    fn admissible(&self) -> Result<(), FleetError> {
        if let Some(why) = self.skew.load_full() {
            return Err(FleetError::ClockSkew((*why).clone()));
        }
        if !self.joined.load(Ordering::Acquire) {
            return Err(FleetError::NotJoined);
        }
        Ok(())
    }

    /// Compares this sidecar's clock with Redis' (milliseconds since the epoch).
    fn check_clock(&self, redis_ms: u64) {
        let mine = self.clock.now().timestamp_millis();
        let redis = i64::try_from(redis_ms).unwrap_or(i64::MAX);
        let off = std::time::Duration::from_millis(mine.abs_diff(redis));
        // Exchanges start once the control plane has said what to track (with the skew).
        let Some(max_skew) = self.tracked.load().as_ref().map(|tracked| tracked.max_skew) else {
            return;
        };
        if off > max_skew {
            if self.skew.load().is_none() {
                let why = format!(
                    "this sidecar's clock is {} s {} Redis' clock, more than licensing.max_clock_skew ({} s): counted loads are refused until they agree",
                    off.as_secs(),
                    if mine > redis { "ahead of" } else { "behind" },
                    max_skew.as_secs()
                );
                tracing::error!(reason = %why, "clock skew with Redis");
                self.skew.store(Some(Arc::new(why)));
            }
        } else if self.skew.load().is_some() {
            tracing::info!(
                "this sidecar's clock agrees with Redis' again: counted loads are admitted"
            );
            self.skew.store(None);
        }
    }
}

/// The lease script's answer.
enum LeaseReply {
    /// Not applied: Redis has seen this sequence number (or a later one).
    Stale(u64),
    /// Applied, at Redis time (ms), with every node's line `(node, held, committed, seen)`.
    Settled(Settled, u64, Vec<(String, u64, u64, u64)>),
}

fn int(value: &RedisValue) -> Result<u64, FleetError> {
    match value {
        RedisValue::Int(n) => Ok(u64::try_from(*n).unwrap_or(0)),
        other => Err(FleetError::Protocol(format!(
            "expected a number, got {other:?}"
        ))),
    }
}

fn text(value: &RedisValue) -> Result<String, FleetError> {
    match value {
        RedisValue::BulkString(bytes) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        RedisValue::SimpleString(text) => Ok(text.clone()),
        other => Err(FleetError::Protocol(format!(
            "expected text, got {other:?}"
        ))),
    }
}

fn parse_lease(reply: &[RedisValue]) -> Result<LeaseReply, FleetError> {
    let status = reply.first().map(int).transpose()?;
    match status {
        Some(0) => Ok(LeaseReply::Stale(
            reply.get(1).map(int).transpose()?.unwrap_or(0),
        )),
        Some(1) if reply.len() >= 8 && (reply.len() - 8).is_multiple_of(4) => {
            let n: Vec<u64> = reply[1..8].iter().map(int).collect::<Result<_, _>>()?;
            let settled = Settled {
                grant: n[0],
                held: n[1],
                mine: n[2],
                total: n[3],
                granted: n[4],
                live: n[5],
            };
            let mut nodes = Vec::new();
            for line in reply[8..].chunks_exact(4) {
                nodes.push((
                    text(&line[0])?,
                    int(&line[1])?,
                    int(&line[2])?,
                    int(&line[3])?,
                ));
            }
            nodes.sort();
            Ok(LeaseReply::Settled(settled, n[6], nodes))
        }
        _ => Err(FleetError::Protocol(format!(
            "the lease script answered {reply:?}"
        ))),
    }
}
