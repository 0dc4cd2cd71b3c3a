//! The address a request comes from, for limits per address (logins, registrations).
//!
//! The peer of the TCP connection, unless `[server] x_forwarded` says a reverse proxy in front
//! of the server sets `X-Forwarded-For`: then its last entry, the address the proxy saw. Only
//! turn that on behind a proxy that sets the header, or any client can claim any address.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use http::request::Parts;

use crate::config::ServerConfig;

pub fn client_ip(config: &ServerConfig, parts: &Parts) -> Option<IpAddr> {
    if config.x_forwarded
        && let Some(ip) = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
    {
        return Some(ip);
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip())
}
