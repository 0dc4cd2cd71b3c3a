//! Phase 2, outbound: the agent's answers, until the relay has them all, each once, in order.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};
use serde_json::json;

use super::{
    STALL,
    mails::customer,
    relay::{Relay, answer_text},
    rig::Rig,
};
use crate::bench::{
    client::BoxError,
    report::Report,
    setup::progress,
    stats::{Summary, micros},
};

/// An answer's event and when its send was acknowledged, or why it failed.
type Acked = Result<(String, Instant), String>;

pub(super) async fn outbound(
    rig: &Rig,
    relay: &Relay,
    rooms: &[(usize, String)],
    n: usize,
    clients: usize,
    r: &mut Report,
) -> Result<(), BoxError> {
    if rooms.is_empty() {
        return Err("no conversation to answer in".into());
    }
    let per_room: Vec<usize> = (0..rooms.len())
        .map(|k| (k..n).step_by(rooms.len()).count())
        .collect();
    progress(format!(
        "email: outbound, {n} answers in {} conversations",
        rooms.len()
    ));
    let already = relay.sink.mails.lock().len();
    let started = Instant::now();
    // Per answer (room index, number): its event and when the send was acknowledged.
    let sends: Vec<((usize, usize), Acked)> = stream::iter(rooms.iter().enumerate())
        .map(|(k, (_, room))| {
            let count = per_room[k];
            async move {
                let mut sent = Vec::with_capacity(count);
                for i in 0..count {
                    let content = json!({"msgtype": "m.text", "body": answer_text(k, i)});
                    let answer = rig.send(room, &format!("a{k}.{i}"), &content).await;
                    sent.push((
                        (k, i),
                        answer
                            .map(|e| (e, Instant::now()))
                            .map_err(|e| e.to_string()),
                    ));
                }
                sent
            }
        })
        .buffer_unordered(clients)
        .flat_map(stream::iter)
        .collect()
        .await;
    let sent_in = started.elapsed();
    let mut acked: HashMap<(usize, usize), (String, Instant)> = HashMap::new();
    let mut failures: HashMap<String, usize> = HashMap::new();
    for (tag, result) in sends {
        match result {
            Ok(ok) => {
                acked.insert(tag, ok);
            }
            Err(e) => *failures.entry(e).or_default() += 1,
        }
    }
    r.row(
        "outbound agent sends acknowledged",
        format!(
            "{:.0}/s ({} in {:.2} s)",
            acked.len() as f64 / sent_in.as_secs_f64(),
            acked.len(),
            sent_in.as_secs_f64()
        ),
    );
    if !failures.is_empty() {
        r.problem(format!("outbound: sends failed {failures:?}"));
    }

    // Until the relay has them all and the outbox is empty.
    let mut last_progress = (0, Instant::now());
    let mut last_line = Instant::now();
    loop {
        let received = relay.sink.mails.lock().len() - already;
        if received >= acked.len() && rig.bridge.store().outbox_len() == 0 {
            break;
        }
        if received > last_progress.0 {
            last_progress = (received, Instant::now());
        }
        if last_line.elapsed() >= Duration::from_secs(5) {
            last_line = Instant::now();
            progress(format!(
                "email: the relay has {received} of {} answers after {:.0} s (outbox {})",
                acked.len(),
                started.elapsed().as_secs_f64(),
                rig.bridge.store().outbox_len()
            ));
        }
        if last_progress.1.elapsed() > STALL {
            r.problem(format!(
                "outbound: no progress for {} s with {received} of {} answers relayed",
                STALL.as_secs(),
                acked.len()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mails = relay.sink.mails.lock();
    let mails = &mails[already..];
    let mut message_ids: HashMap<&str, usize> = HashMap::new();
    let mut order: Vec<Vec<usize>> = vec![Vec::new(); rooms.len()];
    let mut arrived: HashMap<(usize, usize), Instant> = HashMap::new();
    let (mut untagged, mut misaddressed, mut doubled_tags) = (0, 0, 0);
    for mail in mails {
        if let Some(id) = &mail.message_id {
            *message_ids.entry(id).or_default() += 1;
        }
        let Some((k, i)) = mail.tag.filter(|(k, _)| *k < rooms.len()) else {
            untagged += 1;
            continue;
        };
        misaddressed += usize::from(mail.to != customer(rooms[k].0));
        order[k].push(i);
        if arrived.insert((k, i), mail.at).is_some() {
            doubled_tags += 1;
        }
    }
    let doubled_ids: usize = message_ids.values().map(|c| c - 1).sum();
    let lost = acked
        .keys()
        .filter(|tag| !arrived.contains_key(tag))
        .count();
    let out_of_order = order
        .iter()
        .filter(|seq| seq.windows(2).any(|w| w[0] >= w[1]))
        .count();
    let last = mails.iter().map(|m| m.at).max().unwrap_or(started);
    let took = last.duration_since(started);
    let rate = arrived.len() as f64 / took.as_secs_f64().max(1e-3);
    r.row(
        "outbound answers to the relay (issue: >= 200/s)",
        format!(
            "{rate:.0} answers/s ({} in {:.2} s)",
            arrived.len(),
            took.as_secs_f64()
        ),
    );
    r.set("outbound_per_sec", rate);
    let mut delays: Vec<u64> = acked
        .iter()
        .filter_map(|(tag, (_, at))| Some(micros(arrived.get(tag)?.saturating_duration_since(*at))))
        .collect();
    let delays = Summary::from_samples(&mut delays);
    r.row("outbound send -> relay", delays.human());
    r.set("outbound_latency", delays.to_json());
    let not_sent = acked
        .values()
        .filter(|(event, _)| {
            rig.bridge
                .delivery(event)
                .is_none_or(|d| d.status != "sent")
        })
        .count();
    r.row(
        "outbound check (relay, deliveries)",
        format!(
            "{lost} lost, {} doubled (Message-ID {doubled_ids}, answer {doubled_tags}), \
             {out_of_order} conversations out of order, {misaddressed} to another address, \
             {untagged} other mails, {not_sent} deliveries not `sent`",
            doubled_ids.max(doubled_tags)
        ),
    );
    r.set("outbound_lost", lost);
    r.set("outbound_doubled", doubled_ids.max(doubled_tags));
    if lost + doubled_ids + doubled_tags + out_of_order + misaddressed + untagged + not_sent > 0 {
        r.problem(format!(
            "outbound: {lost} lost, {doubled_ids} Message-IDs and {doubled_tags} answers twice, \
             {out_of_order} conversations out of order, {misaddressed} misaddressed, \
             {untagged} unexpected mails, {not_sent} deliveries not sent"
        ));
    }
    Ok(())
}
