//! The identity of the host tollgate runs on, for matching a license's `bound_to`
//! (SPEC §1.1: names compare case-insensitively, addresses as IP addresses).

use std::net::IpAddr;

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

impl HostIdentity {
    /// This machine: its hostname, the fully qualified names `/etc/hosts` gives it, and its
    /// non-loopback, non-link-local interface addresses. DNS is not consulted (no resolver
    /// API without new dependencies), so set `licensing.host` where the FQDN lives only in DNS.
    pub fn detect() -> HostIdentity {
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();
        let mut entries = vec![hostname.clone()];
        if let Ok(hosts) = std::fs::read_to_string(HOSTS_FILE) {
            entries.extend(fqdns_from_hosts(&hosts, &hostname));
        }
        // Without interface addresses the host is still known by name.
        if let Ok(interfaces) = if_addrs::get_if_addrs() {
            entries.extend(
                interfaces
                    .iter()
                    .filter(|i| !i.is_loopback() && !i.is_link_local())
                    .map(|i| i.ip().to_string()),
            );
        }
        HostIdentity::from_entries(&entries)
    }

    /// A host known by the given entries, each an IP address or a host name (`licensing.host`).
    pub fn from_entries(entries: &[String]) -> HostIdentity {
        let mut identity = HostIdentity::default();
        for entry in entries {
            match Entry::parse(entry) {
                Some(Entry::Ip(ip)) if !identity.ips.contains(&ip) => identity.ips.push(ip),
                Some(Entry::Name(name)) if !identity.names.contains(&name) => {
                    identity.names.push(name)
                }
                _ => {}
            }
        }
        identity
    }

    /// Whether a license bound to `bound_to` (an IP address or FQDN) may run on this host.
    pub fn matches(&self, bound_to: &str) -> bool {
        match Entry::parse(bound_to) {
            Some(Entry::Ip(ip)) => self.ips.contains(&ip),
            Some(Entry::Name(name)) => self.names.contains(&name),
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
}

/// One normalized identity entry.
enum Entry {
    Ip(IpAddr),
    Name(String),
}

impl Entry {
    /// Normalizes an IP (brackets allowed) or a name (case and trailing dot ignored).
    fn parse(text: &str) -> Option<Entry> {
        let text = text.trim();
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(Entry::Ip(ip.to_canonical()));
        }
        let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
        (!name.is_empty()).then_some(Entry::Name(name))
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
    }

    #[test]
    fn addresses_compare_as_ip_addresses() {
        let h = host(&["10.1.2.3", "[2001:db8::1]", "::ffff:192.0.2.7"]);
        assert!(h.matches("10.1.2.3"));
        assert!(h.matches("::ffff:10.1.2.3"));
        assert!(h.matches("2001:db8:0:0:0:0:0:1"));
        assert!(h.matches("192.0.2.7"));
        assert!(!h.matches("10.1.2.30"));
        // An address never matches a name that looks like it.
        assert!(!host(&["host-10-1-2-3"]).matches("10.1.2.3"));
    }

    #[test]
    fn entries_are_normalized_and_deduplicated() {
        let h = host(&["B.example.", "b.example", " 10.0.0.1 ", "", "10.0.0.1"]);
        assert_eq!(h.entries(), ["b.example", "10.0.0.1"]);
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
    fn detect_knows_the_hostname() {
        let hostname = gethostname::gethostname()
            .to_string_lossy()
            .to_ascii_lowercase();
        let detected = HostIdentity::detect();
        assert!(detected.matches(&hostname), "{:?}", detected.entries());
        assert!(!detected.matches("127.0.0.1"));
    }
}
