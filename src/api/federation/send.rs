//! `PUT /_matrix/federation/v1/send/{txnId}`: a transaction of PDUs and EDUs from another
//! server. The work is the federation service's (`federation/transactions.rs`).

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
};
use serde_json::Value;

use super::{federation, peer::Peer};
use crate::{error::Error, federation::transactions::Receivers, services::Services};

pub(super) async fn transaction(
    State(s): State<Arc<Services>>,
    Path(txn_id): Path<String>,
    peer: Peer,
) -> Result<Json<Value>, Error> {
    tracing::debug!(origin = %peer.origin, %txn_id, "transaction");
    let receivers = Receivers {
        rooms: &s.rooms,
        users: &s.users,
        e2ee: &s.e2ee,
        typing: &s.typing,
        receipts: &s.receipts,
        presence: &s.presence,
    };
    let _turn = peer.in_flight.transaction_turn().await;
    federation(&s)?
        .receive_transaction(&receivers, &peer.origin, peer.from, &peer.raw()?)
        .await
        .map(Json)
}
