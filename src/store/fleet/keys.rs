//! Where fleet mode keeps things in Redis. Every key starts with `tollgate:` and carries a hash
//! tag: `{fleet}` for the fleet's shared state, `{fleet:license:month}` for one license's lease
//! book of a month, `{fleet:flows:month}` for a month's per-flow counts. What one script
//! touches always shares one tag, so a Redis Cluster keeps it in one slot.

use sha2::{Digest, Sha256};

/// The key names of one fleet.
#[derive(Debug, Clone)]
pub struct Keys {
    fleet: String,
}

impl Keys {
    /// The keys of the fleet named `fleet`.
    pub fn new(fleet: &str) -> Keys {
        Keys {
            fleet: fleet.to_owned(),
        }
    }

    /// The lease book of a license in a month (`YYYY-MM`).
    pub fn book(&self, license: &str, month: &str) -> String {
        format!("tollgate:{{{}:{license}:{month}}}:lease", self.fleet)
    }

    /// Every sidecar's per-flow counts of a month.
    pub fn flow_counts(&self, month: &str) -> String {
        format!("tollgate:{{{}:flows:{month}}}:counts", self.fleet)
    }

    /// The fleet's flow settings (flow id → JSON).
    pub fn flows(&self) -> String {
        self.shared("flows")
    }

    /// The version of the flow settings, bumped by every change.
    pub fn version(&self) -> String {
        self.shared("version")
    }

    /// The channel every change of the flow settings is announced on.
    pub fn changes(&self) -> String {
        self.shared("changes")
    }

    /// The audit trail (sorted set by sequence number).
    pub fn audit(&self) -> String {
        self.shared("audit")
    }

    /// The audit trail's sequence.
    pub fn audit_seq(&self) -> String {
        self.shared("audit-seq")
    }

    /// The claim of a node name by one run of a sidecar.
    pub fn node(&self, node: &str) -> String {
        self.shared(&format!("node:{node}"))
    }

    /// The warnings and limits raised (`license|month|kind` → 1).
    pub fn marks(&self) -> String {
        self.shared("marks")
    }

    /// The once-key of an audit event: the same event journaled by two sidecars is one.
    pub fn once(&self, kind: &str, detail: &str) -> String {
        let digest = Sha256::new()
            .chain_update(kind.as_bytes())
            .chain_update([0])
            .chain_update(detail.as_bytes())
            .finalize();
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        self.shared(&format!("once:{hex}"))
    }

    fn shared(&self, name: &str) -> String {
        format!("tollgate:{{{}}}:{name}", self.fleet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part of a key Redis Cluster hashes: the text between the first `{` and the next `}`.
    fn tag(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = key[open..].find('}').unwrap() + open;
        &key[open + 1..close]
    }

    #[test]
    fn what_one_script_touches_shares_one_hash_tag() {
        let keys = Keys::new("acme-prod");
        assert_eq!(
            keys.book("LIC-1", "2026-12"),
            "tollgate:{acme-prod:LIC-1:2026-12}:lease"
        );
        let shared = [
            keys.flows(),
            keys.version(),
            keys.changes(),
            keys.audit(),
            keys.audit_seq(),
            keys.marks(),
            keys.node("sidecar-a"),
            keys.once("flow-enabled", "{}"),
        ];
        for key in &shared {
            assert_eq!(tag(key), "acme-prod", "{key}");
        }
        assert_eq!(tag(&keys.flow_counts("2026-12")), "acme-prod:flows:2026-12");
        assert_ne!(keys.once("a", "b"), keys.once("a", "c"));
        assert_ne!(keys.once("ab", ""), keys.once("a", "b"));
    }
}
