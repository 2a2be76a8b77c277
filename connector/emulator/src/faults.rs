//! Fault injection (lark-api.md §12.4): scripted one-shot faults and random fault rates.
//!
//! Clients are judged on how they behave when Lark misbehaves, so tests need both determinism
//! ("the next send gets a 503") and background noise ("1 % of sends are slow"). Scripted faults
//! are queued per endpoint ([`FaultTarget`]) and consumed FIFO; they always win over the random
//! [`FaultConfig`], which only applies to the message-sending endpoints.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::errors;

/// Random fault rates for message sends (`im/v1/messages`, replies and custom-bot webhooks).
/// Probabilities are in 0..=1 and rolled independently in the order 5xx, throttle, slow.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct FaultConfig {
    /// Answer HTTP 500/502/503 (uniformly) instead of processing.
    pub error_5xx_rate: f64,
    /// Sleep `slow_ms`, then answer normally.
    pub slow_rate: f64,
    pub slow_ms: u64,
    /// Answer a throttle: 99991400 + `x-ogw-ratelimit-reset: 1` (send) or 11232 (webhook).
    pub throttle_rate: f64,
    /// Sends to these `receive_id`s always fail with an internal error (code 1500, HTTP 500):
    /// a receiver that never recovers, for testing that it holds up nobody else.
    pub failing_receivers: Vec<String>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            error_5xx_rate: 0.0,
            slow_rate: 0.0,
            slow_ms: 1000,
            throttle_rate: 0.0,
            failing_receivers: Vec::new(),
        }
    }
}

/// One scripted fault. JSON form: `{"kind":"status","status":503}`, `{"kind":"slow","ms":2000}`,
/// `{"kind":"late_answer","ms":3000}`, `{"kind":"code","code":230020}` (other `code` fields
/// optional, see below).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// A bare HTTP failure. 500 (and any status other than 502/503/504) comes with a JSON
    /// internal-error envelope (code 1500); 502/503/504 with a plain-text gateway body, the way
    /// a load balancer in front of the API would answer.
    Status { status: u16 },
    /// Delay the response by `ms`, then answer normally.
    Slow { ms: u64 },
    /// Do the work at once, then hold the answer for `ms` (message sends only; elsewhere it acts
    /// like `Slow`): what a client sees when Lark made the message but its answer comes late or
    /// never, because the client timed out or died meanwhile.
    LateAnswer { ms: u64 },
    /// Any Lark business error. `http_status: 0` / empty `msg` borrow the status and text of
    /// the code from [`errors::ALL`] (falling back to 400 / "emulated fault").
    Code {
        #[serde(default)]
        http_status: u16,
        code: i64,
        #[serde(default)]
        msg: String,
        /// When set, the reply carries `x-ogw-ratelimit-reset` (and `x-ogw-ratelimit-limit`).
        #[serde(default)]
        ratelimit_reset_secs: Option<u64>,
    },
}

impl Fault {
    /// Fill the optional parts of a `Code` fault from the error table.
    pub(crate) fn resolved(self) -> Fault {
        match self {
            Fault::Code {
                http_status,
                code,
                msg,
                ratelimit_reset_secs,
            } => {
                let known = errors::lookup(code);
                Fault::Code {
                    http_status: match (http_status, known) {
                        (0, Some(k)) => k.http,
                        (0, None) => 400,
                        (s, _) => s,
                    },
                    code,
                    msg: match (msg.is_empty(), known) {
                        (true, Some(k)) => k.msg.to_string(),
                        (true, None) => "emulated fault".to_string(),
                        (false, _) => msg,
                    },
                    ratelimit_reset_secs,
                }
            }
            other => other,
        }
    }
}

/// The endpoint a scripted fault is aimed at. JSON: `"send"`, `"reply"`, `"token"`,
/// `"batch_get_id"`, `"urgent"`, `"webhook"`, `"update_card"`, `"edit"`, `"recall"`,
/// `"ws_endpoint"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultTarget {
    Send,
    /// `POST /open-apis/im/v1/messages/{id}/reply` (§2.5).
    Reply,
    Token,
    BatchGetId,
    Urgent,
    Webhook,
    /// `PATCH /open-apis/im/v1/messages/{id}`: card update (lifecycle §1.1).
    UpdateCard,
    /// `PUT /open-apis/im/v1/messages/{id}`: text / post edit (lifecycle §1.2).
    Edit,
    /// `DELETE /open-apis/im/v1/messages/{id}`: recall (lifecycle §1.3).
    Recall,
    /// `POST /callback/ws/endpoint`: the long connection's endpoint (lifecycle §4.1); `code`
    /// faults 1 and 1000040343 are the retryable ones and travel with HTTP 200.
    WsEndpoint,
}

/// Scripted queues plus the random configuration.
#[derive(Debug, Default)]
pub(crate) struct FaultBook {
    queues: HashMap<FaultTarget, VecDeque<Fault>>,
    pub config: FaultConfig,
}

impl FaultBook {
    pub fn new(config: FaultConfig) -> Self {
        Self {
            queues: HashMap::new(),
            config,
        }
    }

    pub fn push(&mut self, target: FaultTarget, fault: Fault) {
        self.queues
            .entry(target)
            .or_default()
            .push_back(fault.resolved());
    }

    pub fn clear(&mut self) {
        self.queues.clear();
        self.config = FaultConfig::default();
    }

    /// The fault for the next request to `target`, if any.
    pub fn next(&mut self, target: FaultTarget) -> Option<Fault> {
        if let Some(f) = self.queues.get_mut(&target).and_then(VecDeque::pop_front) {
            return Some(f);
        }
        if !matches!(
            target,
            FaultTarget::Send | FaultTarget::Reply | FaultTarget::Webhook
        ) {
            return None;
        }
        self.roll(target)
    }

    fn roll(&self, target: FaultTarget) -> Option<Fault> {
        let cfg = &self.config;
        let hit = |rate: f64| rate > 0.0 && rand::random::<f64>() < rate;
        if hit(cfg.error_5xx_rate) {
            const STATUSES: [u16; 3] = [500, 502, 503];
            let status = STATUSES[rand::random_range(0..STATUSES.len())];
            return Some(Fault::Status { status });
        }
        if hit(cfg.throttle_rate) {
            // The platform's overall webhook throttle is 11232 over HTTP 200 (§8; a bot over its own
            // limits gets 9499, state.rs); the OpenAPI gateway's is 429 (§4).
            let fault = match target {
                FaultTarget::Webhook => Fault::Code {
                    http_status: 0,
                    code: errors::WH_RATE_LIMITED.code,
                    msg: String::new(),
                    ratelimit_reset_secs: None,
                },
                _ => Fault::Code {
                    http_status: 0,
                    code: errors::RATE_LIMITED.code,
                    msg: String::new(),
                    ratelimit_reset_secs: Some(1),
                },
            };
            return Some(fault.resolved());
        }
        if hit(cfg.slow_rate) {
            return Some(Fault::Slow { ms: cfg.slow_ms });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripted_faults_are_fifo_per_target() {
        let mut book = FaultBook::default();
        book.push(FaultTarget::Send, Fault::Status { status: 503 });
        book.push(FaultTarget::Send, Fault::Slow { ms: 5 });
        book.push(FaultTarget::Token, Fault::Status { status: 500 });
        assert_eq!(
            book.next(FaultTarget::Send),
            Some(Fault::Status { status: 503 })
        );
        assert_eq!(book.next(FaultTarget::Send), Some(Fault::Slow { ms: 5 }));
        assert_eq!(book.next(FaultTarget::Send), None);
        assert_eq!(
            book.next(FaultTarget::Token),
            Some(Fault::Status { status: 500 })
        );
    }

    #[test]
    fn code_faults_borrow_table_text() {
        let f: Fault = serde_json::from_str(r#"{"kind":"code","code":230020}"#).expect("parse");
        match f.resolved() {
            Fault::Code {
                http_status, msg, ..
            } => {
                assert_eq!(http_status, 400);
                assert_eq!(msg, errors::IM_RATE_LIMITED.msg);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn random_rates_of_one_always_fire() {
        let mut book = FaultBook::new(FaultConfig {
            error_5xx_rate: 1.0,
            ..FaultConfig::default()
        });
        assert!(matches!(
            book.next(FaultTarget::Send),
            Some(Fault::Status { .. })
        ));
        // Random faults never touch the token endpoint.
        assert_eq!(book.next(FaultTarget::Token), None);
    }
}
