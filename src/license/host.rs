//! The identity of the host tollgate runs on, for matching a license's `bound_to`: names
//! compare case-insensitively, addresses as IP addresses, and `*.domain` matches any name
//! under that domain (one license for a fleet of sidecars).
//!
//! The identity is always what the machine has: its hostname, the fully qualified names
//! `/etc/hosts` gives it and its non-loopback interface addresses. `licensing.host` may add
//! names only where they really belong to this machine (see [`HostIdentity::with_claims`]).

use std::net::{IpAddr, ToSocketAddrs};

use thiserror::Error;

/// The hosts file consulted for this machine's fully qualified names.
const HOSTS_FILE: &str = "/etc/hosts";

/// Who this host is: its names and addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostIdentity {
    /// Lowercased names without a trailing dot.
    names: Vec<String>,
    /// Addresses, IPv4-mapped IPv6 folded to IPv4.
    ips: Vec<IpAddr>,
}

/// A `licensing.host` entry that is not an identity of this machine.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{entry:?} is not an identity of this machine: {why} (this machine is {known})")]
pub struct ForeignHost {
    /// Index of the entry in `licensing.host`.
    pub index: usize,
    /// The entry as written.
    pub entry: String,
    /// Why it does not belong to this machine.
    pub why: String,
    /// This machine's identities, comma-separated.
    pub known: String,
}

impl HostIdentity {
    /// This machine: its hostname, the fully qualified names `/etc/hosts` gives it, and its
    /// non-loopback, non-link-local interface addresses. Under the `test-clock` feature,
    /// `TOLLGATE_TEST_HOST` (comma-separated names and addresses) stands in for the machine, so
    /// tests can play a host of a fleet domain; release builds have no such hook.
    pub fn detect() -> HostIdentity {
        #[cfg(feature = "test-clock")]
        if let Ok(entries) = std::env::var("TOLLGATE_TEST_HOST") {
            let entries: Vec<String> = entries.split(',').map(str::to_owned).collect();
            return HostIdentity::from_entries(&entries);
        }
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();
        let mut identity = HostIdentity::default();
        identity.add(&hostname);
        if let Ok(hosts) = std::fs::read_to_string(HOSTS_FILE) {
            for name in fqdns_from_hosts(&hosts, &hostname) {
                identity.add(&name);
            }
        }
        // Without interface addresses the host is still known by name.
        if let Ok(interfaces) = if_addrs::get_if_addrs() {
            for interface in interfaces
                .iter()
                .filter(|i| !i.is_loopback() && !i.is_link_local())
            {
                identity.add(&interface.ip().to_string());
            }
        }
        identity
    }

    /// `self` plus the `licensing.host` entries, each of which must be one of this machine's
    /// addresses, one of its names, or a name that resolves to one of its addresses; the first
    /// entry that is none of these is refused (a config must not claim another host).
    pub fn with_claims(mut self, entries: &[String]) -> Result<HostIdentity, ForeignHost> {
        let detected = self.clone();
        for (index, entry) in entries.iter().enumerate() {
            let foreign = |why: String| ForeignHost {
                index,
                entry: entry.clone(),
                why,
                known: detected.entries().join(", "),
            };
            match Entry::parse(entry) {
                None => return Err(foreign("it is empty".into())),
                Some(Entry::Ip(ip)) if detected.ips.contains(&ip) => {}
                Some(Entry::Ip(_)) => {
                    return Err(foreign("no interface of this machine has it".into()))
                }
                Some(Entry::Name(name)) if detected.names.contains(&name) => {}
                Some(Entry::Name(name)) => {
                    let resolved = resolve(&name).map_err(foreign)?;
                    if !resolved.iter().any(|ip| detected.ips.contains(ip)) {
                        let listed: Vec<String> = resolved.iter().map(IpAddr::to_string).collect();
                        return Err(foreign(format!(
                            "it resolves to {}, none of which is an address of this machine",
                            listed.join(", ")
                        )));
                    }
                    self.add(&name);
                }
            }
        }
        Ok(self)
    }

    /// A host known by exactly these entries (IP addresses or names), for tests and benches.
    pub fn from_entries(entries: &[String]) -> HostIdentity {
        let mut identity = HostIdentity::default();
        for entry in entries {
            identity.add(entry);
        }
        identity
    }

    /// Whether a license bound to `bound_to` (an IP address, a name, or `*.domain`) may run on
    /// this host. Allocation-free: it is called on the request path.
    pub fn matches(&self, bound_to: &str) -> bool {
        match Entry::parse_borrowed(bound_to) {
            Some(EntryRef::Ip(ip)) => self.ips.contains(&ip),
            Some(EntryRef::Name(name)) => match name.strip_prefix("*.") {
                Some(domain) => {
                    !domain.is_empty()
                        && !domain.contains('*')
                        && self.names.iter().any(|own| is_under(own, domain))
                }
                None => self.names.iter().any(|own| own.eq_ignore_ascii_case(name)),
            },
            None => false,
        }
    }

    /// The names, then the addresses, normalized; for status output.
    pub fn entries(&self) -> Vec<String> {
        self.names
            .iter()
            .cloned()
            .chain(self.ips.iter().map(IpAddr::to_string))
            .collect()
    }

    fn add(&mut self, entry: &str) {
        match Entry::parse(entry) {
            Some(Entry::Ip(ip)) if !self.ips.contains(&ip) => self.ips.push(ip),
            Some(Entry::Name(name)) if !self.names.contains(&name) => self.names.push(name),
            _ => {}
        }
    }
}

/// Whether `name` is a name under `domain` (at least one more label), case-insensitively.
fn is_under(name: &str, domain: &str) -> bool {
    name.len() > domain.len() + 1
        && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
        && name[name.len() - domain.len()..].eq_ignore_ascii_case(domain)
}

/// The addresses a name resolves to with the system resolver.
fn resolve(name: &str) -> Result<Vec<IpAddr>, String> {
    let addrs = (name, 0)
        .to_socket_addrs()
        .map_err(|err| format!("it does not resolve ({err})"))?;
    let mut ips: Vec<IpAddr> = addrs.map(|addr| addr.ip().to_canonical()).collect();
    ips.dedup();
    Ok(ips)
}

/// One normalized identity entry.
enum Entry {
    Ip(IpAddr),
    Name(String),
}

/// An entry as written, read without allocating: the address, or the name without its
/// trailing dot (its case as written).
enum EntryRef<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

impl Entry {
    /// Normalizes an IP (brackets allowed) or a name (case and trailing dot ignored).
    fn parse(text: &str) -> Option<Entry> {
        Some(match Entry::parse_borrowed(text)? {
            EntryRef::Ip(ip) => Entry::Ip(ip),
            EntryRef::Name(name) => Entry::Name(name.to_ascii_lowercase()),
        })
    }

    /// An IP (brackets allowed, IPv4-mapped folded) or a non-empty name without its trailing dot.
    fn parse_borrowed(text: &str) -> Option<EntryRef<'_>> {
        let text = text.trim();
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(EntryRef::Ip(ip.to_canonical()));
        }
        let name = text.strip_suffix('.').unwrap_or(text);
        (!name.is_empty()).then_some(EntryRef::Name(name))
    }
}

/// The dotted names that `/etc/hosts` lines naming `hostname` give it, `localhost*` excluded.
fn fqdns_from_hosts(hosts: &str, hostname: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let names: Vec<&str> = line.split_whitespace().skip(1).collect();
        if !names.iter().any(|n| n.eq_ignore_ascii_case(hostname)) {
            continue;
        }
        found.extend(
            names
                .iter()
                .filter(|n| n.contains('.') && !n.to_ascii_lowercase().starts_with("localhost"))
                .map(|n| n.to_string()),
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(entries: &[&str]) -> HostIdentity {
        HostIdentity::from_entries(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn names_compare_case_insensitively_without_the_trailing_dot() {
        let h = host(&["Integration-Host.Acme.Example."]);
        assert!(h.matches("integration-host.acme.example"));
        assert!(h.matches("INTEGRATION-HOST.ACME.EXAMPLE."));
        assert!(!h.matches("integration-host"));
        assert!(!h.matches(""));
        assert!(!h.matches("."));
    }

    #[test]
    fn addresses_compare_as_ip_addresses() {
        let h = host(&["10.1.2.3", "[2001:db8::1]", "::ffff:192.0.2.7"]);
        assert!(h.matches("10.1.2.3"));
        assert!(h.matches("::ffff:10.1.2.3"));
        assert!(h.matches("2001:db8:0:0:0:0:0:1"));
        assert!(h.matches("[2001:db8::1]"));
        assert!(h.matches("192.0.2.7"));
        assert!(!h.matches("10.1.2.30"));
        // An address never matches a name that looks like it.
        assert!(!host(&["host-10-1-2-3"]).matches("10.1.2.3"));
    }

    #[test]
    fn a_wildcard_matches_names_under_its_domain_only() {
        let h = host(&["sidecar-a.Engines.Acme.example", "10.0.0.7"]);
        assert!(h.matches("*.engines.acme.example"));
        assert!(h.matches("*.ENGINES.acme.example."));
        assert!(h.matches("*.acme.example"));
        assert!(!h.matches("*.other.example"));
        assert!(!h.matches("*.sidecar-a.engines.acme.example"));
        assert!(!h.matches("*."));
        assert!(!h.matches("*.*.acme.example"));
        // The bare domain is not under itself, and a suffix is not a domain.
        assert!(!host(&["engines.acme.example"]).matches("*.engines.acme.example"));
        assert!(!host(&["xengines.acme.example"]).matches("*.engines.acme.example"));
        // Wildcards never match addresses.
        assert!(!host(&["10.0.0.7"]).matches("*.0.0.7"));
    }

    #[test]
    fn entries_are_normalized_and_deduplicated() {
        let h = host(&["B.example.", "b.example", " 10.0.0.1 ", "", "10.0.0.1"]);
        assert_eq!(h.entries(), ["b.example", "10.0.0.1"]);
    }

    #[test]
    fn claims_must_be_identities_of_this_machine() {
        let machine = host(&["box", "box.corp.example", "10.9.8.7"]);
        let ok = machine
            .clone()
            .with_claims(&["BOX.corp.example.".into(), "10.9.8.7".into()])
            .unwrap();
        assert_eq!(ok, machine);
        let foreign = machine
            .clone()
            .with_claims(&["10.9.8.7".into(), "192.0.2.200".into()])
            .unwrap_err();
        assert_eq!(foreign.index, 1);
        assert!(foreign
            .to_string()
            .contains("\"192.0.2.200\" is not an identity of this machine"));
        assert!(foreign.to_string().contains("box.corp.example"));
        // `.invalid` never resolves (RFC 6761), so it cannot be this machine.
        let unresolved = machine
            .with_claims(&["other-host.invalid".into()])
            .unwrap_err();
        assert!(
            unresolved.why.starts_with("it does not resolve"),
            "{unresolved}"
        );
    }

    #[test]
    fn a_name_that_resolves_to_an_address_of_this_machine_may_be_claimed() {
        // `localhost` resolves to loopback, which is never part of the identity...
        let machine = host(&["box", "127.0.0.1"]);
        let claimed = machine.with_claims(&["localhost".into()]).unwrap();
        assert!(claimed.matches("localhost"));
        // ...unless the machine is known by that address, as here.
        let without = host(&["box"]).with_claims(&["localhost".into()]);
        assert!(without.is_err());
    }

    #[test]
    fn fqdns_come_from_hosts_lines_naming_the_host() {
        let hosts = "127.0.0.1 localhost localhost.localdomain\n\
                     127.0.1.1 box.corp.example box # the host\n\
                     10.0.0.9  box.lab.example Box\n\
                     10.0.0.10 other.corp.example other\n\
                     # 10.0.0.11 box.commented.example box\n";
        assert_eq!(
            fqdns_from_hosts(hosts, "box"),
            ["box.corp.example", "box.lab.example"]
        );
        assert!(fqdns_from_hosts(hosts, "nothere").is_empty());
    }

    #[test]
    fn detect_knows_the_hostname_and_never_loopback() {
        let hostname = gethostname::gethostname()
            .to_string_lossy()
            .to_ascii_lowercase();
        let detected = HostIdentity::detect();
        assert!(detected.matches(&hostname), "{:?}", detected.entries());
        assert!(!detected.matches("127.0.0.1"));
        assert!(!detected.matches("::1"));
    }
}
