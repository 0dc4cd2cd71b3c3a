//! The open widget sockets, by customer: where the feed hands each customer's frames.
//!
//! Each socket has a bounded queue. The feed never waits for a socket: a frame that does not
//! fit marks the socket too slow, and the socket's task closes it (`4008`); the widget
//! reconnects with the cursor of the last frame it handled and is sent what it missed from the
//! store. So a stalled browser costs a queue's worth of memory, and never slows the feed or the
//! other customers.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

/// Frames a socket may have queued before it counts as too slow.
pub(crate) const SOCKET_QUEUE: usize = 256;

/// A frame for the widget, serialized once for every socket of its customer.
#[derive(Debug)]
pub(crate) struct Frame {
    /// The stream position it stands for (0 for frames that are not resumed: typing).
    pub(crate) cursor: u64,
    pub(crate) json: String,
}

/// One socket's end of its queue.
struct Socket {
    id: u64,
    frames: mpsc::Sender<Arc<Frame>>,
    slow: Arc<Slow>,
}

/// Set when a socket's queue overflowed; its task closes it.
#[derive(Default)]
pub(crate) struct Slow {
    flag: AtomicBool,
    notify: Notify,
}

impl Slow {
    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Resolves once the socket is too slow.
    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }

    fn set(&self) {
        self.flag.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

/// Why a socket was not registered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The customer has `sockets_per_customer` open.
    TooManyForCustomer,
    /// The server has `max_sockets` open.
    Full,
}

pub(crate) struct Hub {
    per_customer: usize,
    max: usize,
    sockets: Mutex<HashMap<String, Vec<Socket>>>,
    open: AtomicU64,
    next_id: AtomicU64,
}

/// A registered socket: its queue and its slowness flag. Unregister it with
/// [`Hub::unregister`] when the socket ends.
pub(crate) struct Registration {
    pub(crate) id: u64,
    pub(crate) frames: mpsc::Receiver<Arc<Frame>>,
    pub(crate) slow: Arc<Slow>,
}

impl Hub {
    pub(crate) fn new(per_customer: usize, max: usize) -> Self {
        Hub {
            per_customer,
            max,
            sockets: Mutex::default(),
            open: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
        }
    }

    /// Adds a socket of `customer`.
    pub(crate) fn register(&self, customer: &str) -> Result<Registration, Refused> {
        let mut sockets = self.sockets.lock();
        if self.open.load(Ordering::Relaxed) as usize >= self.max {
            return Err(Refused::Full);
        }
        let list = sockets.entry(customer.to_owned()).or_default();
        if list.len() >= self.per_customer {
            return Err(Refused::TooManyForCustomer);
        }
        let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
        let slow = Arc::new(Slow::default());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        list.push(Socket {
            id,
            frames: tx,
            slow: slow.clone(),
        });
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Registration {
            id,
            frames: rx,
            slow,
        })
    }

    pub(crate) fn unregister(&self, customer: &str, id: u64) {
        let mut sockets = self.sockets.lock();
        if let Some(list) = sockets.get_mut(customer) {
            let before = list.len();
            list.retain(|s| s.id != id);
            if list.len() < before {
                self.open.fetch_sub(1, Ordering::Relaxed);
            }
            if list.is_empty() {
                sockets.remove(customer);
            }
        }
    }

    /// Whether `customer` has a socket open (the feed skips building frames for the others).
    pub(crate) fn is_connected(&self, customer: &str) -> bool {
        self.sockets.lock().contains_key(customer)
    }

    /// Queues `frame` on every socket of `customer`, marking those that cannot take it slow.
    pub(crate) fn send(&self, customer: &str, frame: Arc<Frame>) {
        let sockets = self.sockets.lock();
        for socket in sockets.get(customer).into_iter().flatten() {
            if socket.slow.is_set() {
                continue;
            }
            if socket.frames.try_send(frame.clone()).is_err() {
                socket.slow.set();
            }
        }
    }

    /// Open sockets (for metrics and the benchmark).
    pub(crate) fn open_sockets(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(cursor: u64) -> Arc<Frame> {
        Arc::new(Frame {
            cursor,
            json: format!("{{\"cursor\":\"{cursor}\"}}"),
        })
    }

    #[tokio::test]
    async fn frames_reach_every_socket_of_their_customer_only() {
        let hub = Hub::new(2, 10);
        let mut a1 = hub.register("ana").unwrap();
        let mut a2 = hub.register("ana").unwrap();
        let mut b = hub.register("bea").unwrap();
        assert_eq!(hub.register("ana").err(), Some(Refused::TooManyForCustomer));
        hub.send("ana", frame(7));
        assert_eq!(a1.frames.recv().await.unwrap().cursor, 7);
        assert_eq!(a2.frames.recv().await.unwrap().cursor, 7);
        assert!(b.frames.try_recv().is_err());
        hub.unregister("ana", a1.id);
        assert!(hub.register("ana").is_ok());
        assert_eq!(hub.open_sockets(), 3);
    }

    #[tokio::test]
    async fn a_socket_that_falls_behind_is_marked_slow_and_the_others_go_on() {
        let hub = Hub::new(2, 10);
        let stalled = hub.register("ana").unwrap();
        let mut reading = hub.register("ana").unwrap();
        for n in 0..=SOCKET_QUEUE as u64 {
            hub.send("ana", frame(n));
            assert_eq!(reading.frames.recv().await.unwrap().cursor, n);
        }
        assert!(stalled.slow.is_set());
        stalled.slow.wait().await;
        assert!(!reading.slow.is_set());
    }

    #[test]
    fn the_server_wide_bound_holds() {
        let hub = Hub::new(5, 2);
        let _a = hub.register("a").unwrap();
        let _b = hub.register("b").unwrap();
        assert_eq!(hub.register("c").err(), Some(Refused::Full));
    }
}
