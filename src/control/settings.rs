//! The flow settings the control plane keeps: what is wanted of each flow, by flow id, and
//! the same settings laid out in the config's flow order, which every compile takes. Laying
//! them out looks every flow id up in the map; at 10,000 flows those look-ups (each a few cache
//! misses on ids spread over the heap) were a third of a license upload's CPU, though uploads
//! rarely change a setting. So the layout is kept until the settings change (any mutable
//! access counts as a change) or the config does.

use std::ops::Deref;
use std::sync::{Arc, Weak};

use rustc_hash::FxHashMap;

use crate::config::Config;
use crate::policy::{DisabledReason, FlowSetting};

/// Flow settings by flow id, with their layout for the config they were last laid out for.
#[derive(Debug)]
pub(super) struct FlowSettings {
    by_id: FxHashMap<String, FlowSetting>,
    /// Changes with every mutable access: what a kept layout or a stored copy is checked by.
    epoch: u64,
    layout: Option<Layout>,
}

/// The settings in a config's flow order, as of an epoch.
#[derive(Debug)]
struct Layout {
    config: Weak<Config>,
    epoch: u64,
    settings: Arc<[FlowSetting]>,
}

/// The setting of a flow that has none: disabled by the operator, last in enabling order.
const UNSET: FlowSetting = FlowSetting {
    enabled: false,
    reason: DisabledReason::Operator,
    order: u64::MAX,
};

impl FlowSettings {
    /// Settings as read from the store.
    pub(super) fn new(by_id: FxHashMap<String, FlowSetting>) -> FlowSettings {
        FlowSettings {
            by_id,
            epoch: 0,
            layout: None,
        }
    }

    /// The settings to change; the layout is laid out again after.
    pub(super) fn edit(&mut self) -> &mut FxHashMap<String, FlowSetting> {
        self.epoch += 1;
        &mut self.by_id
    }

    /// Replaces every setting (a change undone, the fleet's settings taken).
    pub(super) fn replace(&mut self, by_id: FxHashMap<String, FlowSetting>) {
        *self.edit() = by_id;
    }

    /// Changes with every mutable access; equal epochs mean equal settings.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A setting per flow of `config`, in its order (flows without one: [`UNSET`]).
    pub(super) fn in_order(&mut self, config: &Arc<Config>) -> Arc<[FlowSetting]> {
        if let Some(layout) = &self.layout {
            if layout.epoch == self.epoch && Weak::ptr_eq(&layout.config, &Arc::downgrade(config)) {
                return layout.settings.clone();
            }
        }
        let settings: Arc<[FlowSetting]> = config
            .flows
            .iter()
            .map(|flow| self.by_id.get(&flow.id).copied().unwrap_or(UNSET))
            .collect();
        self.layout = Some(Layout {
            config: Arc::downgrade(config),
            epoch: self.epoch,
            settings: settings.clone(),
        });
        settings
    }
}

impl Deref for FlowSettings {
    type Target = FxHashMap<String, FlowSetting>;

    fn deref(&self) -> &Self::Target {
        &self.by_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(flows: &[&str]) -> Arc<Config> {
        let mut text = String::from(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"t\"\n[licensing]\npublic_keys = []\nlicense_dir = \"l\"\n[state]\ndir = \"s\"\n",
        );
        for id in ["a", "b"] {
            text.push_str(&format!(
                "[[instances]]\nid = \"{id}\"\nconnector = \"named\"\napp = \"jira\"\nbase_uri = \"http://127.0.0.1:1\"\n"
            ));
        }
        for id in flows {
            text.push_str(&format!(
                "[[flows]]\nid = \"{id}\"\nsystems = [\"a\", \"b\"]\n"
            ));
        }
        Arc::new(toml::from_str(&text).unwrap())
    }

    fn on(order: u64) -> FlowSetting {
        FlowSetting {
            enabled: true,
            reason: DisabledReason::Operator,
            order,
        }
    }

    #[test]
    fn the_layout_follows_the_config_order_and_every_change() {
        let mut settings = FlowSettings::new(FxHashMap::from_iter([("y".into(), on(1))]));
        let config = config(&["x", "y"]);
        let first = settings.in_order(&config);
        assert_eq!(&*first, &[UNSET, on(1)]);
        assert!(Arc::ptr_eq(&first, &settings.in_order(&config)), "kept");

        settings.edit().insert("x".into(), on(2));
        assert_eq!(&*settings.in_order(&config), &[on(2), on(1)]);

        let before = settings.epoch();
        settings.replace(FxHashMap::default());
        assert_ne!(settings.epoch(), before);
        assert_eq!(&*settings.in_order(&config), &[UNSET, UNSET]);

        let reordered = self::config(&["y", "x"]);
        settings.edit().insert("y".into(), on(3));
        let kept = settings.in_order(&config);
        assert_eq!(&*settings.in_order(&reordered), &[on(3), UNSET]);
        assert_eq!(&*kept, &[UNSET, on(3)]);
    }
}
