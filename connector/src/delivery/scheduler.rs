//! Per-receiver queues: one receiver's messages go out strictly in order, different receivers
//! proceed in parallel, and a slow or failing receiver never holds up the others.
//!
//! A queue exists only while it has work: the first message for an idle receiver spawns a task that
//! drains its queue and exits when the queue is empty. So memory and tasks scale with the receivers
//! that currently have messages buffered, not with every receiver ever seen. The scheduler knows
//! nothing about Lark: what "handling" a message means (rate limits, sending, retries, the DLQ) is
//! the [`Handler`]'s business.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A unit of work with the queue it belongs to.
pub trait Queued: Send + 'static {
    /// Messages with the same key are handled one at a time, in submission order.
    fn queue_key(&self) -> &str;
    /// Bytes this item holds, for the buffer bound.
    fn size(&self) -> usize;
    /// Its rank in its queue: a waiting item of a higher rank is handled before those of a lower
    /// one; within one rank, submission order. Default 1 (`priority: normal`; 2 is high, 0 low).
    fn rank(&self) -> u8 {
        1
    }
    /// Items of one queue with the same coalescing key are versions of one thing (one keyed Lark
    /// message): a newer one may take the place of an older one still waiting, so only the newest
    /// is handled. `None` (the default): never coalesced.
    fn coalesce_key(&self) -> Option<&str> {
        None
    }
    /// Takes over `older`, a waiting item with the same coalescing key, if it may: the handler of
    /// `self` then finishes `older` too, and `older` is not handled on its own. Returns `older`
    /// back when it must stay in the queue (e.g. it recalls the message: a barrier).
    fn absorb(&mut self, older: Self) -> Result<(), Self>
    where
        Self: Sized,
    {
        Err(older)
    }
}

pub trait Handler<T>: Send + Sync + 'static {
    /// Handles one item to the end (delivered, dead-lettered, or abandoned).
    fn handle(&self, item: T) -> impl Future<Output = ()> + Send;
}

struct Inner<T, H> {
    handler: H,
    queues: Mutex<HashMap<String, VecDeque<T>>>,
    in_flight: AtomicUsize,
    bytes: AtomicUsize,
    stopping: AtomicBool,
    /// Signalled whenever an item finishes, for `drain`.
    progress: tokio::sync::Notify,
}

pub struct Scheduler<T, H> {
    inner: Arc<Inner<T, H>>,
}

impl<T, H> Clone for Scheduler<T, H> {
    fn clone(&self) -> Self {
        Scheduler {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Queued, H: Handler<T>> Scheduler<T, H> {
    pub fn new(handler: H) -> Self {
        Scheduler {
            inner: Arc::new(Inner {
                handler,
                queues: Mutex::new(HashMap::new()),
                in_flight: AtomicUsize::new(0),
                bytes: AtomicUsize::new(0),
                stopping: AtomicBool::new(false),
                progress: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Queues `item` behind earlier items with the same key. Never blocks: the caller bounds the
    /// buffer by watching [`in_flight`](Self::in_flight) and [`bytes`](Self::bytes).
    ///
    /// An item with a [coalescing key](Queued::coalesce_key) first takes the place of the newest
    /// waiting item with the same key, if that one lets it ([`Queued::absorb`]); the absorbed
    /// item leaves the counts (its content is dropped; its handle rides with `item`).
    pub fn submit(&self, mut item: T) {
        self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
        let key = item.queue_key().to_string();
        let spawn = match self.inner.queues.lock() {
            Ok(mut queues) => match queues.get_mut(&key) {
                // The key's task is running and will reach this item.
                Some(q) => {
                    if let Some((at, older)) = take_waiting(q, &item) {
                        let size = older.size();
                        match item.absorb(older) {
                            Ok(()) => {
                                self.inner.in_flight.fetch_sub(1, Ordering::SeqCst);
                                self.inner.bytes.fetch_sub(size, Ordering::SeqCst);
                            }
                            // Not absorbed: back where it was.
                            Err(older) => q.insert(at, older),
                        }
                    }
                    self.inner.bytes.fetch_add(item.size(), Ordering::SeqCst);
                    let at = place(q, &item);
                    q.insert(at, item);
                    false
                }
                None => {
                    self.inner.bytes.fetch_add(item.size(), Ordering::SeqCst);
                    queues.insert(key.clone(), VecDeque::from([item]));
                    true
                }
            },
            Err(_) => false,
        };
        if spawn {
            let inner = self.inner.clone();
            tokio::spawn(async move { drain_queue(inner, key).await });
        }
    }

    /// Items submitted and not finished yet.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    /// Bytes held by unfinished items.
    pub fn bytes(&self) -> usize {
        self.inner.bytes.load(Ordering::SeqCst)
    }

    /// Receivers with work right now.
    pub fn active_queues(&self) -> usize {
        self.inner.queues.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Stops taking items off the queues: each queue's task finishes the item in hand and drops
    /// the rest (their records stay uncommitted and are replayed on the next start).
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
    }

    /// Waits until nothing is in flight, or `timeout` passes. Returns whether it drained.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.inner.progress.notified();
                if self.in_flight() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

/// Where `item` goes in `q`: after every waiting item of its rank or higher (so it overtakes
/// lower ranks only), and never before a waiting item with its coalescing key (versions of one
/// thing keep their order whatever their rank).
fn place<T: Queued>(q: &VecDeque<T>, item: &T) -> usize {
    let rank = item.rank();
    let by_rank = q.iter().rposition(|w| w.rank() >= rank).map_or(0, |i| i + 1);
    let by_key = item
        .coalesce_key()
        .and_then(|key| q.iter().rposition(|w| w.coalesce_key() == Some(key)))
        .map_or(0, |i| i + 1);
    by_rank.max(by_key)
}

/// Removes the newest waiting item of `q` with `item`'s coalescing key, with its position.
/// `None` when `item` has no coalescing key or no waiting item shares it. The item in hand is
/// not in `q`, so it is never taken: a version already on its way to Lark is not recalled.
fn take_waiting<T: Queued>(q: &mut VecDeque<T>, item: &T) -> Option<(usize, T)> {
    let key = item.coalesce_key()?;
    let at = q.iter().rposition(|w| w.coalesce_key() == Some(key))?;
    q.remove(at).map(|older| (at, older))
}

async fn drain_queue<T: Queued, H: Handler<T>>(inner: Arc<Inner<T, H>>, key: String) {
    loop {
        let next = match inner.queues.lock() {
            Ok(mut queues) => match queues.get_mut(&key).and_then(VecDeque::pop_front) {
                Some(item) => Some(item),
                None => {
                    // Removing the key under the lock hands the next submit a fresh task.
                    queues.remove(&key);
                    None
                }
            },
            Err(_) => None,
        };
        let Some(item) = next else { return };
        let size = item.size();
        if !inner.stopping.load(Ordering::SeqCst) {
            inner.handler.handle(item).await;
        }
        inner.bytes.fetch_sub(size, Ordering::SeqCst);
        inner.in_flight.fetch_sub(1, Ordering::SeqCst);
        inner.progress.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Item {
        key: String,
        n: usize,
    }

    impl Queued for Item {
        fn queue_key(&self) -> &str {
            &self.key
        }
        fn size(&self) -> usize {
            10
        }
    }

    /// Records (key, n) in handling order; receiver "slow" takes 10 s per item.
    #[derive(Default, Clone)]
    struct Log(Arc<Mutex<Vec<(String, usize)>>>);

    impl Handler<Item> for Log {
        async fn handle(&self, item: Item) {
            if item.key == "slow" {
                tokio::time::sleep(Duration::from_secs(10)).await;
            } else {
                tokio::task::yield_now().await;
            }
            self.0.lock().unwrap().push((item.key, item.n));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn per_key_order_and_a_slow_key_blocks_nobody_else() {
        let log = Log::default();
        let s = Scheduler::new(log.clone());
        for n in 0..3 {
            s.submit(Item {
                key: "slow".into(),
                n,
            });
        }
        for n in 0..50 {
            for k in ["a", "b", "c"] {
                s.submit(Item { key: k.into(), n });
            }
        }
        assert_eq!(s.in_flight(), 153);
        assert_eq!(s.bytes(), 1530);
        // The fast receivers finish while "slow" is still on its first item.
        tokio::time::sleep(Duration::from_secs(1)).await;
        {
            let done = log.0.lock().unwrap();
            assert_eq!(done.len(), 150, "fast receivers were held up");
            for k in ["a", "b", "c"] {
                let ns: Vec<usize> = done
                    .iter()
                    .filter(|(key, _)| key == k)
                    .map(|(_, n)| *n)
                    .collect();
                assert_eq!(ns, (0..50).collect::<Vec<_>>(), "order of {k}");
            }
        }
        assert!(s.drain(Duration::from_secs(60)).await);
        let slow: Vec<usize> = log
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == "slow")
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(slow, [0, 1, 2]);
        assert_eq!((s.in_flight(), s.bytes(), s.active_queues()), (0, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn stop_abandons_queued_items_but_finishes_the_one_in_hand() {
        let log = Log::default();
        let s = Scheduler::new(log.clone());
        for n in 0..5 {
            s.submit(Item {
                key: "slow".into(),
                n,
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        s.stop();
        assert!(s.drain(Duration::from_secs(60)).await);
        assert_eq!(*log.0.lock().unwrap(), [("slow".to_string(), 0)]);
        assert_eq!(s.in_flight(), 0);
    }

    /// An item of queue "k" with coalescing key `c`: it absorbs older items of `c` unless the
    /// older one is a barrier; `absorbed` are the `n`s it took over.
    struct Version {
        c: Option<&'static str>,
        n: usize,
        barrier: bool,
        absorbed: Vec<usize>,
    }

    impl Queued for Version {
        fn queue_key(&self) -> &str {
            "k"
        }
        fn size(&self) -> usize {
            100 + self.n
        }
        fn coalesce_key(&self) -> Option<&str> {
            self.c
        }
        fn absorb(&mut self, older: Self) -> Result<(), Self> {
            if older.barrier {
                return Err(older);
            }
            self.absorbed.push(older.n);
            self.absorbed.extend(older.absorbed);
            Ok(())
        }
    }

    /// An item's `n` and the `n`s it absorbed, as handled.
    type Handled = (usize, Vec<usize>);

    /// Records what was handled, in order; the first item takes 1 s.
    #[derive(Default, Clone)]
    struct Versions(Arc<Mutex<Vec<Handled>>>);

    impl Handler<Version> for Versions {
        async fn handle(&self, item: Version) {
            if item.n == 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let mut absorbed = item.absorbed;
            absorbed.sort_unstable();
            self.0.lock().unwrap().push((item.n, absorbed));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_versions_of_one_key_are_coalesced_into_the_newest() {
        let log = Versions::default();
        let s = Scheduler::new(log.clone());
        let v = |c, n, barrier| Version {
            c,
            n,
            barrier,
            absorbed: vec![],
        };
        // 0 is in hand (never taken); 1..=3 wait and coalesce into 3; 4 (another key) keeps its
        // place; 5 (a barrier, like a recall) absorbs 3's chain but 6 may not absorb 5; 7
        // absorbs 6; 8 has no key.
        s.submit(v(Some("a"), 0, false));
        tokio::task::yield_now().await;
        for (c, n, barrier) in [
            (Some("a"), 1, false),
            (Some("a"), 2, false),
            (Some("b"), 4, false),
            (Some("a"), 3, false),
            (Some("a"), 5, true),
            (Some("a"), 6, false),
            (None, 8, false),
            (Some("a"), 7, false),
        ] {
            s.submit(v(c, n, barrier));
        }
        // 9 items submitted, 4 absorbed (1, 2, 3 and 6): the counts drop with them.
        assert_eq!(s.in_flight(), 5, "absorbed items leave the count");
        assert_eq!(s.bytes(), 100 * 5 + 4 + 5 + 8 + 7);
        assert!(s.drain(Duration::from_secs(60)).await);
        assert_eq!(
            *log.0.lock().unwrap(),
            [
                (0, vec![]),
                (4, vec![]),
                (5, vec![1, 2, 3]),
                (8, vec![]),
                (7, vec![6]),
            ]
        );
        assert_eq!((s.in_flight(), s.bytes()), (0, 0));
    }

    /// An item of queue "q" with a rank and an optional coalescing key.
    struct Ranked {
        n: usize,
        rank: u8,
        c: Option<&'static str>,
    }

    impl Queued for Ranked {
        fn queue_key(&self) -> &str {
            "q"
        }
        fn size(&self) -> usize {
            1
        }
        fn rank(&self) -> u8 {
            self.rank
        }
        fn coalesce_key(&self) -> Option<&str> {
            self.c
        }
    }

    #[derive(Default, Clone)]
    struct Order(Arc<Mutex<Vec<usize>>>);

    impl Handler<Ranked> for Order {
        async fn handle(&self, item: Ranked) {
            if item.n == 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            self.0.lock().unwrap().push(item.n);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn higher_ranks_go_first_and_order_holds_within_a_rank_and_a_key() {
        let log = Order::default();
        let s = Scheduler::new(log.clone());
        let r = |n, rank, c| Ranked { n, rank, c };
        // 0 is in hand. Waiting: lows, normals, highs interleaved; 7 is a high version of key
        // "k" whose older version 2 (normal, not absorbed: no absorb here) waits: 7 may overtake
        // the normals before 2, not 2 itself.
        s.submit(r(0, 1, None));
        tokio::task::yield_now().await;
        for (n, rank, c) in [
            (1, 0, None),
            (2, 1, Some("k")),
            (3, 1, None),
            (4, 2, None),
            (5, 0, None),
            (6, 2, None),
            (7, 2, Some("k")),
            (8, 1, None),
        ] {
            s.submit(r(n, rank, c));
        }
        assert!(s.drain(Duration::from_secs(60)).await);
        assert_eq!(*log.0.lock().unwrap(), [0, 4, 6, 2, 7, 3, 8, 1, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_gets_a_new_task_after_its_queue_emptied() {
        let log = Log::default();
        let s = Scheduler::new(log.clone());
        s.submit(Item {
            key: "a".into(),
            n: 0,
        });
        assert!(s.drain(Duration::from_secs(1)).await);
        assert_eq!(s.active_queues(), 0);
        s.submit(Item {
            key: "a".into(),
            n: 1,
        });
        assert!(s.drain(Duration::from_secs(1)).await);
        assert_eq!(log.0.lock().unwrap().len(), 2);
    }
}
