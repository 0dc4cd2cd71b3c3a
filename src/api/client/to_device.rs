//! `PUT /sendToDevice/{eventType}/{txnId}`: messages straight to devices, outside rooms.

use std::sync::Arc;

use axum::Router;
use ruma::{api::client::to_device::send_event_to_device, to_device::DeviceIdOrAllDevices};
use serde_json::{Value, json};

use crate::{
    api::ruma::{Ruma, route},
    e2ee::Target,
    error::{Error, Result},
    federation::devices::RemoteMessages,
    services::Services,
};

pub fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    route(r, send)
}

async fn send(
    s: Arc<Services>,
    req: Ruma<send_event_to_device::v3::Request>,
) -> Result<send_event_to_device::v3::Response> {
    let mut messages = Vec::new();
    let mut remote = RemoteMessages::new();
    for (user, devices) in &req.body.messages {
        for (device, content) in devices {
            let content: Value = serde_json::from_str(content.json().get())
                .map_err(|e| Error::bad_json(e.to_string()))?;
            if user.server_name() != s.config.server_name && s.federation.is_some() {
                let users = remote.entry(user.server_name().to_owned()).or_default();
                let devices = users.entry(user.to_string()).or_insert_with(|| json!({}));
                devices[device.to_string()] = content;
                continue;
            }
            let target = match device {
                DeviceIdOrAllDevices::AllDevices => Target::AllDevices,
                DeviceIdOrAllDevices::DeviceId(d) => Target::Device(d.clone()),
            };
            messages.push((user.clone(), target, content));
        }
    }
    s.e2ee
        .send_to_device(
            &s.users,
            req.identity(),
            &req.body.event_type.to_string(),
            req.body.txn_id.as_str(),
            messages,
        )
        .await?;
    if let Some(federation) = &s.federation
        && !remote.is_empty()
    {
        let event_type = req.body.event_type.to_string();
        // Unique per sending device and transaction, as the spec asks of `message_id`.
        let message_id = format!("{}.{}", req.identity().device_id, req.body.txn_id);
        // Answered once they are durable: a lost one is an E2EE key share nobody receives.
        let ticket = federation.send_to_device(
            &s.store,
            req.user_id(),
            (&event_type, &message_id),
            remote,
        )?;
        s.store.durable(ticket).await?;
    }
    Ok(send_event_to_device::v3::Response::new())
}
