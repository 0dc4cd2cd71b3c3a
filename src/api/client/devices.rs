//! Devices: list, get, rename, delete (with user-interactive auth).

use std::sync::Arc;

use axum::Router;
use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::client::device::{
        self, delete_device, delete_devices, get_device, get_devices, update_device,
    },
};

use super::account::require_password;
use crate::users::uiaa::Operation;
use crate::{
    api::ruma::{Ruma, route},
    error::{Error, Result},
    services::Services,
    users::Device,
};

pub fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let r = route(r, list);
    let r = route(r, get);
    let r = route(r, update);
    let r = route(r, delete);
    route(r, delete_many)
}

fn to_ruma(d: Device) -> device::Device {
    let mut out = device::Device::new(d.device_id);
    out.display_name = d.display_name;
    out.last_seen_ip = d.last_seen_ip;
    out.last_seen_ts = d
        .last_seen_ts
        .and_then(|t| UInt::try_from(t).ok())
        .map(MilliSecondsSinceUnixEpoch);
    out
}

async fn list(
    s: Arc<Services>,
    req: Ruma<get_devices::v3::Request>,
) -> Result<get_devices::v3::Response> {
    let devices = s
        .users
        .devices(req.user_id())?
        .into_iter()
        .map(to_ruma)
        .collect();
    Ok(get_devices::v3::Response::new(devices))
}

async fn get(
    s: Arc<Services>,
    req: Ruma<get_device::v3::Request>,
) -> Result<get_device::v3::Response> {
    let device = s
        .users
        .device(req.user_id(), &req.body.device_id)?
        .ok_or_else(|| Error::not_found("Device not found"))?;
    Ok(get_device::v3::Response::new(to_ruma(device)))
}

async fn update(
    s: Arc<Services>,
    req: Ruma<update_device::v3::Request>,
) -> Result<update_device::v3::Response> {
    s.users
        .rename_device(
            req.user_id(),
            &req.body.device_id,
            req.body.display_name.clone(),
        )
        .await?;
    Ok(update_device::v3::Response::new())
}

async fn delete(
    s: Arc<Services>,
    req: Ruma<delete_device::v3::Request>,
) -> Result<delete_device::v3::Response> {
    let user = req.user_id().to_owned();
    if s.users.device(&user, &req.body.device_id)?.is_none() {
        return Err(Error::not_found("Device not found"));
    }
    require_password(&s, &user, Operation::DeleteDevices, req.json.as_ref()).await?;
    s.users
        .delete_devices(&user, std::slice::from_ref(&req.body.device_id))
        .await?;
    s.e2ee.wake_peers(&s.rooms, &user)?;
    s.announce_devices(&user, [&*req.body.device_id], true);
    Ok(delete_device::v3::Response::new())
}

async fn delete_many(
    s: Arc<Services>,
    req: Ruma<delete_devices::v3::Request>,
) -> Result<delete_devices::v3::Response> {
    let user = req.user_id().to_owned();
    require_password(&s, &user, Operation::DeleteDevices, req.json.as_ref()).await?;
    s.users.delete_devices(&user, &req.body.devices).await?;
    s.e2ee.wake_peers(&s.rooms, &user)?;
    s.announce_devices(&user, req.body.devices.iter().map(|d| &**d), true);
    Ok(delete_devices::v3::Response::new())
}
