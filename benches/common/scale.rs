//! A large configuration for the scale measurements (`benches/scale.sh`, `benches/compile.rs`):
//! `licenses` pair licenses of `points` points each, every one covering its own pair of system
//! types, and `points` flows per license, each between its own pair of instances (so every
//! flow holds one point and every license is exactly full). Each license's flows connect 50 +
//! 50 instances of its two system types (one instance is in two flows), with the entity
//! patterns an integration of those systems has: creates and updates as main loads, comments
//! and attachments as child loads, and the systems' bulk endpoints as bulk loads.
//!
//! Shared source: `examples/scale_config.rs` writes it to a directory, the compile bench reads
//! it from one.

use std::fmt::Write as _;
use std::path::Path;

use tollgate::license::{self, SigningKey};

/// How large a configuration to write.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Pair licenses.
    pub licenses: usize,
    /// Points per license, and flows per license.
    pub points: usize,
}

impl Scale {
    /// The issue's configuration: 10,000 flows over 10,000 instances, 100 licenses.
    pub const ISSUE: Scale = Scale {
        licenses: 100,
        points: 100,
    };

    /// Flows in the configuration.
    pub fn flows(self) -> usize {
        self.licenses * self.points
    }

    /// Instances per system type of one license: enough for `points` distinct pairs.
    fn side(self) -> usize {
        self.points.div_ceil(2).max(1)
    }
}

/// Where the written configuration listens and forwards to.
#[derive(Debug, Clone)]
pub struct Addresses {
    /// `server.listen`.
    pub engine: String,
    /// `admin.listen`.
    pub admin: String,
    /// Where the instances of the first license forward (`host:port`); the others get
    /// `https://<id>.bench.example` base URIs.
    pub upstream: Option<String>,
}

/// An entity pattern: `(role, method, path, records, accepted)`.
type Pattern = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

/// One system type: its name and the entity patterns of an integration with it.
struct System {
    app: &'static str,
    entities: &'static [Pattern],
}

const SYSTEMS: &[System] = &[
    System {
        app: "servicenow",
        entities: &[
            ("main", "POST", "/api/now/table/incident", None, None),
            (
                "main",
                "PATCH",
                "/api/now/table/incident/{sys_id}",
                None,
                None,
            ),
            ("child", "POST", "/api/now/attachment/file", None, None),
        ],
    },
    System {
        app: "jira",
        entities: &[
            ("main", "POST", "/rest/api/2/issue", None, None),
            ("main", "PUT", "/rest/api/2/issue/{key}", None, None),
            (
                "main",
                "POST",
                "/rest/api/2/issue/bulk",
                Some("/issueUpdates"),
                Some("/issues"),
            ),
            (
                "child",
                "POST",
                "/rest/api/2/issue/{key}/comment",
                None,
                None,
            ),
        ],
    },
    System {
        app: "salesforce",
        entities: &[
            (
                "main",
                "POST",
                "/services/data/v59.0/sobjects/Case",
                None,
                None,
            ),
            (
                "main",
                "PATCH",
                "/services/data/v59.0/sobjects/Case/{id}",
                None,
                None,
            ),
            (
                "main",
                "POST",
                "/services/data/v59.0/composite/sobjects",
                Some("/records"),
                None,
            ),
            (
                "child",
                "POST",
                "/services/data/v59.0/sobjects/CaseComment",
                None,
                None,
            ),
        ],
    },
    System {
        app: "netsuite",
        entities: &[
            (
                "main",
                "POST",
                "/services/rest/record/v1/salesOrder",
                None,
                None,
            ),
            (
                "main",
                "PATCH",
                "/services/rest/record/v1/salesOrder/{id}",
                None,
                None,
            ),
        ],
    },
    System {
        app: "zendesk",
        entities: &[
            ("main", "POST", "/api/v2/tickets", None, None),
            ("main", "PUT", "/api/v2/tickets/{id}", None, None),
            (
                "main",
                "POST",
                "/api/v2/tickets/create_many",
                Some("/tickets"),
                None,
            ),
            ("child", "POST", "/api/v2/uploads", None, None),
        ],
    },
    System {
        app: "hubspot",
        entities: &[
            ("main", "POST", "/crm/v3/objects/contacts", None, None),
            ("main", "PATCH", "/crm/v3/objects/contacts/{id}", None, None),
            (
                "main",
                "POST",
                "/crm/v3/objects/contacts/batch/create",
                Some("/inputs"),
                Some("/results"),
            ),
        ],
    },
    System {
        app: "dynamics",
        entities: &[
            ("main", "POST", "/api/data/v9.2/accounts", None, None),
            ("main", "PATCH", "/api/data/v9.2/accounts/{id}", None, None),
            ("child", "POST", "/api/data/v9.2/annotations", None, None),
        ],
    },
    System {
        app: "workday",
        entities: &[
            ("main", "POST", "/ccx/api/v1/{tenant}/workers", None, None),
            (
                "main",
                "PATCH",
                "/ccx/api/v1/{tenant}/workers/{id}",
                None,
                None,
            ),
        ],
    },
    System {
        app: "sap",
        entities: &[
            (
                "main",
                "POST",
                "/sap/opu/odata/sap/API_SALES_ORDER_SRV/A_SalesOrder",
                None,
                None,
            ),
            (
                "child",
                "POST",
                "/sap/opu/odata/sap/API_SALES_ORDER_SRV/A_SalesOrderItem",
                None,
                None,
            ),
        ],
    },
    System {
        app: "github",
        entities: &[
            ("main", "POST", "/repos/{owner}/{repo}/issues", None, None),
            (
                "main",
                "PATCH",
                "/repos/{owner}/{repo}/issues/{number}",
                None,
                None,
            ),
            (
                "child",
                "POST",
                "/repos/{owner}/{repo}/issues/{number}/comments",
                None,
                None,
            ),
        ],
    },
    System {
        app: "gitlab",
        entities: &[
            ("main", "POST", "/api/v4/projects/{id}/issues", None, None),
            (
                "main",
                "PUT",
                "/api/v4/projects/{id}/issues/{iid}",
                None,
                None,
            ),
            (
                "child",
                "POST",
                "/api/v4/projects/{id}/issues/{iid}/notes",
                None,
                None,
            ),
        ],
    },
    System {
        app: "azuredevops",
        entities: &[
            (
                "main",
                "POST",
                "/{org}/{project}/_apis/wit/workitems/{type}",
                None,
                None,
            ),
            (
                "main",
                "PATCH",
                "/{org}/{project}/_apis/wit/workitems/{id}",
                None,
                None,
            ),
        ],
    },
    System {
        app: "freshdesk",
        entities: &[
            ("main", "POST", "/api/v2/tickets", None, None),
            ("main", "PUT", "/api/v2/tickets/{id}", None, None),
            ("child", "POST", "/api/v2/tickets/{id}/notes", None, None),
        ],
    },
    System {
        app: "marketo",
        entities: &[(
            "main",
            "POST",
            "/rest/v1/leads.json",
            Some("/input"),
            Some("/result"),
        )],
    },
    System {
        app: "sugarcrm",
        entities: &[
            ("main", "POST", "/rest/v11/Cases", None, None),
            ("main", "PUT", "/rest/v11/Cases/{id}", None, None),
        ],
    },
    System {
        app: "monday",
        entities: &[("main", "POST", "/v2/items", None, None)],
    },
];

/// The pair of system types license `k` covers: the `k`-th unordered pair of distinct types.
fn license_systems(k: usize) -> (&'static System, &'static System) {
    let n = SYSTEMS.len();
    let mut k = k % (n * (n - 1) / 2);
    for a in 0..n {
        let row = n - 1 - a;
        if k < row {
            return (&SYSTEMS[a], &SYSTEMS[a + 1 + k]);
        }
        k -= row;
    }
    (&SYSTEMS[0], &SYSTEMS[1])
}

/// The id of instance `i` of side `side` (0 or 1) of license `k`.
fn instance_id(system: &System, k: usize, i: usize) -> String {
    format!("{}-{k}-{i}", system.app)
}

/// The two instances (by index on each side) of flow `f` of a license: distinct pairs for
/// every `f` below `2 * side`.
fn flow_instances(f: usize, side: usize) -> (usize, usize) {
    let (round, i) = (f / side, f % side);
    (i, (i + round) % side)
}

/// The configuration text; paths are relative to the directory it is written to.
pub fn config_text(scale: Scale, addresses: &Addresses) -> String {
    let mut toml = String::with_capacity(scale.flows() * 900);
    let _ = write!(
        toml,
        "# Generated by examples/scale_config.rs: {} flows, {} pair licenses of {} points.\n\
         [server]\nlisten = \"{}\"\n\n[admin]\nlisten = \"{}\"\ntoken_file = \"admin.token\"\n\n\
         [licensing]\npublic_keys = [\"issuer.pub\"]\nlicense_dir = \"licenses\"\n\n\
         [state]\ndir = \"state\"\ndurability = \"strict\"\n",
        scale.flows(),
        scale.licenses,
        scale.points,
        addresses.engine,
        addresses.admin,
    );
    let side = scale.side();
    for k in 0..scale.licenses {
        let (a, b) = license_systems(k);
        for system in [a, b] {
            for i in 0..side {
                let id = instance_id(system, k, i);
                let base_uri = match (&addresses.upstream, k) {
                    (Some(upstream), 0) => format!("http://{upstream}/{id}"),
                    _ => format!("https://{id}.bench.example"),
                };
                let _ = write!(
                    toml,
                    "\n[[instances]]\nid = \"{id}\"\nconnector = \"named\"\napp = \"{}\"\nbase_uri = \"{base_uri}\"\n",
                    system.app
                );
            }
        }
    }
    for k in 0..scale.licenses {
        let (a, b) = license_systems(k);
        for f in 0..scale.points {
            let (i, j) = flow_instances(f, side);
            let (ia, ib) = (instance_id(a, k, i), instance_id(b, k, j));
            let _ = write!(
                toml,
                "\n[[flows]]\nid = \"{}-{}-{k}-{f}\"\nsystems = [\"{ia}\", \"{ib}\"]\n",
                a.app, b.app
            );
            for (system, instance) in [(a, &ia), (b, &ib)] {
                for (role, method, path, records, accepted) in system.entities {
                    let _ = write!(
                        toml,
                        "[[flows.entities]]\ninstance = \"{instance}\"\nrole = \"{role}\"\nmethod = \"{method}\"\npath = \"{path}\"\n"
                    );
                    if let Some(records) = records {
                        let _ = writeln!(toml, "records = \"{records}\"");
                    }
                    if let Some(accepted) = accepted {
                        let _ = writeln!(toml, "accepted = \"{accepted}\"");
                    }
                }
            }
        }
    }
    toml
}

/// The signed license files: `(file name, armored text)`, one per license.
pub fn licenses(scale: Scale, key: &SigningKey) -> Result<Vec<(String, String)>, String> {
    (0..scale.licenses)
        .map(|k| {
            let (a, b) = license_systems(k);
            let id = format!("LIC-SCALE-{k:03}");
            let payload = format!(
                r#"{{"version":1,"id":"{id}","kind":"pair","company":"Scale Corp","registered_to":"Scale Operator","email":"ops@scale.example","start":"2026-01-01T00:00:00Z","expire":"2036-01-01T00:00:00Z","system_a":"{}","system_b":"{}","points":{},"transferred_records":1000000}}"#,
                a.app, b.app, scale.points
            );
            let text = license::sign(payload.as_bytes(), key).map_err(|err| err.to_string())?;
            Ok((format!("{id}.lic"), text))
        })
        .collect()
}

/// Writes `tollgate.toml`, `admin.token`, `issuer.pub` and `licenses/` into `dir`.
pub fn write(
    dir: &Path,
    scale: Scale,
    addresses: &Addresses,
    key: &SigningKey,
    public_pem: &str,
) -> Result<(), String> {
    let io = |what: &str, err: std::io::Error| format!("cannot write {what}: {err}");
    std::fs::create_dir_all(dir.join("licenses")).map_err(|err| io("licenses/", err))?;
    std::fs::write(dir.join("admin.token"), "scale-bench-token\n")
        .map_err(|err| io("admin.token", err))?;
    std::fs::write(dir.join("issuer.pub"), public_pem).map_err(|err| io("issuer.pub", err))?;
    std::fs::write(dir.join("tollgate.toml"), config_text(scale, addresses))
        .map_err(|err| io("tollgate.toml", err))?;
    for (name, text) in licenses(scale, key)? {
        std::fs::write(dir.join("licenses").join(&name), text).map_err(|err| io(&name, err))?;
    }
    Ok(())
}
