//! How far each stream consumer got, for operators: the lag of the bot, push delivery, the
//! appservice pushers (and the search indexer and federation sender when they come) is the
//! stream head minus the position shown here.
//!
//! Every [`super::Consumer`] registers itself by name when it runs and stores its settled
//! position after each round, so a new consumer is measured without a line of its own. The
//! hot path pays one relaxed atomic store per round; whoever reads (`/metrics`) pays the rest.

use std::sync::{
    Arc, Weak,
    atomic::{AtomicU64, Ordering},
};

use parking_lot::Mutex;

/// The running consumers' positions, by name.
#[derive(Default)]
pub struct Progress {
    /// Weak: a consumer that ended (a server stopped in a test process) drops out by itself.
    consumers: Mutex<Vec<(String, Weak<AtomicU64>)>>,
}

/// A running consumer's position, stored as it goes.
pub struct Tracked(Arc<AtomicU64>);

impl Tracked {
    /// Everything up to `pos` is handled.
    pub fn set(&self, pos: u64) {
        self.0.store(pos, Ordering::Relaxed);
    }
}

impl Progress {
    /// Starts tracking a consumer named `name`, at `pos`.
    pub fn track(&self, name: &str, pos: u64) -> Tracked {
        let position = Arc::new(AtomicU64::new(pos));
        let mut consumers = self.consumers.lock();
        consumers.retain(|(_, p)| p.strong_count() > 0);
        consumers.push((name.to_owned(), Arc::downgrade(&position)));
        Tracked(position)
    }

    /// Each running consumer's name and position, in the order they started.
    pub fn positions(&self) -> Vec<(String, u64)> {
        self.consumers
            .lock()
            .iter()
            .filter_map(|(name, p)| Some((name.clone(), p.upgrade()?.load(Ordering::Relaxed))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_the_running_consumers() {
        let progress = Progress::default();
        let bot = progress.track("support bot", 3);
        let push = progress.track("push delivery", 5);
        bot.set(7);
        assert_eq!(
            progress.positions(),
            vec![
                ("support bot".to_owned(), 7),
                ("push delivery".to_owned(), 5)
            ]
        );
        drop(push);
        assert_eq!(progress.positions(), vec![("support bot".to_owned(), 7)]);
    }
}
