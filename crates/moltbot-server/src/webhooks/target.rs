//! Where a webhook may go: `http`/`https` URLs whose host is a public address. Unless
//! `webhooks.allow_private_targets`, a host that is (or resolves to) a loopback, private, link-local,
//! shared (CGNAT), multicast or unspecified address is refused — when the subscription is made and
//! again at every delivery, which then connects only to the address just checked (no DNS rebinding
//! between the check and the connection) and never follows redirects.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use url::{Host, Url};

/// How long a DNS lookup of a target may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Parse a subscription URL: absolute, `http` or `https`, with a host.
pub(crate) fn parse(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url.trim()).map_err(|e| format!("not a valid URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("scheme must be http or https, not {:?}", parsed.scheme()));
    }
    if parsed.host().is_none() {
        return Err("the URL has no host".into());
    }
    Ok(parsed)
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 64:ff9b::/96 reaches IPv4 space
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space 100.64.0.0/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || o[0] >= 240) // reserved
}

/// Check `url`'s host. `Ok(Some((host, addr)))`: connect to `addr` for `host` (a name checked here);
/// `Ok(None)`: connect normally (an address literal, or private targets allowed).
pub(crate) async fn check(url: &Url, allow_private: bool) -> Result<Option<(String, SocketAddr)>, String> {
    let port = url.port_or_known_default().unwrap_or(443);
    let refuse = |ip: IpAddr| {
        format!(
            "the host {} is a loopback, private or link-local address ({ip}); \
             set webhooks.allow_private_targets = true to allow it",
            url.host_str().unwrap_or_default()
        )
    };
    match url.host() {
        None => Err("the URL has no host".into()),
        Some(_) if allow_private => Ok(None),
        Some(Host::Ipv4(ip)) if !public_v4(ip) => Err(refuse(IpAddr::V4(ip))),
        Some(Host::Ipv6(ip)) if !is_public(IpAddr::V6(ip)) => Err(refuse(IpAddr::V6(ip))),
        Some(Host::Ipv4(_) | Host::Ipv6(_)) => Ok(None),
        Some(Host::Domain(name)) => {
            let lookup = tokio::net::lookup_host((name, port));
            let addrs: Vec<SocketAddr> = tokio::time::timeout(LOOKUP_TIMEOUT, lookup)
                .await
                .map_err(|_| format!("looking up {name} timed out"))?
                .map_err(|e| format!("cannot resolve {name}: {e}"))?
                .collect();
            let first = *addrs.first().ok_or_else(|| format!("{name} has no address"))?;
            // Every address must be public: the resolver (or an attacker's DNS) picks which one a
            // client would use.
            if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(refuse(bad.ip()));
            }
            Ok(Some((name.to_owned(), first)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_need_http_and_a_host() {
        assert!(parse("https://example.com/hook").is_ok());
        assert!(parse("http://example.com:8443/").is_ok());
        assert!(parse("ftp://example.com/").unwrap_err().contains("scheme"));
        assert!(parse("not a url").is_err());
        assert!(parse("file:///etc/passwd").is_err());
    }

    #[tokio::test]
    async fn literal_and_resolved_private_hosts_are_refused() {
        for url in [
            "http://127.0.0.1:9/x",
            "http://[::1]/",
            "http://localhost:1/",
            "http://10.0.0.1/",
        ] {
            let u = parse(url).unwrap();
            let err = check(&u, false).await.unwrap_err();
            assert!(err.contains("allow_private_targets"), "{url}: {err}");
            assert_eq!(check(&u, true).await.unwrap(), None, "{url}");
        }
        assert_eq!(
            check(&parse("https://93.184.216.34/").unwrap(), false)
                .await
                .unwrap(),
            None
        );
    }
}
