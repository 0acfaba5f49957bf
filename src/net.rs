//! Outbound address policy shared by every client that connects somewhere an
//! API user named: the web crawler (`sources/web/crawl.rs`) and the
//! S3/SQS clients of sources with an `endpoint_url` or `sqs_queue_url`
//! (`sources/s3/client.rs`).
//!
//! One classification of addresses ([`forbidden_address`]) so the crawler and
//! the AWS clients cannot drift apart, and one allowlist type for the origins
//! an operator trusts ([`AllowedOrigins`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use url::{Host, Url};

/// Why an address may not be reached on an API user's behalf, if it may not:
/// loopback, private, link-local, shared (CGNAT), multicast, reserved and
/// cloud-metadata ranges, also when carried inside IPv6 (mapped, NAT64, 6to4).
pub fn forbidden_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let segments = v6.segments();
            let embedded =
                |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
            // NAT64 (64:ff9b::/96, 64:ff9b:1::/48) and 6to4 (2002::/16) carry
            // an IPv4 address the network may route to.
            if segments[0] == 0x64 && segments[1] == 0xff9b {
                return forbidden_v4(embedded(segments[6], segments[7])).or(Some("NAT64 address"));
            }
            if segments[0] == 0x2002 {
                return forbidden_v4(embedded(segments[1], segments[2]));
            }
            if segments[0] == 0x2001 && segments[1] == 0 {
                return Some("Teredo address");
            }
            let first = segments[0];
            if v6.is_loopback() {
                Some("loopback address")
            } else if v6.is_unspecified() {
                Some("unspecified address")
            } else if v6.is_multicast() {
                Some("multicast address")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private (unique local) address")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local address")
            } else if v6.segments()[..6] == [0, 0, 0, 0, 0, 0] {
                Some("IPv4-compatible address")
            } else {
                None
            }
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Some("cloud metadata address")
    } else if ip.is_loopback() {
        Some("loopback address")
    } else if ip.is_private() {
        Some("private address")
    } else if ip.is_link_local() {
        Some("link-local address")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified address")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("broadcast, multicast or reserved address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT) address")
    } else {
        None
    }
}

/// The URL's host when it is an IP literal (clients connect to those
/// without asking a resolver, so they must be checked on their own).
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host() {
        Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

/// The first forbidden address among `addresses`, with the reason.
pub fn first_forbidden(
    addresses: impl IntoIterator<Item = IpAddr>,
) -> Option<(IpAddr, &'static str)> {
    addresses
        .into_iter()
        .find_map(|ip| forbidden_address(ip).map(|why| (ip, why)))
}

/// Resolves `host` and refuses the whole answer if any address in it is
/// forbidden: a client picks among the answers itself, so one private
/// address is enough to reach inside.
pub async fn resolve_public(host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| ResolveError::Lookup(format!("resolving {host}: {e}")))?
        .collect();
    match first_forbidden(addresses.iter().map(SocketAddr::ip)) {
        Some((ip, why)) => Err(ResolveError::Forbidden {
            host: host.to_string(),
            ip,
            why,
        }),
        None => Ok(addresses),
    }
}

/// A reqwest resolver that refuses forbidden addresses on every connection
/// a client makes (redirects and DNS rebinding included): for clients that
/// connect where an API user said.
pub struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addresses = resolve_public(&host)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{0}")]
    Lookup(String),
    /// The message names the host the caller gave and the kind of address,
    /// never the address: an API caller must not learn what internal names
    /// resolve to (`db.corp resolves to 10.1.2.3`).
    #[error("{host} resolves to a {why}")]
    Forbidden {
        host: String,
        ip: IpAddr,
        why: &'static str,
    },
}

/// Origins (scheme, host, port) an operator allows API-supplied endpoints to
/// name even though they are internal: `[s3] allowed_endpoints` /
/// `CHROMA_SYNCD_S3_ALLOWED_ENDPOINTS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<url::Origin>);

impl AllowedOrigins {
    /// Parses origins such as `http://minio.internal:9000`; a path, query or
    /// user:password is refused, so an entry cannot look narrower than it is.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut origins = Vec::new();
        for entry in entries.into_iter().map(str::trim).filter(|e| !e.is_empty()) {
            let url = Url::parse(entry)
                .map_err(|e| format!("`{entry}` is not an origin like http://host:port: {e}"))?;
            let bare = matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && url.path() == "/"
                && url.query().is_none()
                && url.fragment().is_none()
                && url.username().is_empty()
                && url.password().is_none();
            if !bare {
                return Err(format!(
                    "`{entry}` is not an origin: give scheme, host and port only, like \
                     http://minio.internal:9000"
                ));
            }
            origins.push(url.origin());
        }
        Ok(AllowedOrigins(origins))
    }

    /// Whether `url`'s origin is on the list (default ports made explicit,
    /// host names compared case-insensitively, as URL parsing normalises them).
    pub fn contains(&self, url: &Url) -> bool {
        let origin = url.origin();
        self.0.contains(&origin)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// In a config file: a list of origin strings.
impl<'de> serde::Deserialize<'de> for AllowedOrigins {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = Vec::<String>::deserialize(deserializer)?;
        AllowedOrigins::parse(entries.iter().map(String::as_str)).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_metadata_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
        ] {
            assert!(forbidden_address(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::"] {
            assert!(forbidden_address(ip.parse().unwrap()).is_none(), "{ip}");
        }
    }

    #[test]
    fn allowed_origins_match_scheme_host_and_port() {
        let allowed =
            AllowedOrigins::parse(["http://MinIO.internal:9000", " https://s3.corp "]).unwrap();
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(allowed.contains(&url("http://minio.internal:9000")));
        assert!(allowed.contains(&url("http://minio.internal:9000/bucket/key")));
        assert!(allowed.contains(&url("https://s3.corp:443/q")));
        assert!(!allowed.contains(&url("https://minio.internal:9000")));
        assert!(!allowed.contains(&url("http://minio.internal:9001")));
        assert!(!allowed.contains(&url("http://minio.internal.evil.com:9000")));
        for bad in [
            "minio:9000",
            "http://minio:9000/path",
            "http://user:pw@minio:9000",
            "ftp://minio",
        ] {
            assert!(AllowedOrigins::parse([bad]).is_err(), "{bad}");
        }
        assert!(AllowedOrigins::parse(["", " "]).unwrap().is_empty());
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused() {
        match resolve_public("localhost").await {
            Err(ResolveError::Forbidden { ip, .. }) => assert!(ip.is_loopback(), "{ip}"),
            other => panic!("localhost was not refused: {other:?}"),
        }
        let refused = resolve_public("127.0.0.1").await.unwrap_err().to_string();
        assert!(
            refused.contains("127.0.0.1") && refused.contains("loopback"),
            "{refused}"
        );
    }
}
