//! Point allocation: a pair of instances holds one point of a covering license while at
//! least one of its flows is enabled.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rustc_hash::FxHashMap;

use super::reasons::InvalidReason;
use crate::catalog::SystemPair;

/// A pair license as the point planner sees it.
#[derive(Debug, Clone)]
pub struct PointSource {
    /// License id; breaks ties between licenses that expire together.
    pub id: String,
    /// The system types the license covers (shared with the flows of those types, where the
    /// compiler has them, so that the comparison usually is by address).
    pub systems: Arc<SystemPair>,
    /// Points the license grants.
    pub points: u32,
    /// When it expires; the license expiring first lends its points first.
    pub expire: DateTime<Utc>,
    /// `None` when the license is valid now, else why it covers nothing.
    pub invalid: Option<InvalidReason>,
}

/// Why a pair could not get a point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointRefusal {
    /// No valid license covers the pair's system types; the `license-invalid` reason.
    LicenseInvalid(InvalidReason),
    /// Valid licenses cover the pair but all their points are held by other pairs.
    PointsExhausted,
}

/// A pair holding a point: from which license, for how many enabled flows.
#[derive(Debug, Clone, Copy)]
struct Holding {
    license: usize,
    flows: u32,
}

/// Who holds which point; the pure core of enabling and disabling flows under pair licenses.
/// A pair of instances is named by its number: the compiler numbers a config's pairs densely
/// from 0 once, so holdings are a vector indexed by pair.
#[derive(Debug, Clone)]
pub struct PointLedger {
    sources: Vec<PointSource>,
    used: Vec<u32>,
    /// By pair number.
    holdings: Vec<Option<Holding>>,
    /// The licenses covering each system pair, in `sources` order.
    covering: FxHashMap<SystemPair, Vec<usize>>,
}

impl PointLedger {
    /// A ledger over these licenses with every point free.
    pub fn new(sources: Vec<PointSource>) -> PointLedger {
        let used = vec![0; sources.len()];
        let mut covering: FxHashMap<SystemPair, Vec<usize>> = FxHashMap::default();
        for (index, source) in sources.iter().enumerate() {
            covering
                .entry((*source.systems).clone())
                .or_default()
                .push(index);
        }
        PointLedger {
            sources,
            used,
            holdings: Vec::new(),
            covering,
        }
    }

    /// Makes room for pairs numbered below `pairs` to hold points without growing on the way.
    pub fn reserve(&mut self, pairs: usize) {
        if self.holdings.len() < pairs {
            self.holdings.resize(pairs, None);
        }
    }

    /// The holding slot of `pair`, made on first use.
    fn slot(&mut self, pair: u32) -> &mut Option<Holding> {
        let index = pair as usize;
        if index >= self.holdings.len() {
            self.holdings.resize(index + 1, None);
        }
        &mut self.holdings[index]
    }

    /// The licenses covering `systems`, in `sources` order.
    fn covering(&self, systems: &SystemPair) -> &[usize] {
        self.covering.get(systems).map_or(&[], Vec::as_slice)
    }

    /// Enables one more flow of `pair`; returns the index of the license whose point the pair holds.
    ///
    /// The first flow of a pair takes a point from the covering valid license with free points
    /// that expires first (ties: lowest id); later flows of the pair share it.
    pub fn enable(&mut self, pair: u32, systems: &SystemPair) -> Result<usize, PointRefusal> {
        if let Some(holding) = self.slot(pair) {
            holding.flows += 1;
            return Ok(holding.license);
        }
        let license = self.pick(systems)?;
        self.used[license] += 1;
        *self.slot(pair) = Some(Holding { license, flows: 1 });
        Ok(license)
    }

    /// Seats `pair` on `license` again (the license it held before a recompile) if that license
    /// still covers it, is valid and has a free point; later [`PointLedger::enable`] calls for
    /// the pair then share it. Without this, a recompile could move points between licenses.
    pub fn keep(&mut self, pair: u32, systems: &SystemPair, license: usize) -> bool {
        let Some(source) = self.sources.get(license) else {
            return false;
        };
        let fits = source.invalid.is_none()
            && self.used[license] < source.points
            && (std::ptr::eq(&*source.systems, systems) || *source.systems == *systems);
        if !fits || self.slot(pair).is_some() {
            return false;
        }
        self.used[license] += 1;
        *self.slot(pair) = Some(Holding { license, flows: 0 });
        true
    }

    /// Disables one flow of `pair`; the point is released with the pair's last enabled flow.
    pub fn disable(&mut self, pair: u32) {
        let Some(slot) = self.holdings.get_mut(pair as usize) else {
            return;
        };
        if let Some(holding) = slot {
            holding.flows = holding.flows.saturating_sub(1);
            if holding.flows == 0 {
                self.used[holding.license] -= 1;
                *slot = None;
            }
        }
    }

    /// Releases the points of pairs seated by [`PointLedger::keep`] that no flow enabled.
    pub fn release_idle(&mut self) {
        for slot in &mut self.holdings {
            if let Some(holding) = slot.filter(|holding| holding.flows == 0) {
                self.used[holding.license] -= 1;
                *slot = None;
            }
        }
    }

    /// The license whose point this pair holds, if any.
    pub fn holder(&self, pair: u32) -> Option<usize> {
        self.holdings
            .get(pair as usize)
            .copied()
            .flatten()
            .map(|holding| holding.license)
    }

    /// Points of license `index` held by pairs.
    pub fn used(&self, index: usize) -> u32 {
        self.used[index]
    }

    /// The licenses, in the order given to [`PointLedger::new`].
    pub fn sources(&self) -> &[PointSource] {
        &self.sources
    }

    fn pick(&self, systems: &SystemPair) -> Result<usize, PointRefusal> {
        let covering = self.covering(systems);
        let free = covering
            .iter()
            .copied()
            .filter(|&i| self.sources[i].invalid.is_none() && self.used[i] < self.sources[i].points)
            .min_by(|&a, &b| {
                let (a, b) = (&self.sources[a], &self.sources[b]);
                a.expire.cmp(&b.expire).then_with(|| a.id.cmp(&b.id))
            });
        if let Some(index) = free {
            return Ok(index);
        }
        if covering.iter().any(|&i| self.sources[i].invalid.is_none()) {
            return Err(PointRefusal::PointsExhausted);
        }
        let reason = self
            .invalid_cover(systems)
            .and_then(|i| self.sources[i].invalid)
            .unwrap_or(InvalidReason::Missing);
        Err(PointRefusal::LicenseInvalid(reason))
    }

    /// Where every license covering `systems` is invalid, the one a refusal names: the latest
    /// to expire (ties: lowest id), the one the operator most likely meant. `None` where none covers.
    pub fn invalid_cover(&self, systems: &SystemPair) -> Option<usize> {
        self.covering(systems).iter().copied().max_by_key(|&i| {
            (
                self.sources[i].expire,
                std::cmp::Reverse(self.sources[i].id.clone()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(year: i32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(year, 1, 1, 0, 0, 0).single().unwrap()
    }

    fn source(id: &str, a: &str, b: &str, points: u32, expire: i32) -> PointSource {
        PointSource {
            id: id.into(),
            systems: Arc::new(SystemPair::new(a, b)),
            points,
            expire: at(expire),
            invalid: None,
        }
    }

    fn sn_jira() -> SystemPair {
        SystemPair::new("servicenow", "jira")
    }

    // Pairs of instances, numbered as the compiler numbers a config's pairs.
    const SN1_JIRA1: u32 = 0;
    const SN1_JIRA2: u32 = 1;
    const SN2_JIRA2: u32 = 2;
    const OTHER: u32 = 3;
    const IDLE: u32 = 4;

    #[test]
    fn flows_of_one_pair_share_a_point_released_with_the_last() {
        let mut ledger = PointLedger::new(vec![source("L1", "jira", "servicenow", 1, 2030)]);
        let pair = SN1_JIRA1;
        assert_eq!(ledger.enable(pair, &sn_jira()), Ok(0));
        assert_eq!(ledger.enable(pair, &sn_jira()), Ok(0));
        assert_eq!(ledger.used(0), 1);
        ledger.disable(pair);
        assert_eq!(ledger.used(0), 1, "one flow of the pair is still enabled");
        ledger.disable(pair);
        assert_eq!(ledger.used(0), 0);
        assert_eq!(ledger.holder(pair), None);
        ledger.disable(pair);
        ledger.disable(1_000);
        assert_eq!(
            ledger.used(0),
            0,
            "disabling what holds nothing frees nothing"
        );
    }

    #[test]
    fn a_second_pair_needs_a_second_point() {
        let mut ledger = PointLedger::new(vec![source("L1", "servicenow", "jira", 1, 2030)]);
        assert!(ledger.enable(SN1_JIRA1, &sn_jira()).is_ok());
        assert_eq!(
            ledger.enable(SN1_JIRA2, &sn_jira()),
            Err(PointRefusal::PointsExhausted)
        );
        ledger.disable(SN1_JIRA1);
        assert_eq!(ledger.enable(SN1_JIRA2, &sn_jira()), Ok(0));
    }

    #[test]
    fn points_of_licenses_for_one_system_pair_add_up_expiring_first_lends_first() {
        let mut ledger = PointLedger::new(vec![
            source("L-late", "jira", "servicenow", 1, 2031),
            source("L-early", "ServiceNow", "JIRA", 1, 2029),
            source("L-other", "netsuite", "servicenow", 5, 2028),
        ]);
        assert_eq!(ledger.enable(SN1_JIRA1, &sn_jira()), Ok(1));
        assert_eq!(ledger.enable(SN1_JIRA2, &sn_jira()), Ok(0));
        assert_eq!(
            ledger.enable(SN2_JIRA2, &sn_jira()),
            Err(PointRefusal::PointsExhausted)
        );
    }

    #[test]
    fn kept_pairs_stay_on_their_license_and_new_pairs_take_the_earliest() {
        let mut ledger = PointLedger::new(vec![
            source("EARLY", "servicenow", "jira", 1, 2029),
            source("LATE", "servicenow", "jira", 1, 2031),
        ]);
        let (kept, new) = (SN1_JIRA2, SN1_JIRA1);
        assert!(ledger.keep(kept, &sn_jira(), 1));
        assert!(!ledger.keep(kept, &sn_jira(), 0), "a pair holds one point");
        assert_eq!(ledger.enable(kept, &sn_jira()), Ok(1));
        assert_eq!(ledger.enable(new, &sn_jira()), Ok(0));
        assert!(!ledger.keep(OTHER, &sn_jira(), 1), "no free point left");
        assert!(
            !ledger.keep(OTHER, &SystemPair::new("x", "y"), 0),
            "does not cover"
        );
        ledger.disable(kept);
        assert_eq!(ledger.used(1), 0);
        assert!(ledger.keep(IDLE, &sn_jira(), 1));
        ledger.release_idle();
        assert_eq!(
            ledger.used(1),
            0,
            "a kept pair no flow enabled gives its point back"
        );
        assert_eq!(ledger.holder(new), Some(0));
    }

    #[test]
    fn ties_on_expiry_go_to_the_lowest_id() {
        let mut ledger = PointLedger::new(vec![
            source("B", "servicenow", "jira", 1, 2030),
            source("A", "servicenow", "jira", 1, 2030),
        ]);
        assert_eq!(ledger.enable(OTHER, &sn_jira()), Ok(1));
    }

    #[test]
    fn invalid_licenses_lend_nothing_and_name_the_reason() {
        let mut expired = source("OLD", "servicenow", "jira", 3, 2020);
        expired.invalid = Some(InvalidReason::Expired);
        let mut ledger = PointLedger::new(vec![expired]);
        assert_eq!(
            ledger.enable(OTHER, &sn_jira()),
            Err(PointRefusal::LicenseInvalid(InvalidReason::Expired))
        );
        assert_eq!(
            ledger.enable(OTHER, &SystemPair::new("a", "b")),
            Err(PointRefusal::LicenseInvalid(InvalidReason::Missing))
        );
    }
}
