//! `PUT /_charla/admin/v1/users/{user_id}/role`: a user's role on the support desk, kept in the
//! store over the config's (`support::roster`).

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    routing::put,
};
use ruma::UserId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Administrator, PREFIX};
use crate::{
    api::support::{field_error, json_body},
    error::Result,
    services::Services,
    support::roster::{self, Grant, NewRole},
};

pub(super) fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    r.route(&format!("{PREFIX}/users/{{user_id}}/role"), put(set_role))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    role: String,
    /// Kept as JSON so that a wrong type is named as the field at fault, not a shape error.
    #[serde(default)]
    capacity: Option<Value>,
}

/// The role the body asks for: `admin`, `agent` (with an optional `capacity` of at least 1)
/// or `user` (no role, whatever the config says).
fn new_role(body: RoleBody) -> Result<NewRole> {
    let capacity = match body.capacity {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| *n >= 1)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    field_error("capacity", "capacity must be an integer of at least 1")
                })?,
        ),
    };
    let role = match body.role.as_str() {
        "admin" => NewRole::Admin,
        "agent" => return Ok(NewRole::Agent { capacity }),
        "user" => NewRole::User,
        _ => return Err(field_error("role", "role must be admin, agent or user")),
    };
    if capacity.is_some() {
        return Err(field_error("capacity", "only agents have a capacity"));
    }
    Ok(role)
}

/// `{"role": "admin"|"agent"|"user", "capacity": n|null}` → `{"user_id", "role", "capacity"}`:
/// the role the user has now.
async fn set_role(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    Path(user_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let user = UserId::parse(user_id.as_str())
        .map_err(|_| field_error("user_id", format!("{user_id} is not a user id")))?;
    let role = new_role(json_body(&body)?)?;
    let actor = admin.actor(&s.support.bot);
    let grant = roster::set_role(&s.desk(), &user, role, &actor).await?;
    let (role, capacity) = match grant {
        Grant::Admin => ("admin", None),
        Grant::Agent { capacity } => ("agent", Some(capacity)),
        Grant::User => ("user", None),
    };
    Ok(Json(
        json!({ "user_id": user, "role": role, "capacity": capacity }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(body: Value) -> Result<NewRole> {
        new_role(serde_json::from_value(body).unwrap())
    }

    fn field(body: Value) -> String {
        role(body).unwrap_err().body()["field"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn roles_and_capacities_are_checked_field_by_field() {
        assert_eq!(role(json!({"role": "admin"})).unwrap(), NewRole::Admin);
        assert_eq!(
            role(json!({"role": "agent", "capacity": 3})).unwrap(),
            NewRole::Agent { capacity: Some(3) }
        );
        assert_eq!(
            role(json!({"role": "agent", "capacity": null})).unwrap(),
            NewRole::Agent { capacity: None }
        );
        assert_eq!(role(json!({"role": "user"})).unwrap(), NewRole::User);
        assert_eq!(field(json!({"role": "boss"})), "role");
        assert_eq!(field(json!({"role": "agent", "capacity": 0})), "capacity");
        assert_eq!(field(json!({"role": "agent", "capacity": -2})), "capacity");
        assert_eq!(field(json!({"role": "agent", "capacity": "3"})), "capacity");
        assert_eq!(field(json!({"role": "agent", "capacity": 1.5})), "capacity");
        assert_eq!(field(json!({"role": "admin", "capacity": 2})), "capacity");
        assert_eq!(field(json!({"role": "user", "capacity": 2})), "capacity");
    }
}
