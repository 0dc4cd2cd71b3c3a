//! Checking the PDUs other servers send or answer with: their signatures, with the keys of
//! every server that must have signed them (this server's own from memory, others' through the
//! keyring), and their content hashes (`events::incoming`).

use std::net::IpAddr;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, room_version_rules::RoomVersionRules,
    signatures::PublicKeyMap,
};
use serde_json::value::RawValue as RawJsonValue;

use super::Federation;
use crate::{
    error::{Error, Result},
    events::{Incoming, incoming},
};

impl Federation {
    /// A PDU of a room of `rules`, checked; `asker` is who made this server look (a peer's
    /// address; `None` for answers to this server's own requests), for the keyring's
    /// per-address bound on key fetches.
    pub(crate) async fn verify_pdu(
        &self,
        rules: &RoomVersionRules,
        raw: &RawJsonValue,
        asker: Option<IpAddr>,
    ) -> Result<Incoming> {
        let object = incoming::parse_object(raw.get())?;
        self.verify_object(rules, object, asker).await
    }

    pub(crate) async fn verify_object(
        &self,
        rules: &RoomVersionRules,
        object: CanonicalJsonObject,
        asker: Option<IpAddr>,
    ) -> Result<Incoming> {
        // An old key that expired after the event was sent still verifies it.
        let sent = object
            .get("origin_server_ts")
            .and_then(|ts| match ts {
                CanonicalJsonValue::Integer(ts) => u64::try_from(i64::from(*ts)).ok(),
                _ => None,
            })
            .unwrap_or(0);
        let mut keys = PublicKeyMap::new();
        for (server, key_ids) in incoming::signers(&object, rules)? {
            if server == self.server_name {
                keys.extend(self.key.public_keys());
                continue;
            }
            let key_id = key_ids
                .iter()
                .find(|id| id.starts_with("ed25519:"))
                .ok_or_else(|| Error::forbidden(format!("no ed25519 signature of {server}")))?;
            let known = self
                .keyring
                .keys_for_event(&server, key_id, sent, asker)
                .await
                .map_err(|e| Error::forbidden(format!("cannot check the event: {e}")))?;
            keys.extend(known);
        }
        incoming::verify(object, rules, &keys)
    }
}
