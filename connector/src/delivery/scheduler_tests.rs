//! Unit tests of [`super`] (the scheduler), beside it to keep the scheduler short.

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

/// An alert of queue "q": mergeable unless high; a digest lists the `n`s it holds.
struct Alert {
    n: usize,
    rank: u8,
    members: Vec<usize>,
    size: usize,
}

impl Queued for Alert {
    fn queue_key(&self) -> &str {
        "q"
    }
    fn size(&self) -> usize {
        self.size
    }
    fn rank(&self) -> u8 {
        self.rank
    }
    fn digest_group(&self) -> Option<&str> {
        (self.rank < 2).then_some("g")
    }
    fn is_digest(&self) -> bool {
        !self.members.is_empty()
    }
    fn digest(items: Vec<Self>) -> Result<Self, Vec<Self>> {
        Ok(Alert {
            n: 100,
            rank: items[0].rank,
            size: items.iter().map(|i| i.size).sum(),
            members: items.iter().map(|i| i.n).collect(),
        })
    }
    fn merge(&mut self, item: Self) -> Result<(), Self> {
        self.members.push(item.n);
        self.size += item.size;
        Ok(())
    }
}

#[derive(Default, Clone)]
struct Digests(Arc<Mutex<Vec<Handled>>>);

impl Handler<Alert> for Digests {
    async fn handle(&self, item: Alert) {
        if item.n == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.0.lock().unwrap().push((item.n, item.members));
    }
}

#[tokio::test(start_paused = true)]
async fn a_storm_is_merged_into_one_digest_per_rank_and_high_ones_go_first() {
    let log = Digests::default();
    let s = Scheduler::with_digests(log.clone(), 3);
    let a = |n, rank| Alert {
        n,
        rank,
        members: vec![],
        size: 10,
    };
    s.submit(a(0, 1));
    tokio::task::yield_now().await;
    // 1..=3 wait as they are; the 4th makes 4 > 3: a digest of 1..=4; 5..=10 join it.
    for n in 1..=10 {
        s.submit(a(n, 1));
        if n == 3 {
            assert_eq!(s.in_flight(), 4, "no digest yet at 3 waiting");
        }
    }
    assert_eq!(s.in_flight(), 2, "the one in hand and the digest");
    // A high one overtakes the digest; two lows wait behind it, unmerged (2 ≤ 3).
    s.submit(a(11, 2));
    s.submit(a(12, 0));
    s.submit(a(13, 0));
    assert_eq!(s.in_flight(), 5);
    assert_eq!(s.bytes(), 14 * 10, "a digest's bytes are its members'");
    assert!(s.drain(Duration::from_secs(60)).await);
    assert_eq!(
        *log.0.lock().unwrap(),
        [
            (0, vec![]),
            (11, vec![]),
            (100, (1..=10).collect()),
            (12, vec![]),
            (13, vec![]),
        ]
    );
    assert_eq!((s.in_flight(), s.bytes()), (0, 0));
    // Digests off: the same items are handled one by one.
    let log = Digests::default();
    let s = Scheduler::new(log.clone());
    for n in 0..=10 {
        s.submit(a(n, 1));
    }
    assert_eq!(s.in_flight(), 11);
    assert!(s.drain(Duration::from_secs(60)).await);
    assert_eq!(log.0.lock().unwrap().len(), 11);
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
