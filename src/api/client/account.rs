//! Accounts and sessions: register, login, logout, whoami, password, deactivate.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::{
    account::{
        change_password, check_registration_token_validity, deactivate, get_username_availability,
        register, whoami,
    },
    session::{get_login_types, login, logout, logout_all},
    uiaa::UserIdentifier,
};
use serde_json::Value;

use crate::{
    api::ruma::{Ruma, route},
    config::RegistrationMode,
    error::{Error, Result},
    services::Services,
    users::{
        NewAccount,
        uiaa::{DUMMY, Operation, PASSWORD, REGISTRATION_TOKEN, StageContext},
    },
};

pub fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let r = route(r, register);
    let r = route(r, available);
    let r = route(r, token_validity);
    let r = route(r, login_types);
    let r = route(r, login);
    let r = route(r, logout);
    let r = route(r, logout_all);
    let r = route(r, whoami);
    let r = route(r, change_password);
    route(r, deactivate)
}

async fn register(
    s: Arc<Services>,
    req: Ruma<register::v3::Request>,
) -> Result<register::v3::Response> {
    if req.body.kind == register::RegistrationKind::Guest {
        return Err(Error::guest_access_forbidden(
            "Guest access is not enabled on this server",
        ));
    }
    // An appservice registers the users of its namespace whatever `registration.mode` says,
    // as in Synapse: the mode is about people signing up, and a bridge's puppets (a WhatsApp
    // customer's) must exist for their messages to arrive.
    if let Some(asv) = req.maybe_identity().and_then(|who| who.appservice.clone()) {
        return register_for_appservice(&s, &req, &asv).await;
    }
    if req.body.login_type == Some(register::LoginType::ApplicationService) {
        return Err(Error::missing_token(
            "m.login.application_service needs the appservice's as_token",
        ));
    }
    let mode = s.config.registration.mode;
    if mode == RegistrationMode::Closed {
        return Err(Error::forbidden("Registration is disabled"));
    }
    let localpart = match &req.body.username {
        Some(name) => name.to_lowercase(),
        None => crate::users::random_string(12).to_lowercase(),
    };
    // Refuse a bad or taken name before the client goes through the auth stages.
    let user_id = s.users.user_id_for(&localpart)?;
    if s.users.exists(&user_id)? {
        return Err(Error::user_in_use("User ID already taken"));
    }
    if s.appservices.exclusive_user_owner(&user_id).is_some() {
        return Err(Error::exclusive(
            "This user ID is reserved by an application service",
        ));
    }
    if crate::webchat::is_customer_localpart(&localpart) {
        return Err(Error::exclusive(
            "This user ID is reserved for web chat customers",
        ));
    }
    let flow: &[&'static str] = match mode {
        RegistrationMode::Token => &[REGISTRATION_TOKEN],
        _ => &[DUMMY],
    };
    let auth = req.json.as_ref().and_then(|j| j.get("auth"));
    s.uiaa
        .check(
            auth,
            &[flow],
            StageContext {
                users: &s.users,
                operation: Operation::Register,
                user: None,
                registration_tokens: &s.config.registration.tokens,
            },
        )
        .await?;
    let Some(password) = req.body.password.as_deref() else {
        return Err(Error::missing_param("A password is required"));
    };
    let user_id = s
        .users
        .create(NewAccount {
            localpart: &localpart,
            password: Some(password),
            admin: false,
            displayname: None,
        })
        .await?;
    registered(&s, &req, user_id).await
}

/// `m.login.application_service`: an appservice creates a user of its namespace (exclusive or
/// not), without a password or auth stages, whatever the registration mode. As Synapse: a user
/// outside the namespace, or inside another appservice's exclusive one, is `M_EXCLUSIVE`; a
/// session is opened unless `inhibit_login`.
async fn register_for_appservice(
    s: &Services,
    req: &Ruma<register::v3::Request>,
    asv: &crate::appservice::AppService,
) -> Result<register::v3::Response> {
    let Some(localpart) = req.body.username.as_deref().map(str::to_lowercase) else {
        return Err(Error::missing_param("An appservice must name the user"));
    };
    let user_id = s.users.user_id_for(&localpart)?;
    if !asv.owns_user(&user_id) {
        return Err(Error::exclusive(
            "Invalid user localpart for this application service.",
        ));
    }
    if s.appservices
        .exclusive_user_owner(&user_id)
        .is_some_and(|owner| owner.id() != asv.id())
    {
        return Err(Error::exclusive(
            "This user ID is reserved by an application service",
        ));
    }
    if s.users.exists(&user_id)? {
        return Err(Error::user_in_use("User ID already taken"));
    }
    s.users
        .create(NewAccount {
            localpart: &localpart,
            password: None,
            admin: false,
            displayname: None,
        })
        .await?;
    registered(s, req, user_id).await
}

/// The answer to a successful registration, with a session unless `inhibit_login`.
async fn registered(
    s: &Services,
    req: &Ruma<register::v3::Request>,
    user_id: ruma::OwnedUserId,
) -> Result<register::v3::Response> {
    let mut response = register::v3::Response::new(user_id.clone());
    if !req.body.inhibit_login {
        let session = s
            .users
            .open_session(
                &user_id,
                req.body.device_id.clone(),
                req.body.initial_device_display_name.clone(),
            )
            .await?;
        response.access_token = Some(session.access_token);
        response.device_id = Some(session.device_id);
    }
    Ok(response)
}

async fn available(
    s: Arc<Services>,
    req: Ruma<get_username_availability::v3::Request>,
) -> Result<get_username_availability::v3::Response> {
    let localpart = req.body.username.to_lowercase();
    let user_id = s.users.user_id_for(&localpart)?;
    if s.users.exists(&user_id)? {
        return Err(Error::user_in_use("User ID already taken"));
    }
    if crate::webchat::is_customer_localpart(&localpart) {
        return Err(Error::exclusive(
            "This user ID is reserved for web chat customers",
        ));
    }
    Ok(get_username_availability::v3::Response::new(true))
}

/// Lets a client check a registration token before going through the auth stages.
async fn token_validity(
    s: Arc<Services>,
    req: Ruma<check_registration_token_validity::v1::Request>,
) -> Result<check_registration_token_validity::v1::Response> {
    let registration = &s.config.registration;
    let valid = match registration.mode {
        RegistrationMode::Closed => return Err(Error::forbidden("Registration is disabled")),
        RegistrationMode::Open => false,
        RegistrationMode::Token => registration
            .tokens
            .iter()
            .any(|t| crate::users::uiaa::constant_time_eq(t, &req.body.token)),
    };
    Ok(check_registration_token_validity::v1::Response::new(valid))
}

async fn login_types(
    _: Arc<Services>,
    _: Ruma<get_login_types::v3::Request>,
) -> Result<get_login_types::v3::Response> {
    let password = get_login_types::v3::LoginType::Password(Default::default());
    let appservice = get_login_types::v3::LoginType::ApplicationService(Default::default());
    Ok(get_login_types::v3::Response::new(vec![
        password, appservice,
    ]))
}

async fn login(s: Arc<Services>, req: Ruma<login::v3::Request>) -> Result<login::v3::Response> {
    if let login::v3::LoginInfo::ApplicationService(info) = &req.body.login_info {
        return login_for_appservice(&s, &req, info.identifier.as_ref()).await;
    }
    let login::v3::LoginInfo::Password(info) = &req.body.login_info else {
        return Err(Error::unknown("Unsupported login type"));
    };
    let user = match &info.identifier {
        Some(UserIdentifier::Matrix(id)) => id.user.clone(),
        Some(_) => return Err(Error::unknown("Only user identifiers are supported")),
        None => req
            .json
            .as_ref()
            .and_then(|j| j.get("user"))
            .and_then(Value::as_str)
            .ok_or_else(|| Error::missing_param("Missing identifier"))?
            .to_owned(),
    };
    // Per address (spraying one password over many accounts) and per account (many
    // passwords at one account, from many addresses).
    if let Some(ip) = req.client_ip {
        s.login_limiter.check(&format!("ip:{ip}"))?;
    }
    let user_id = s.users.parse_login_user(&user)?;
    s.login_limiter.check(&format!("user:{user_id}"))?;
    s.users.check_password(&user_id, &info.password).await?;
    let session = s
        .users
        .open_session(
            &user_id,
            req.body.device_id.clone(),
            req.body.initial_device_display_name.clone(),
        )
        .await?;
    tracing::info!(user = %user_id, device = %session.device_id, "logged in");
    let mut response =
        login::v3::Response::new(session.user_id, session.access_token, session.device_id);
    response.well_known = None;
    Ok(response)
}

/// `m.login.application_service`: a session for a user of the appservice's namespace.
async fn login_for_appservice(
    s: &Services,
    req: &Ruma<login::v3::Request>,
    identifier: Option<&UserIdentifier>,
) -> Result<login::v3::Response> {
    let Some(asv) = req.maybe_identity().and_then(|w| w.appservice.clone()) else {
        return Err(Error::missing_token(
            "m.login.application_service needs the appservice's as_token",
        ));
    };
    let Some(UserIdentifier::Matrix(id)) = identifier else {
        return Err(Error::missing_param("Missing user identifier"));
    };
    let user_id = s.users.parse_login_user(&id.user)?;
    if !asv.owns_user(&user_id) {
        return Err(Error::exclusive(
            "This user is not in the application service's namespace",
        ));
    }
    if !s.users.is_active(&user_id)? {
        return Err(Error::forbidden("Unknown or deactivated user"));
    }
    let session = s
        .users
        .open_session(
            &user_id,
            req.body.device_id.clone(),
            req.body.initial_device_display_name.clone(),
        )
        .await?;
    Ok(login::v3::Response::new(
        session.user_id,
        session.access_token,
        session.device_id,
    ))
}

async fn logout(s: Arc<Services>, req: Ruma<logout::v3::Request>) -> Result<logout::v3::Response> {
    let who = req.identity();
    s.users
        .delete_devices(&who.user_id, std::slice::from_ref(&who.device_id))
        .await?;
    s.e2ee.wake_peers(&s.rooms, &who.user_id)?;
    Ok(logout::v3::Response::new())
}

async fn logout_all(
    s: Arc<Services>,
    req: Ruma<logout_all::v3::Request>,
) -> Result<logout_all::v3::Response> {
    s.users.logout_all(req.user_id()).await?;
    Ok(logout_all::v3::Response::new())
}

async fn whoami(s: Arc<Services>, req: Ruma<whoami::v3::Request>) -> Result<whoami::v3::Response> {
    let who = req.identity();
    let mut response = whoami::v3::Response::new(who.user_id.clone(), false);
    // Appservice requests act without a device.
    response.device_id = who.appservice.is_none().then(|| who.device_id.clone());
    let _ = &s;
    Ok(response)
}

/// Runs the password stage of user-interactive auth for the requesting user.
pub(super) async fn require_password(
    s: &Services,
    user: &ruma::UserId,
    operation: Operation,
    json: Option<&Value>,
) -> Result<()> {
    let auth = json.and_then(|j| j.get("auth"));
    s.uiaa
        .check(
            auth,
            &[&[PASSWORD]],
            StageContext {
                users: &s.users,
                operation,
                user: Some(user),
                registration_tokens: &[],
            },
        )
        .await
}

async fn change_password(
    s: Arc<Services>,
    req: Ruma<change_password::v3::Request>,
) -> Result<change_password::v3::Response> {
    let who = req.identity();
    require_password(
        &s,
        &who.user_id,
        Operation::ChangePassword,
        req.json.as_ref(),
    )
    .await?;
    s.users
        .set_password(&who.user_id, &req.body.new_password)
        .await?;
    if req.body.logout_devices {
        s.users.logout_others(&who.user_id, &who.device_id).await?;
    }
    Ok(change_password::v3::Response::new())
}

async fn deactivate(
    s: Arc<Services>,
    req: Ruma<deactivate::v3::Request>,
) -> Result<deactivate::v3::Response> {
    let user = req.user_id().to_owned();
    require_password(&s, &user, Operation::Deactivate, req.json.as_ref()).await?;
    s.rooms.leave_all(&user).await?;
    s.users.deactivate(&user).await?;
    Ok(deactivate::v3::Response::new(
        ruma::api::client::account::ThirdPartyIdRemovalStatus::NoSupport,
    ))
}
