//! Counts as the writer gathers them: records per (license, flow, month, day), with typed keys
//! so that nothing is formatted per load; the store's `license|YYYY-MM`-style table keys are
//! made once per key when counts are folded into redb.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;

/// What counted records are counted under.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CountKey {
    /// The license whose budget the records used, if any.
    pub license: Option<Arc<str>>,
    /// The flow they belong to.
    pub flow: Arc<str>,
    /// The month whose budget they count against (`year * 12 + month0`, as `meter` keeps it).
    pub month: u32,
    /// The local day they were counted on (the console's daily chart).
    pub day: NaiveDate,
}

/// Records to add to the store, per key: a commit batch, a journal frame, or everything not
/// yet folded into redb.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CountBatch {
    counts: BTreeMap<CountKey, u64>,
}

impl CountBatch {
    /// Adds `records` under `key`.
    pub fn add(&mut self, key: CountKey, records: u64) {
        *self.counts.entry(key).or_default() += records;
    }

    /// Adds every count of `other` into this batch.
    pub fn merge(&mut self, other: &CountBatch) {
        for (key, records) in &other.counts {
            match self.counts.get_mut(key) {
                Some(sum) => *sum += records,
                None => {
                    self.counts.insert(key.clone(), *records);
                }
            }
        }
    }

    /// Whether there is nothing to add.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// How many distinct keys the batch holds.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Every key with its records, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&CountKey, u64)> {
        self.counts.iter().map(|(key, records)| (key, *records))
    }

    /// Moves the upper half of the keys into a batch of their own (for a batch larger than the
    /// journal, which goes there in parts).
    pub fn split_off_half(&mut self) -> CountBatch {
        let middle = self.counts.keys().nth(self.counts.len() / 2).cloned();
        CountBatch {
            counts: middle
                .map(|key| self.counts.split_off(&key))
                .unwrap_or_default(),
        }
    }

    /// Forgets every count (after they were stored).
    pub fn clear(&mut self) {
        self.counts.clear();
    }

    /// The three sums the store keeps, with their table keys: per `license|YYYY-MM`, per
    /// `flow|YYYY-MM` and per `license|YYYY-MM-DD`.
    pub(super) fn tables(&self) -> TableSums {
        let mut sums = TableSums::default();
        for (key, records) in self.iter() {
            let month = crate::clock::month_index_label(key.month);
            if let Some(license) = &key.license {
                *sums
                    .license_months
                    .entry(format!("{license}|{month}"))
                    .or_default() += records;
                *sums
                    .license_days
                    .entry(format!("{license}|{}", key.day.format("%Y-%m-%d")))
                    .or_default() += records;
            }
            *sums
                .flow_months
                .entry(format!("{}|{month}", key.flow))
                .or_default() += records;
        }
        sums
    }
}

/// A batch as the store's tables see it: records to add per table key.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct TableSums {
    /// `license|YYYY-MM` → records.
    pub license_months: BTreeMap<String, u64>,
    /// `flow|YYYY-MM` → records.
    pub flow_months: BTreeMap<String, u64>,
    /// `license|YYYY-MM-DD` → records.
    pub license_days: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(license: Option<&str>, flow: &str, month: u32, day: u32) -> CountKey {
        CountKey {
            license: license.map(Arc::from),
            flow: flow.into(),
            month,
            day: NaiveDate::from_ymd_opt(2026, 11, day).unwrap(),
        }
    }

    #[test]
    fn sums_go_to_the_store_keys_and_loads_without_a_license_count_per_flow_only() {
        let november = 2026 * 12 + 10;
        let mut batch = CountBatch::default();
        batch.add(key(Some("L"), "f", november, 26), 2);
        batch.add(key(Some("L"), "g", november, 26), 3);
        batch.add(key(Some("L"), "f", november, 27), 1);
        batch.add(key(None, "h", november, 27), 4);
        let mut other = CountBatch::default();
        other.add(key(Some("L"), "f", november, 26), 5);
        batch.merge(&other);
        assert_eq!(batch.len(), 4);

        let sums = batch.tables();
        let pairs = |map: &BTreeMap<String, u64>| {
            map.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>()
        };
        assert_eq!(pairs(&sums.license_months), [("L|2026-11".into(), 11)]);
        assert_eq!(
            pairs(&sums.flow_months),
            [
                ("f|2026-11".into(), 8),
                ("g|2026-11".into(), 3),
                ("h|2026-11".into(), 4)
            ]
        );
        assert_eq!(
            pairs(&sums.license_days),
            [("L|2026-11-26".into(), 10), ("L|2026-11-27".into(), 1)]
        );
    }
}
