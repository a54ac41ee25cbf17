//! Which `Host` and browser `Origin` a request may come with. Bound to loopback, a
//! gateway is reachable by any web page the user opens: a page cannot read our answers
//! across origins, but it can send requests, and by rebinding its own name to 127.0.0.1
//! it can make them same-origin. The `Host` check defeats the rebinding (the browser
//! still sends the page's name); the `Origin` check refuses cross-site requests and
//! WebSockets, which browsers open to any origin.

/// The `Host` and `Origin` rules of one gateway.
#[derive(Clone, Debug, Default)]
pub struct Boundary {
    /// Bound to a loopback address: only loopback names and listed hosts.
    loopback: bool,
    /// Accepted `Host` values besides the loopback names: `name` (any port) or
    /// `name:port`.
    allowed_hosts: Vec<String>,
    /// Browser origins accepted besides the gateway's own (`scheme://host[:port]`).
    allowed_origins: Vec<String>,
}

/// Names that reach only this machine.
fn is_loopback_name(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `host[:port]` split, IPv6 literals without their brackets; `None` when it is not
/// of that form (`[::1]junk`, an empty name).
fn split_authority(authority: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        match tail {
            "" => (host, None),
            tail => (host, Some(tail.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (!host.is_empty() && port_ok).then_some((host, port))
}

impl Boundary {
    pub fn new(loopback: bool, allowed_hosts: Vec<String>, allowed_origins: Vec<String>) -> Self {
        Self {
            loopback,
            allowed_hosts,
            allowed_origins,
        }
    }

    /// Whether a request may use this `Host`; `open` when the gateway needs no key now.
    /// A request without one (HTTP/1.0) passes: browsers always send it, so its absence
    /// is no rebinding.
    ///
    /// Loopback names and listed hosts always pass. Bound to loopback, or given a list,
    /// nothing else does. Bound elsewhere with no list, any name passes while keys are
    /// required (a rebinding page has no key), but an open gateway takes only IP
    /// addresses: rebinding needs a name of the attacker's.
    pub fn host_allowed(&self, host: Option<&str>, open: bool) -> bool {
        let Some(host) = host else {
            return true;
        };
        let Some((name, port)) = split_authority(host) else {
            return false;
        };
        if is_loopback_name(name) {
            return true;
        }
        let listed = self.allowed_hosts.iter().any(|entry| {
            split_authority(entry).is_some_and(|(entry_name, entry_port)| {
                entry_name.eq_ignore_ascii_case(name)
                    && (entry_port.is_none() || entry_port == port)
            })
        });
        if listed || self.loopback || !self.allowed_hosts.is_empty() {
            return listed;
        }
        !open || name.parse::<std::net::IpAddr>().is_ok()
    }

    /// Whether a browser origin may use the gateway: one the operator listed, or the
    /// gateway's own (the origin's authority is the `Host` the request was sent to).
    pub fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim_end_matches('/');
        if self
            .allowed_origins
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
        {
            return true;
        }
        let Ok(url) = url::Url::parse(origin) else {
            return false;
        };
        let Some(origin_host) = url.host_str() else {
            return false;
        };
        let authority = match url.port() {
            Some(port) => format!("{origin_host}:{port}"),
            None => origin_host.to_owned(),
        };
        host.is_some_and(|h| h.eq_ignore_ascii_case(&authority))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_binds_accept_only_loopback_names_and_listed_hosts() {
        let b = Boundary::new(
            true,
            vec!["gw.internal".into(), "proxy:8443".into()],
            vec![],
        );
        for ok in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]:8080",
            "127.1.2.3",
            "gw.internal:9",
            "proxy:8443",
        ] {
            assert!(b.host_allowed(Some(ok), true), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "proxy:8444",
            "127.0.0.1.evil.example",
            "localhost.evil",
            "10.0.0.1:8080",
            "[::1]junk",
            "[::1]:",
            ":8080",
            "127.0.0.1:80:80",
        ] {
            assert!(!b.host_allowed(Some(bad), false), "{bad}");
        }
        assert!(b.host_allowed(None, true));
    }

    #[test]
    fn other_binds_check_names_when_listed_or_open() {
        let any = Boundary::new(false, vec![], vec![]);
        assert!(any.host_allowed(Some("anything:1"), false));
        // Open on 0.0.0.0: addresses, yes; a name (a rebinding page's), no.
        assert!(any.host_allowed(Some("10.1.2.3:8080"), true));
        assert!(any.host_allowed(Some("[fd00::1]:8080"), true));
        assert!(!any.host_allowed(Some("evil.example:8080"), true));
        let listed = Boundary::new(false, vec!["gw.example".into()], vec![]);
        assert!(listed.host_allowed(Some("gw.example:443"), false));
        assert!(!listed.host_allowed(Some("other.example"), false));
    }

    #[test]
    fn own_and_listed_origins_pass_others_do_not() {
        let b = Boundary::new(true, vec![], vec!["https://app.example".into()]);
        assert!(b.origin_allowed("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(b.origin_allowed("https://app.example/", Some("gw:1")));
        assert!(!b.origin_allowed("http://evil.example", Some("127.0.0.1:8080")));
        assert!(!b.origin_allowed("http://127.0.0.1:9999", Some("127.0.0.1:8080")));
        assert!(!b.origin_allowed("null", Some("127.0.0.1:8080")));
        assert!(!b.origin_allowed("http://127.0.0.1:8080", None));
    }
}
