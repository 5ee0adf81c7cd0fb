//! Name rules: which names an endpoint answers to, and how a textual name becomes the
//! lower-case wire-format key the snapshot is indexed by.
//!
//! Keys are the DNS wire encoding of the name (length-prefixed labels) in ASCII lower case,
//! without the terminating root label. The query parser produces exactly the same bytes from a
//! packet, so a lookup is one hash probe with no conversion.

use super::{Container, Endpoint};
use std::net::IpAddr;

/// Maximum length of a DNS name in wire format (RFC 1035 §2.3.4).
const MAX_WIRE_NAME: usize = 255;

/// Lower-cases a textual name, trims one trailing dot and converts it into its wire-format key.
/// Returns `None` when the name cannot be a DNS name (empty label, label over 63 bytes, name over
/// 255 bytes), so a container with such a name is simply not answerable by it.
pub fn normalize_name(name: &str) -> Option<Vec<u8>> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    let mut key = Vec::with_capacity(name.len() + 1);
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        key.push(label.len() as u8);
        key.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    // +1 for the root label the key leaves out.
    (key.len() < MAX_WIRE_NAME).then_some(key)
}

/// The reverse-lookup name of an address (`4.3.2.1.in-addr.arpa`, or the nibble form under
/// `ip6.arpa`), as text without a trailing dot.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                for nibble in [byte & 0x0f, byte >> 4] {
                    s.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
                    s.push('.');
                }
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// The names an endpoint answers to on its network, in priority order and deduplicated
/// (case-insensitively): the container name (unless the container is anonymous, as Docker
/// before 25 keeps a generated name out of DNS), the endpoint's aliases (network aliases,
/// compose service names; the Docker source also puts the short ID and hostname here), then the
/// names the container carries on every network.
pub fn endpoint_names<'a>(container: &'a Container, endpoint: &'a Endpoint) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::with_capacity(2 + endpoint.aliases.len());
    let own = (!container.anonymous).then_some(container.name.as_str());
    let all = own
        .into_iter()
        .chain(endpoint.aliases.iter().map(String::as_str))
        .chain(container.extra_names.iter().map(String::as_str));
    for name in all {
        let name = name.strip_prefix('/').unwrap_or(name);
        if !name.is_empty() && !out.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            out.push(name);
        }
    }
    out
}

/// The name an endpoint's addresses point to in PTR answers (before `.<network>.`): the
/// container's name, or for an anonymous container its first alias on that network, as
/// libnetwork does (`None` when it has none: Docker then has no reverse record either).
pub fn ptr_name<'a>(container: &'a Container, endpoint: &'a Endpoint) -> Option<&'a str> {
    let name = if container.anonymous {
        endpoint.aliases.iter().find(|a| !a.is_empty())?.as_str()
    } else {
        container.name.as_str()
    };
    let name = name.strip_prefix('/').unwrap_or(name);
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Health;

    #[test]
    fn keys_are_lowercase_wire_names() {
        assert_eq!(normalize_name("Db.Demo.").unwrap(), b"\x02db\x04demo");
        assert_eq!(normalize_name("a").unwrap(), b"\x01a");
        assert!(normalize_name("").is_none());
        assert!(normalize_name("a..b").is_none());
        assert!(normalize_name(&"x".repeat(64)).is_none());
        assert!(normalize_name(&["abc"; 70].join(".")).is_none());
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("10.89.0.2".parse().unwrap()),
            "2.0.89.10.in-addr.arpa"
        );
        let r = reverse_name("fd00::1".parse().unwrap());
        assert!(r.starts_with("1.0.0.0.0.0.0.0"), "{r}");
        assert!(r.ends_with("0.0.d.f.ip6.arpa"), "{r}");
    }

    #[test]
    fn names_dedup_case_insensitively_and_keep_order() {
        let c = Container {
            id: String::new(),
            name: "/Web".into(),
            hostname: None,
            health: Health::None,
            extra_names: vec!["extra".into(), "web".into()],
            dns: Vec::new(),
            endpoints: vec![],
            anonymous: false,
        };
        let e = Endpoint {
            network: "n".into(),
            ipv4: vec![],
            ipv6: vec![],
            aliases: vec!["api".into(), "WEB".into(), "".into()],
            links: Vec::new(),
        };
        assert_eq!(endpoint_names(&c, &e), vec!["Web", "api", "extra"]);
        assert_eq!(ptr_name(&c, &e), Some("Web"));
    }

    #[test]
    fn anonymous_containers_answer_to_aliases_only() {
        let c = Container {
            dns: Vec::new(),
            id: "0123456789abcdef".into(),
            name: "eloquent_jackson".into(),
            hostname: None,
            health: Health::None,
            extra_names: vec![],
            endpoints: vec![],
            anonymous: true,
        };
        let e = |aliases: &[&str]| Endpoint {
            network: "n".into(),
            ipv4: vec![],
            ipv6: vec![],
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            links: Vec::new(),
        };
        let with = e(&["db", "0123456789ab"]);
        assert_eq!(endpoint_names(&c, &with), vec!["db", "0123456789ab"]);
        assert_eq!(ptr_name(&c, &with), Some("db"));
        assert_eq!(ptr_name(&c, &e(&[])), None);
    }
}
