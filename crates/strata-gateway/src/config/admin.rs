//! `[admin]`: the admin listener (metrics, health, readiness, the running config, the dashboard).

use std::net::SocketAddr;
use std::ops::Range;

use serde::Deserialize;
use strata::http::client_ip::Cidr;
use toml::Spanned;

use super::{ConfigError, Source};

/// `[admin]`: where the admin endpoints are served. Off unless configured; never on the public
/// listeners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin {
    /// The address it listens on, e.g. `127.0.0.1:9901`.
    pub listen: SocketAddr,
    /// Where `listen` is written (for `strata check`'s warning about a public admin listener).
    pub listen_span: Range<usize>,
    /// The peers allowed to connect (`allow = ["10.0.0.0/8"]`); empty: any peer that can reach
    /// `listen`. Others get a `403`.
    pub allow: Vec<Cidr>,
}

impl Admin {
    /// Whether `peer` may use the admin endpoints.
    pub fn allows(&self, peer: std::net::IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(peer))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminSection {
    listen: Spanned<String>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
}

pub(super) fn parse_admin(source: Source<'_>, s: AdminSection, errors: &mut Vec<ConfigError>) -> Option<Admin> {
    let listen = match s.listen.get_ref().parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            errors.push(source.error(
                s.listen.span(),
                format!(
                    "`listen = \"{}\"`: expected an IP address and port, e.g. \"127.0.0.1:9901\"",
                    s.listen.get_ref()
                ),
            ));
            None
        }
    };
    let mut allow = Vec::new();
    for cidr in &s.allow {
        match Cidr::parse(cidr.get_ref()) {
            Some(c) => allow.push(c),
            None => errors.push(source.error(
                cidr.span(),
                format!(
                    "`allow`: `{}` is not an address or CIDR block, e.g. \"10.0.0.0/8\" or \"::1\"",
                    cidr.get_ref()
                ),
            )),
        }
    }
    Some(Admin { listen: listen?, listen_span: s.listen.span(), allow })
}
