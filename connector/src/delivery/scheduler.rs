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
    /// Storm control: the group this item may be merged into a digest with when too many wait for
    /// its queue ([`Scheduler::with_digests`]); items merge only with others of the same group and
    /// rank. Default: `None`, never merged.
    fn digest_group(&self) -> Option<&str> {
        None
    }
    /// Whether this item is a digest: a waiting one takes in the mergeable items of its group and
    /// rank that arrive after it.
    fn is_digest(&self) -> bool {
        false
    }
    /// Makes one digest of `items` (waiting, of one group and rank, oldest first, at least two).
    /// Its [`Queued::size`] must be the sum of theirs (the buffer's bytes stay exact). Returns them
    /// back if it cannot.
    fn digest(items: Vec<Self>) -> Result<Self, Vec<Self>>
    where
        Self: Sized,
    {
        Err(items)
    }
    /// A waiting digest takes in `item` (its size grows by `item`'s), or returns it.
    fn merge(&mut self, item: Self) -> Result<(), Self>
    where
        Self: Sized,
    {
        Err(item)
    }
}

pub trait Handler<T>: Send + Sync + 'static {
    /// Handles one item to the end (delivered, dead-lettered, or abandoned).
    fn handle(&self, item: T) -> impl Future<Output = ()> + Send;
}

struct Inner<T, H> {
    handler: H,
    /// `storm.digest.after`: more mergeable items than this waiting in one queue are merged into
    /// a digest; 0: never.
    digest_after: usize,
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
        Self::with_digests(handler, 0)
    }

    /// A scheduler that merges the waiting mergeable items of a queue into a digest once more
    /// than `after` of them wait (0: never). A digest counts as one item in
    /// [`in_flight`](Self::in_flight); its bytes are those of what it holds.
    pub fn with_digests(handler: H, after: usize) -> Self {
        Scheduler {
            inner: Arc::new(Inner {
                digest_after: after,
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
                    let digest_after = self.inner.digest_after;
                    if digest_after == 0 || item.digest_group().is_none() {
                        let at = place(q, &item);
                        q.insert(at, item);
                    } else {
                        let merged = merge_waiting(q, item, digest_after);
                        self.inner.in_flight.fetch_sub(merged, Ordering::SeqCst);
                    }
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
    let by_rank = q
        .iter()
        .rposition(|w| w.rank() >= rank)
        .map_or(0, |i| i + 1);
    let by_key = item
        .coalesce_key()
        .and_then(|key| q.iter().rposition(|w| w.coalesce_key() == Some(key)))
        .map_or(0, |i| i + 1);
    by_rank.max(by_key)
}

/// Queues a mergeable `item` in a storm: into the waiting digest of its group and rank if there
/// is one; else in its place, and if more than `after` mergeable items now wait, those of each
/// group and rank become one digest, where the oldest of them was. Returns how many items left
/// the count (merged into another).
fn merge_waiting<T: Queued>(q: &mut VecDeque<T>, item: T, after: usize) -> usize {
    let same_class =
        |w: &T, rank: u8, group: &str| w.rank() == rank && w.digest_group() == Some(group);
    let rank = item.rank();
    let group = item.digest_group().unwrap_or_default().to_string();
    let item = match q
        .iter_mut()
        .rev()
        .find(|w| w.is_digest() && same_class(w, rank, &group))
    {
        Some(digest) => match digest.merge(item) {
            Ok(()) => return 1,
            Err(item) => item,
        },
        None => item,
    };
    let at = place(q, &item);
    q.insert(at, item);
    let loose = |w: &T| !w.is_digest() && w.digest_group().is_some();
    if q.iter().filter(|w| loose(w)).count() <= after {
        return 0;
    }
    let mut classes: Vec<(u8, String)> = q
        .iter()
        .filter(|w| loose(w))
        .filter_map(|w| w.digest_group().map(|g| (w.rank(), g.to_string())))
        .collect();
    classes.sort_unstable();
    classes.dedup();
    let mut merged = 0;
    for (rank, group) in classes {
        let is_member = |w: &T| loose(w) && same_class(w, rank, &group);
        let Some(first) = q.iter().position(is_member) else {
            continue;
        };
        if q.iter().filter(|w| is_member(w)).count() < 2 {
            continue;
        }
        let (members, rest): (VecDeque<T>, VecDeque<T>) =
            std::mem::take(q).into_iter().partition(is_member);
        *q = rest;
        let n = members.len();
        match T::digest(members.into()) {
            Ok(digest) => {
                q.insert(first, digest);
                merged += n - 1;
            }
            // Not merged after all: back in their places, in order.
            Err(members) => {
                for (i, m) in members.into_iter().enumerate() {
                    q.insert(first + i, m);
                }
            }
        }
    }
    merged
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
#[path = "scheduler_tests.rs"]
mod tests;
