//! The widget end to end in a real browser: Debian's headless Chromium, driven through
//! chromedriver (WebDriver) with fantoccini. `tests/run` installs both when they are missing;
//! without them this test fails rather than pass without having run.
//!
//! A customer opens the demo page with their token, sends a message with Enter; it arrives in
//! the room as the agent's Matrix client reads it; the agent answers and the answer appears in
//! the page without a reload; the agent reads the customer's message and the page shows it
//! read.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::{ana_joins, ana_reads, eventually, room_messages, room_of, site, token};
use crate::common::process::free_port;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ENTER: &str = "\u{E007}";

/// chromedriver, stopped when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser() -> (Driver, Client) {
    for path in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(path).exists(),
            "{path} is missing: run the tests with `tests/run`, which installs Debian's \
             chromium and chromium-driver"
        );
    }
    let port = free_port();
    let driver = Driver(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            // As root, in a container, on a machine with no network but loopback.
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--lang=es"],
        }),
    );
    let client = eventually(|| {
        let caps = caps.clone();
        let url = url.clone();
        async move {
            ClientBuilder::rustls()
                .ok()?
                .capabilities(caps)
                .connect(&url)
                .await
                .ok()
        }
    })
    .await;
    (driver, client)
}

/// The text of the first element `css` matches, once one does.
async fn text_of(page: &Client, css: &str) -> String {
    let element = page
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    element.text().await.unwrap()
}

/// Waits until the element `css` matches has `data-status` `want`.
async fn wait_for_mark(page: &Client, css: &str, want: &str) {
    eventually(|| async {
        let status = page
            .find(Locator::Css(css))
            .await
            .ok()?
            .attr("data-status")
            .await
            .ok()??;
        (status == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_customer_chats_with_an_agent_through_the_widget_in_chromium() {
    let site = site().await;
    let (_driver, page) = browser().await;
    let jwt = token("browser-1", "Rosa Web");
    page.goto(&site.s.url(&format!("/widget/#token={jwt}")))
        .await
        .unwrap();

    // The floating button opens the panel on a new, pending session with the greeting.
    page.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("#charla-chat-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let greeting = text_of(&page, "li.charla-msg[data-sender=support] .charla-msg-text").await;
    assert_eq!(greeting, super::GREETING);

    // Enter sends.
    let input = page.find(Locator::Css("#charla-chat-input")).await.unwrap();
    input
        .send_keys(&format!("Hola desde el navegador{ENTER}"))
        .await
        .unwrap();
    let mine = "li.charla-msg[data-sender=user]";
    assert_eq!(
        text_of(&page, &format!("{mine} .charla-msg-text")).await,
        "Hola desde el navegador"
    );
    wait_for_mark(&page, &format!("{mine} .charla-msg-status"), "sent").await;

    // The agent's Matrix client sees it in the conversation, from the web customer.
    let room = room_of(&site, "browser-1").await;
    ana_joins(&site, &room).await;
    let event = eventually(|| async {
        room_messages(&site, &room)
            .await
            .into_iter()
            .find(|e| e["content"]["body"] == "Hola desde el navegador")
    })
    .await;
    assert_eq!(event["sender"], "@web_browser-1:localhost");

    // The agent answers: the answer appears without a reload.
    site.ana
        .send_text(&room, "b1", "Hola Rosa, soy Ana. ¿En qué te ayudo?")
        .await;
    eventually(|| async {
        let items = page
            .find_all(Locator::Css(
                "li.charla-msg[data-sender=support] .charla-msg-text",
            ))
            .await
            .ok()?;
        for item in items {
            if item.text().await.ok()? == "Hola Rosa, soy Ana. ¿En qué te ayudo?" {
                return Some(());
            }
        }
        None
    })
    .await;

    // The agent reads the customer's message: the page marks it read.
    ana_reads(&site, &room, event["event_id"].as_str().unwrap()).await;
    wait_for_mark(&page, &format!("{mine} .charla-msg-status"), "read").await;
    page.close().await.unwrap();
}
