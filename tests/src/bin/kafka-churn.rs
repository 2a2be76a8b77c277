//! A Kafka client that is always in the middle of a request, for `tests/broker_kills.rs`: it
//! joins a consumer group, produces, fetches and commits in a tight loop until it is SIGKILLed.
//! The test kills it at random moments, so the broker sees connections vanish during JoinGroup,
//! SyncGroup, Heartbeat, Produce, Fetch, OffsetCommit and metadata requests.
//!
//! `kafka-churn <bootstrap> <topic> <group>`; prints `active` once it has committed a record, so
//! a caller can tell a client that got that far from one killed on its way in.

use std::io::Write;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::ClientConfig;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, bootstrap, topic, group] = args.as_slice() else {
        eprintln!("usage: kafka-churn <bootstrap> <topic> <group>");
        std::process::exit(2);
    };
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "0")
        .create()
        .unwrap_or_else(|e| fail("producer", e));
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "100")
        .create()
        .unwrap_or_else(|e| fail("consumer", e));
    consumer
        .subscribe(&[topic.as_str()])
        .unwrap_or_else(|e| fail("subscribe", e));
    let mut active = false;
    let mut n = 0u64;
    loop {
        for _ in 0..20 {
            n += 1;
            let value = format!("churn {n}");
            // A full queue only means the broker is slow; the loop goes on either way.
            let _ = producer.send(BaseRecord::<(), str>::to(topic).payload(value.as_str()));
        }
        producer.poll(Duration::ZERO);
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) {
            if consumer.commit_message(&message, CommitMode::Sync).is_ok() && !active {
                active = true;
                println!("active");
                let _ = std::io::stdout().flush();
            }
        }
    }
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("kafka-churn: {what}: {e}");
    std::process::exit(1);
}
