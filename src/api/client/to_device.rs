//! `PUT /sendToDevice/{eventType}/{txnId}`: messages straight to devices, outside rooms.

use std::sync::Arc;

use axum::Router;
use ruma::{api::client::to_device::send_event_to_device, to_device::DeviceIdOrAllDevices};
use serde_json::Value;

use crate::{
    api::ruma::{Ruma, route},
    e2ee::Target,
    error::{Error, Result},
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
    for (user, devices) in &req.body.messages {
        for (device, content) in devices {
            let content: Value = serde_json::from_str(content.json().get())
                .map_err(|e| Error::bad_json(e.to_string()))?;
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
    Ok(send_event_to_device::v3::Response::new())
}
