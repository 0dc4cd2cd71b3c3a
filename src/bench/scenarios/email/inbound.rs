//! Phase 1, inbound: the customers' threads mailed in, into conversations, read by the agent.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};

use super::{
    PER_THREAD, SETUP_IN_FLIGHT, STALL,
    mails::{customer, mail_text, send_mail, thread_mail},
    rig::Rig,
    watch::{Seen, Watcher},
};
use crate::bench::{
    client::BoxError,
    report::Report,
    setup::progress,
    stats::{Summary, micros},
};

/// Sends the threads, measures, checks; the conversation room of each thread that has one.
pub(super) async fn inbound(
    rig: &Rig,
    watcher: &Watcher,
    n: usize,
    clients: usize,
    r: &mut Report,
) -> Result<Vec<(usize, String)>, BoxError> {
    let threads = n.div_ceil(PER_THREAD);
    let mails_of = |t: usize| PER_THREAD.min(n - t * PER_THREAD);
    progress(format!(
        "email: inbound, {n} mails in {threads} threads over {clients} SMTP connections"
    ));
    let transport = rig.transport(clients);
    let cpu_before = process_cpu();
    let started = Instant::now();
    // Per mail (t * PER_THREAD + j): when its 250 came, or why it did not.
    let answers: Vec<(usize, Result<Instant, String>)> = stream::iter(0..threads)
        .map(|t| {
            let transport = &transport;
            async move {
                let mut answers = Vec::with_capacity(PER_THREAD);
                for j in 0..mails_of(t) {
                    let raw = thread_mail(t, j);
                    let sent = send_mail(transport, &customer(t), &raw).await;
                    answers.push((t * PER_THREAD + j, sent.map(|()| Instant::now())));
                }
                answers
            }
        })
        .buffer_unordered(clients)
        .flat_map(stream::iter)
        .collect()
        .await;
    let smtp_time = started.elapsed();
    let mut accepted: Vec<Option<Instant>> = vec![None; n];
    let mut refusals: HashMap<String, usize> = HashMap::new();
    for (i, answer) in answers {
        match answer {
            Ok(at) => accepted[i] = Some(at),
            Err(e) => *refusals.entry(e).or_default() += 1,
        }
    }
    let accepted_count = accepted.iter().flatten().count();
    let smtp_rate = accepted_count as f64 / smtp_time.as_secs_f64();
    r.row(
        "inbound SMTP accepted (250, durable)",
        format!(
            "{smtp_rate:.0} mails/s ({accepted_count} of {n} in {:.2} s)",
            smtp_time.as_secs_f64()
        ),
    );
    r.set("inbound_smtp_per_sec", smtp_rate);
    if !refusals.is_empty() {
        r.problem(format!("inbound: SMTP refusals {refusals:?}"));
    }

    // Until every accepted mail is an event (or nothing moves for a while).
    let expected: Vec<(usize, String)> = (0..n)
        .filter(|&i| accepted[i].is_some())
        .map(|i| (i, mail_text(i / PER_THREAD, i % PER_THREAD)))
        .collect();
    let mut last_progress = (0, Instant::now());
    let mut last_line = Instant::now();
    loop {
        let arrived = {
            let seen = watcher.seen.lock();
            expected
                .iter()
                .filter(|(_, b)| seen.contains_key(b))
                .count()
        };
        if arrived >= expected.len() {
            break;
        }
        if arrived > last_progress.0 {
            last_progress = (arrived, Instant::now());
        }
        if last_line.elapsed() >= Duration::from_secs(5) {
            last_line = Instant::now();
            progress(format!(
                "email: {arrived} of {} mails in their rooms after {:.0} s (inbox {})",
                expected.len(),
                started.elapsed().as_secs_f64(),
                rig.bridge.store().inbox_len()
            ));
        }
        if last_progress.1.elapsed() > STALL {
            r.problem(format!(
                "inbound: no progress for {} s with {arrived} of {} mails in rooms",
                STALL.as_secs(),
                expected.len()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = process_cpu().saturating_sub(cpu_before);
    let seen: HashMap<usize, Seen> = {
        let seen = watcher.seen.lock();
        expected
            .iter()
            .filter_map(|(i, b)| Some((*i, seen.get(b)?.clone())))
            .collect()
    };
    let last = seen.values().map(|s| s.at).max().unwrap_or(started);
    let e2e = last.duration_since(started);
    let rate = seen.len() as f64 / e2e.as_secs_f64().max(1e-3);
    r.row(
        "inbound into conversations (issue: >= 500 mails/s)",
        format!(
            "{rate:.0} mails/s ({} in {:.2} s, {threads} conversations opened)",
            seen.len(),
            e2e.as_secs_f64()
        ),
    );
    r.set("inbound_per_sec", rate);
    let (mut firsts, mut replies) = (Vec::new(), Vec::new());
    for (i, s) in &seen {
        if let Some(at) = accepted[*i] {
            let delay = micros(s.at.saturating_duration_since(at));
            if i % PER_THREAD == 0 {
                firsts.push(delay);
            } else {
                replies.push(delay);
            }
        }
    }
    let mut all: Vec<u64> = firsts.iter().chain(&replies).copied().collect();
    let all = Summary::from_samples(&mut all);
    let firsts = Summary::from_samples(&mut firsts);
    let replies = Summary::from_samples(&mut replies);
    r.row("inbound 250 -> event, every mail", all.human());
    r.row(
        "inbound 250 -> event, a thread's first (opens the room)",
        firsts.human(),
    );
    r.row("inbound 250 -> event, replies", replies.human());
    r.set("inbound_latency", all.to_json());
    r.set("inbound_latency_first", firsts.to_json());
    r.set("inbound_latency_replies", replies.to_json());
    r.row(
        "inbound CPU (whole process: server, bridge, customers)",
        format!(
            "{:.2} ms per mail ({:.2} cores busy)",
            cpu.as_secs_f64() * 1000.0 / seen.len().max(1) as f64,
            cpu.as_secs_f64() / e2e.as_secs_f64().max(1e-3)
        ),
    );
    r.set(
        "inbound_cpu_ms_per_mail",
        cpu.as_secs_f64() * 1000.0 / seen.len().max(1) as f64,
    );

    // The agent joins every conversation and reads it.
    let mut rooms: HashMap<usize, String> = HashMap::new();
    for (i, s) in &seen {
        rooms
            .entry(i / PER_THREAD)
            .or_insert_with(|| s.room.clone());
    }
    let mut rooms: Vec<(usize, String)> = rooms.into_iter().collect();
    rooms.sort();
    let distinct: HashSet<&String> = rooms.iter().map(|(_, room)| room).collect();
    if distinct.len() != rooms.len() {
        r.problem(format!(
            "inbound: {} threads share {} rooms",
            rooms.len(),
            distinct.len()
        ));
    }
    progress(format!(
        "email: the agent joins {} conversations and reads them",
        rooms.len()
    ));
    let histories: Vec<Result<(usize, Vec<String>), BoxError>> = stream::iter(&rooms)
        .map(|(t, room)| async move {
            rig.join(room).await?;
            Ok((*t, rig.customer_bodies(room).await?))
        })
        .buffer_unordered(SETUP_IN_FLIGHT)
        .collect()
        .await;
    let mut occurrences: HashMap<String, usize> = HashMap::new();
    let mut out_of_order = 0;
    let mut misplaced = 0;
    for history in histories {
        let (t, bodies) = history?;
        let own: Vec<String> = (0..mails_of(t))
            .filter(|j| accepted[t * PER_THREAD + j].is_some())
            .map(|j| mail_text(t, j))
            .collect();
        let own_set: HashSet<&String> = own.iter().collect();
        misplaced += bodies.iter().filter(|b| !own_set.contains(b)).count();
        for body in &bodies {
            *occurrences.entry(body.clone()).or_default() += 1;
        }
        let ours: Vec<&String> = bodies.iter().filter(|b| own_set.contains(b)).collect();
        out_of_order += usize::from(ours.iter().copied().ne(own.iter()));
    }
    let lost = expected
        .iter()
        .filter(|(_, b)| !occurrences.contains_key(b))
        .count();
    let doubled: usize = occurrences.values().map(|c| c.saturating_sub(1)).sum();
    r.row(
        "inbound check (agent's /messages)",
        format!(
            "{lost} lost, {doubled} doubled, {misplaced} in another thread's room, \
             {out_of_order} threads out of order or incomplete"
        ),
    );
    r.set("inbound_lost", lost);
    r.set("inbound_doubled", doubled);
    if lost + doubled + misplaced + out_of_order > 0 {
        r.problem(format!(
            "inbound: {lost} lost, {doubled} doubled, {misplaced} misplaced, \
             {out_of_order} threads out of order"
        ));
    }
    Ok(rooms)
}

/// User and system CPU time of this whole process so far.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}
