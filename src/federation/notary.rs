//! This server as a notary (`/_matrix/key/v2/query`): other servers' key documents as they
//! signed them, from the keyring (fetched when not known or not valid long enough), each
//! signed by this server too, so that a server that cannot reach a peer can still check its
//! signatures. This server's own document is in the answer when asked for.
//!
//! Anyone may ask, unauthenticated (the answers sign themselves), so what one request causes
//! is bounded: at most [`MAX_SERVERS`] servers, fetched concurrently under the keyring's limits
//! (one fetch a second per address, a server that failed not asked again for a minute).

use std::{collections::BTreeMap, net::IpAddr};

use futures_util::future::join_all;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedServerName};
use serde_json::Value;

use super::Federation;
use crate::error::{Error, Result};

/// Most servers one key query may name.
pub(crate) const MAX_SERVERS: usize = 50;

impl Federation {
    /// The key documents of `servers`, each wanted valid until at least its time (ms since
    /// the epoch), signed by this server; a server whose keys cannot be had is left out.
    pub(crate) async fn query_keys(
        &self,
        servers: BTreeMap<OwnedServerName, u64>,
        asker: IpAddr,
    ) -> Result<Vec<Value>> {
        if servers.len() > MAX_SERVERS {
            return Err(Error::bad_json(format!(
                "at most {MAX_SERVERS} servers a query"
            )));
        }
        let now = u64::from(ruma::MilliSecondsSinceUnixEpoch::now().get());
        let answers = join_all(servers.into_iter().map(|(server, valid_until)| async move {
            if server == self.server_name {
                return super::keys::server_keys(&self.key, now).ok();
            }
            match self
                .keyring
                .document(&server, valid_until, Some(asker))
                .await
            {
                Ok(document) => self.countersign(&document),
                Err(e) => {
                    tracing::debug!(%server, error = %e, "key query: keys not had");
                    None
                }
            }
        }))
        .await;
        Ok(answers.into_iter().flatten().collect())
    }

    /// `document` with this server's signature added to its server's.
    fn countersign(&self, document: &Value) -> Option<Value> {
        let mut object: CanonicalJsonObject = serde_json::from_value(document.clone()).ok()?;
        ruma::signatures::sign_json(self.server_name.as_str(), &self.key.key_pair, &mut object)
            .ok()?;
        serde_json::to_value(CanonicalJsonValue::Object(object)).ok()
    }
}
