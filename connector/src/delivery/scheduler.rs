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
    pub fn submit(&self, item: T) {
        self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
        self.inner.bytes.fetch_add(item.size(), Ordering::SeqCst);
        let key = item.queue_key().to_string();
        let spawn = match self.inner.queues.lock() {
            Ok(mut queues) => match queues.get_mut(&key) {
                // The key's task is running and will reach this item.
                Some(q) => {
                    q.push_back(item);
                    false
                }
                None => {
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
