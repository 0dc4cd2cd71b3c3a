//! Asking several servers at once on behalf of a local client (`/keys/query` and `/keys/claim`
//! for users of other servers): in parallel, each within [`PER_SERVER`], at most
//! [`MAX_SERVERS`] servers per request, and only what each server may say about its own users
//! is kept.

use std::{collections::BTreeMap, time::Duration};

use futures_util::future::join_all;
use ruma::{OwnedServerName, OwnedUserId, UserId};
use serde_json::{Map, Value, json};

use super::Federation;

/// How long one server may take (the spec's default `timeout` for key queries).
const PER_SERVER: Duration = Duration::from_secs(10);
/// Most servers one client request makes this server ask.
pub(crate) const MAX_SERVERS: usize = 20;

/// What the servers answered: each server's answer, and the servers that did not answer, as
/// the Client-Server API's `failures` (server name → error).
pub(crate) struct Answers {
    pub(crate) answers: Vec<(OwnedServerName, Value)>,
    pub(crate) failures: BTreeMap<String, Value>,
}

impl Answers {
    /// The entries of the object `field` of every answer that are about the answering
    /// server's own users, by user.
    pub(crate) fn about_own_users<'a>(
        &'a self,
        field: &'a str,
    ) -> impl Iterator<Item = (OwnedUserId, &'a Value)> + 'a {
        self.answers.iter().flat_map(move |(server, answer)| {
            answer
                .get(field)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(move |(user, value)| {
                    let user = UserId::parse(user).ok()?;
                    (user.server_name() == server).then_some((user, value))
                })
        })
    }
}

impl Federation {
    /// `POST path` with `{field: part}` on each server of `parts`.
    pub(crate) async fn ask_servers(
        &self,
        path: &str,
        field: &str,
        parts: BTreeMap<OwnedServerName, Map<String, Value>>,
    ) -> Answers {
        let mut failures = BTreeMap::new();
        let mut asked = Vec::new();
        for (i, (server, part)) in parts.into_iter().enumerate() {
            if i >= MAX_SERVERS {
                failures.insert(
                    server.to_string(),
                    json!({ "error": "Too many servers at once" }),
                );
                continue;
            }
            asked.push(async move {
                let body = json!({ field: part });
                let sent =
                    self.client
                        .send_signed(&server, reqwest::Method::POST, path, Some(&body));
                let answer = match tokio::time::timeout(PER_SERVER, sent).await {
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out".to_owned()),
                };
                (server, answer)
            });
        }
        let mut answers = Vec::new();
        for (server, answer) in join_all(asked).await {
            match answer {
                Ok(answer) => answers.push((server, answer)),
                Err(e) => {
                    tracing::info!(%server, error = %e, "a server did not answer a key request");
                    failures.insert(server.to_string(), json!({ "error": e }));
                }
            }
        }
        Answers { answers, failures }
    }
}
