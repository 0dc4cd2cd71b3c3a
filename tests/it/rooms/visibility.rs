//! History visibility: what members see of the history before they joined.

use super::*;

#[tokio::test]
async fn shared_history_is_visible_to_later_members() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    let early = alice.send_text(&room, "t1", "before bob").await;
    assert_eq!(invite(&alice, &room, "@bob:localhost").await.0, 200);
    assert_eq!(bob.join(&room).await.0, 200);
    alice.send_text(&room, "t2", "after bob").await;
    assert_eq!(
        bodies(&history(&bob, &room).await),
        vec!["before bob", "after bob"]
    );
    let (status, _) = bob
        .get(&room_path(&room, &format!("event/{}", enc(&early))))
        .await;
    assert_eq!(status, 200);
    let sync = bob.sync(None, 0).await;
    assert_eq!(
        timeline_bodies(&sync, &room),
        vec!["before bob", "after bob"]
    );
}

#[tokio::test]
async fn joined_history_hides_what_came_before_the_join() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    let (status, _) = alice
        .put(
            &room_path(&room, "state/m.room.history_visibility/"),
            json!({ "history_visibility": "joined" }),
        )
        .await;
    assert_eq!(status, 200);
    let early = alice.send_text(&room, "t1", "secret").await;
    assert_eq!(invite(&alice, &room, "@bob:localhost").await.0, 200);
    alice.send_text(&room, "t2", "while invited").await;
    assert_eq!(bob.join(&room).await.0, 200);
    alice.send_text(&room, "t3", "welcome").await;

    assert_eq!(bodies(&history(&bob, &room).await), vec!["welcome"]);
    let (status, body) = bob
        .get(&room_path(&room, &format!("event/{}", enc(&early))))
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    let sync = bob.sync(None, 0).await;
    assert_eq!(timeline_bodies(&sync, &room), vec!["welcome"]);
    // Bob sees his own membership events, though.
    let own: Vec<String> = history(&bob, &room)
        .await
        .iter()
        .filter(|e| e["state_key"] == "@bob:localhost")
        .map(|e| e["content"]["membership"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(own, vec!["invite", "join"]);
    // Alice still sees everything.
    assert_eq!(
        bodies(&history(&alice, &room).await),
        vec!["secret", "while invited", "welcome"]
    );
}
