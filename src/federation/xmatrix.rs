//! Request signatures between servers: the `Authorization: X-Matrix …` header (spec v1.16,
//! "Request Authentication").
//!
//! The origin signs a JSON object of the request's method, URI (path and query, as sent),
//! origin, destination and JSON body (`content`, when there is one) with its server key, and
//! sends the signature in the header with the key's id. The destination rebuilds the same object
//! from what it received and checks the signature with the origin's published key, so a request
//! changed on the way, replayed to another server or sent in another server's name fails.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, ServerName,
    signatures::{Ed25519KeyPair, PublicKeyMap},
};

/// Longest `Authorization` header read: a signature, a key id and two server names.
const MAX_HEADER: usize = 2048;

/// The parameters of an `X-Matrix` authorization header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XMatrix {
    pub(crate) origin: OwnedServerName,
    /// Absent in requests from servers older than spec v1.3; checked when present.
    pub(crate) destination: Option<OwnedServerName>,
    pub(crate) key: String,
    pub(crate) sig: String,
}

/// Why a request's signature is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Refusal {
    #[error("no X-Matrix authorization")]
    Missing,
    #[error("malformed X-Matrix authorization: {0}")]
    Malformed(&'static str),
    #[error("the request is for {0}, not this server")]
    WrongDestination(OwnedServerName),
    #[error("the signature does not verify")]
    BadSignature,
}

impl XMatrix {
    /// Parses the header's value (`X-Matrix origin="a",destination="b",key="ed25519:1",sig="…"`).
    /// Parameter names are case-insensitive; values may be quoted or bare tokens.
    pub(crate) fn parse(value: &str) -> Result<XMatrix, Refusal> {
        if value.len() > MAX_HEADER {
            return Err(Refusal::Malformed("too long"));
        }
        let (scheme, params) = value.trim().split_once(' ').ok_or(Refusal::Missing)?;
        if !scheme.eq_ignore_ascii_case("X-Matrix") {
            return Err(Refusal::Missing);
        }
        let (mut origin, mut destination, mut key, mut sig) = (None, None, None, None);
        for param in params.split(',') {
            let (name, value) = param
                .trim()
                .split_once('=')
                .ok_or(Refusal::Malformed("a parameter without a value"))?;
            let value = unquote(value.trim())?;
            let slot = match name.trim().to_ascii_lowercase().as_str() {
                "origin" => &mut origin,
                "destination" => &mut destination,
                "key" => &mut key,
                "sig" => &mut sig,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(Refusal::Malformed("a parameter given twice"));
            }
        }
        let server =
            |s: String| ServerName::parse(s).map_err(|_| Refusal::Malformed("a bad server name"));
        Ok(XMatrix {
            origin: server(origin.ok_or(Refusal::Malformed("no origin"))?)?,
            destination: destination.map(server).transpose()?,
            key: key.ok_or(Refusal::Malformed("no key"))?,
            sig: sig.ok_or(Refusal::Malformed("no sig"))?,
        })
    }

    /// The header's value.
    pub(crate) fn to_header(&self) -> String {
        let destination = self
            .destination
            .as_ref()
            .map(|d| format!(",destination=\"{d}\""))
            .unwrap_or_default();
        format!(
            "X-Matrix origin=\"{}\"{destination},key=\"{}\",sig=\"{}\"",
            self.origin, self.key, self.sig
        )
    }
}

/// A quoted string (with `\` escapes) or a bare token.
fn unquote(value: &str) -> Result<String, Refusal> {
    let Some(inner) = value.strip_prefix('"') else {
        return Ok(value.to_owned());
    };
    let inner = inner
        .strip_suffix('"')
        .ok_or(Refusal::Malformed("an unterminated quote"))?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' {
            chars
                .next()
                .ok_or(Refusal::Malformed("a dangling escape"))?
        } else {
            c
        });
    }
    Ok(out)
}

/// What a signature covers: the request as the origin sent it.
pub(crate) struct SignedRequest<'a> {
    pub(crate) method: &'a str,
    /// The path and query, exactly as on the request line.
    pub(crate) uri: &'a str,
    pub(crate) origin: &'a ServerName,
    pub(crate) destination: &'a ServerName,
    pub(crate) content: Option<&'a CanonicalJsonValue>,
}

impl SignedRequest<'_> {
    fn object(&self) -> CanonicalJsonObject {
        let s = |v: &str| CanonicalJsonValue::String(v.to_owned());
        let mut object = CanonicalJsonObject::from([
            ("method".to_owned(), s(self.method)),
            ("uri".to_owned(), s(self.uri)),
            ("origin".to_owned(), s(self.origin.as_str())),
            ("destination".to_owned(), s(self.destination.as_str())),
        ]);
        if let Some(content) = self.content {
            object.insert("content".to_owned(), content.clone());
        }
        object
    }

    /// The header that signs this request with `key` (the origin's).
    pub(crate) fn sign(
        &self,
        key: &Ed25519KeyPair,
    ) -> Result<XMatrix, ruma::signatures::JsonError> {
        let mut object = self.object();
        ruma::signatures::sign_json(self.origin.as_str(), key, &mut object)?;
        let key_id = format!("ed25519:{}", key.version());
        let sig = object
            .get("signatures")
            .and_then(|s| s.as_object())
            .and_then(|s| s.get(self.origin.as_str()))
            .and_then(|s| s.as_object())
            .and_then(|s| s.get(&key_id))
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_owned();
        Ok(XMatrix {
            origin: self.origin.to_owned(),
            destination: Some(self.destination.to_owned()),
            key: key_id,
            sig,
        })
    }

    /// Checks `header` against this request, received by `self.destination`, with `keys`
    /// (the origin's verify keys by id, unpadded base64).
    pub(crate) fn verify(&self, header: &XMatrix, keys: &PublicKeyMap) -> Result<(), Refusal> {
        if let Some(destination) = &header.destination
            && destination != self.destination
        {
            return Err(Refusal::WrongDestination(destination.clone()));
        }
        let mut object = self.object();
        let signature = CanonicalJsonObject::from([(
            header.key.clone(),
            CanonicalJsonValue::String(header.sig.clone()),
        )]);
        let signatures = CanonicalJsonObject::from([(
            header.origin.to_string(),
            CanonicalJsonValue::Object(signature),
        )]);
        object.insert("signatures".into(), CanonicalJsonValue::Object(signatures));
        ruma::signatures::verify_json(keys, &object).map_err(|_| Refusal::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
    use ruma::server_name;

    use super::*;
    use crate::events::SigningKey;

    fn keys_of(key: &SigningKey) -> PublicKeyMap {
        let public = STANDARD_NO_PAD.encode(key.key_pair.public_key());
        let set = BTreeMap::from([(
            format!("ed25519:{}", key.key_pair.version()),
            ruma::serde::Base64::parse(&public).unwrap(),
        )]);
        BTreeMap::from([(key.server_name.to_string(), set)])
    }

    #[test]
    fn a_signed_request_verifies_and_any_change_breaks_it() {
        let key = SigningKey::spec_test_key();
        let content: CanonicalJsonValue =
            serde_json::from_value(serde_json::json!({ "pdus": [], "edus": [{"a": 1}] })).unwrap();
        let request = SignedRequest {
            method: "PUT",
            uri: "/_matrix/federation/v1/send/1?x=%20y",
            origin: server_name!("domain"),
            destination: server_name!("other.example:8448"),
            content: Some(&content),
        };
        let header = request.sign(&key.key_pair).unwrap();
        assert_eq!(header.key, "ed25519:1");
        // Through the header's text and back.
        let parsed = XMatrix::parse(&header.to_header()).unwrap();
        assert_eq!(parsed, header);
        let keys = keys_of(&key);
        request.verify(&parsed, &keys).unwrap();
        let other_content: CanonicalJsonValue =
            serde_json::from_value(serde_json::json!({ "pdus": [] })).unwrap();
        for changed in [
            SignedRequest {
                method: "POST",
                ..copy(&request)
            },
            SignedRequest {
                uri: "/_matrix/federation/v1/send/2",
                ..copy(&request)
            },
            SignedRequest {
                content: Some(&other_content),
                ..copy(&request)
            },
            SignedRequest {
                content: None,
                ..copy(&request)
            },
            SignedRequest {
                origin: server_name!("evil.example"),
                ..copy(&request)
            },
        ] {
            assert!(changed.verify(&parsed, &keys).is_err());
        }
        // Sent to another server, then replayed here: the header names the other one.
        let here = SignedRequest {
            destination: server_name!("third.example"),
            ..copy(&request)
        };
        assert_eq!(
            here.verify(&parsed, &keys),
            Err(Refusal::WrongDestination(
                server_name!("other.example:8448").to_owned()
            ))
        );
    }

    fn copy<'a>(r: &SignedRequest<'a>) -> SignedRequest<'a> {
        SignedRequest {
            method: r.method,
            uri: r.uri,
            origin: r.origin,
            destination: r.destination,
            content: r.content,
        }
    }

    #[test]
    fn headers_parse_as_servers_send_them() {
        let h = XMatrix::parse(
            "X-Matrix origin=origin.example,Key=\"ed25519:a_b\",sig=\"ab\\\"c\", destination=\"d.example:8448\"",
        )
        .unwrap();
        assert_eq!(h.origin, "origin.example");
        assert_eq!(
            h.destination.as_deref().map(|d| d.as_str()),
            Some("d.example:8448")
        );
        assert_eq!((h.key.as_str(), h.sig.as_str()), ("ed25519:a_b", "ab\"c"));
        // Without a destination (servers before v1.3).
        let old =
            XMatrix::parse("X-Matrix origin=\"o.example\",key=\"ed25519:1\",sig=\"s\"").unwrap();
        assert_eq!(old.destination, None);
        for (bad, why) in [
            ("Bearer abc", Refusal::Missing),
            ("X-Matrix", Refusal::Missing),
            (
                "X-Matrix key=\"k\",sig=\"s\"",
                Refusal::Malformed("no origin"),
            ),
            (
                "X-Matrix origin=\"o\",sig=\"s\"",
                Refusal::Malformed("no key"),
            ),
            (
                "X-Matrix origin=\"o\",key=\"k\"",
                Refusal::Malformed("no sig"),
            ),
            (
                "X-Matrix origin=\"o\",origin=\"p\",key=\"k\",sig=\"s\"",
                Refusal::Malformed("a parameter given twice"),
            ),
            (
                "X-Matrix origin=\"o,key=\"k\",sig=\"s\"",
                Refusal::Malformed("an unterminated quote"),
            ),
            (
                "X-Matrix origin=\"not a server\",key=\"k\",sig=\"s\"",
                Refusal::Malformed("a bad server name"),
            ),
        ] {
            assert_eq!(XMatrix::parse(bad), Err(why), "{bad}");
        }
        let long = format!(
            "X-Matrix origin=\"o\",key=\"k\",sig=\"{}\"",
            "a".repeat(3000)
        );
        assert_eq!(XMatrix::parse(&long), Err(Refusal::Malformed("too long")));
    }
}
