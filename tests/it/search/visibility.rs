//! Search respects what the asker may read: their rooms, their history visibility, redactions.

use std::collections::{BTreeSet, HashMap};

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;

use super::{bodies, indexed, room_events};
use crate::common::{Client, V3, enc};

async fn set_visibility(c: &Client, room: &str, visibility: &str) {
    let (status, body) = c
        .put(
            &format!("{V3}/rooms/{}/state/m.room.history_visibility/", enc(room)),
            json!({ "history_visibility": visibility }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_joined_room_hides_what_came_before_the_join_and_strangers_find_nothing() {
    let s = super::server().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let eve = s.user("eve").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    set_visibility(&alice, &room, "joined").await;
    alice.send_text(&room, "a1", "secreto anterior").await;
    assert_eq!(bob.join(&room).await.0, 200);
    alice.send_text(&room, "a2", "secreto posterior").await;
    indexed(&s).await;
    let found = room_events(&bob, json!({ "search_term": "secreto" })).await;
    assert_eq!(bodies(&found), ["secreto posterior"], "{found}");
    assert_eq!(
        found["count"], 1,
        "the count does not leak what bob cannot read"
    );
    let found = room_events(
        &alice,
        json!({ "search_term": "secreto", "order_by": "recent" }),
    )
    .await;
    assert_eq!(bodies(&found), ["secreto posterior", "secreto anterior"]);
    let found = room_events(&eve, json!({ "search_term": "secreto" })).await;
    assert_eq!(found["count"], 0, "not a member: {found}");
    // Naming the room in the filter does not let a stranger in.
    let found = room_events(
        &eve,
        json!({ "search_term": "secreto", "filter": { "rooms": [room] } }),
    )
    .await;
    assert_eq!(found["count"], 0);
    // A member who left searches the room no more.
    let (status, _) = bob
        .post(&format!("{V3}/rooms/{}/leave", enc(&room)), json!({}))
        .await;
    assert_eq!(status, 200);
    indexed(&s).await;
    let found = room_events(&bob, json!({ "search_term": "secreto" })).await;
    assert_eq!(found["count"], 0, "{found}");
}

/// One step of the randomized history.
#[derive(Debug, Clone, Copy)]
enum Step {
    Join(usize, usize),
    Leave(usize, usize),
    Invite(usize, usize),
    Say(usize, usize),
    Visibility(usize, &'static str),
}

const VISIBILITIES: [&str; 4] = ["shared", "joined", "invited", "world_readable"];

/// A randomized history of joins, leaves, invites, messages and visibility changes: then every
/// user searches every word, and finds exactly the messages they may read (`/event` answers
/// 200) in the rooms they are in, never one they may not.
#[tokio::test]
async fn nobody_ever_finds_a_word_they_cannot_read() {
    for seed in [7_u64, 42, 1234] {
        randomized_history(seed).await;
    }
}

async fn randomized_history(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let s = super::server().await;
    let mut users = Vec::new();
    for i in 0..4 {
        users.push(s.user(&format!("u{i}")).await);
    }
    // u0 owns the rooms and stays in them.
    let mut rooms = Vec::new();
    for _ in 0..3 {
        let room = users[0]
            .create_room(json!({ "preset": "public_chat" }))
            .await;
        set_visibility(&users[0], &room, VISIBILITIES[rng.gen_range(0..4)]).await;
        rooms.push(room);
    }
    let mut joined: HashMap<(usize, usize), bool> = HashMap::new();
    for r in 0..rooms.len() {
        joined.insert((0, r), true);
    }
    let mut words: Vec<(String, usize)> = Vec::new();
    for step in 0..70 {
        let user = rng.gen_range(0..users.len());
        let room = rng.gen_range(0..rooms.len());
        let is_in = joined.get(&(user, room)).copied().unwrap_or(false);
        let action = match rng.gen_range(0..10) {
            0..=3 if is_in => Step::Say(user, room),
            0..=3 => Step::Join(user, room),
            4 | 5 if user != 0 && is_in => Step::Leave(user, room),
            4 | 5 => Step::Join(user, room),
            6 if user != 0 && !is_in => Step::Invite(user, room),
            7 => Step::Visibility(room, VISIBILITIES[rng.gen_range(0..4)]),
            _ => Step::Say(0, room),
        };
        let room_id = &rooms[match action {
            Step::Join(_, r) | Step::Leave(_, r) | Step::Invite(_, r) | Step::Say(_, r) => r,
            Step::Visibility(r, _) => r,
        }];
        match action {
            Step::Join(u, r) => {
                let (status, body) = users[u].join(room_id).await;
                assert_eq!(status, 200, "{body}");
                joined.insert((u, r), true);
            }
            Step::Leave(u, r) => {
                let (status, body) = users[u]
                    .post(&format!("{V3}/rooms/{}/leave", enc(room_id)), json!({}))
                    .await;
                assert_eq!(status, 200, "{body}");
                joined.insert((u, r), false);
            }
            Step::Invite(u, _) => {
                let (status, body) = users[0]
                    .post(
                        &format!("{V3}/rooms/{}/invite", enc(room_id)),
                        json!({ "user_id": format!("@u{u}:localhost") }),
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
            }
            Step::Say(u, r) => {
                let word = format!("w{step:04}z");
                users[u]
                    .send_text(room_id, &format!("s{step}"), &format!("mensaje {word}"))
                    .await;
                words.push((word, r));
            }
            Step::Visibility(_, v) => set_visibility(&users[0], room_id, v).await,
        }
    }
    indexed(&s).await;
    // The history must have tested something: words found, and words a member may not read.
    let (mut found_some, mut hidden_from_members) = (0, 0);
    for (u, user) in users.iter().enumerate() {
        for (word, r) in &words {
            let found = room_events(user, json!({ "search_term": word })).await;
            let got: BTreeSet<String> = found["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["result"]["event_id"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(found["count"].as_u64(), Some(got.len() as u64), "{found}");
            // What the user may read of this word: it is in room r; searched only while a member.
            let mut readable = BTreeSet::new();
            if joined.get(&(u, *r)).copied().unwrap_or(false) {
                let all = room_events(&users[0], json!({ "search_term": word })).await;
                for hit in all["results"].as_array().unwrap() {
                    let id = hit["result"]["event_id"].as_str().unwrap();
                    let (status, _) = user
                        .get(&format!("{V3}/rooms/{}/event/{}", enc(&rooms[*r]), enc(id)))
                        .await;
                    if status == 200 {
                        readable.insert(id.to_owned());
                    } else {
                        hidden_from_members += 1;
                    }
                }
            }
            found_some += got.len();
            assert_eq!(got, readable, "seed {seed}, u{u}, {word} in room {r}");
        }
    }
    assert!(
        found_some > 20 && hidden_from_members > 0,
        "seed {seed} tested too little: {found_some} found, {hidden_from_members} hidden"
    );
}
