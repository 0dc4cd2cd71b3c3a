//! Which server `charla admin` talks to, and with which token.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

use reqwest::Url;

use super::client::Failure;
use crate::config::Config;

/// The admin API's base URL and the token to present.
pub(crate) struct Target {
    pub(crate) url: Url,
    pub(crate) token: String,
}

/// `--url` and `--token` when given; otherwise `[server] listen` and `<storage.path>/admin.token`
/// of the config (read only when one of them is missing).
pub(crate) fn resolve(
    config: &Path,
    url: Option<String>,
    token: Option<String>,
) -> Result<Target, Failure> {
    let (url, token) = match (url, token) {
        (Some(url), Some(token)) => (url, token),
        (url, token) => {
            let config = Config::load(config)
                .map_err(|e| Failure::local(format!("{}: {e}", config.display())))?;
            let token = match token {
                Some(token) => token,
                None => read_token(&config.storage.path)?,
            };
            (
                url.unwrap_or_else(|| local_url(config.server.listen)),
                token,
            )
        }
    };
    let url = Url::parse(&url).map_err(|e| Failure::local(format!("--url {url:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Failure::local(format!("--url {url}: only http and https")));
    }
    Ok(Target { url, token })
}

/// The URL of a server listening on `listen`, from this machine: a wildcard address is
/// reached on loopback.
fn local_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

fn read_token(data: &Path) -> Result<String, Failure> {
    let path = data.join(crate::users::admin_token::ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_owned()),
        Ok(_) => Err(Failure::local(format!("{} is empty", path.display()))),
        Err(e) => Err(Failure::local(format!(
            "cannot read the admin token {}: {e} (the server writes it on start; or pass --token)",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listen_address_is_reached_on_loopback() {
        assert_eq!(
            local_url("0.0.0.0:8008".parse().unwrap()),
            "http://127.0.0.1:8008"
        );
        assert_eq!(local_url("[::]:8008".parse().unwrap()), "http://[::1]:8008");
        assert_eq!(
            local_url("10.1.2.3:80".parse().unwrap()),
            "http://10.1.2.3:80"
        );
    }
}
