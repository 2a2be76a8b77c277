//! Runtime control of a running connector: what the admin API asks for (pause, resume, restart)
//! and what it reports (state, assigned partitions, readiness, last error).
//!
//! The sink and the admin server share one [`Control`]. Pausing stops fetching (the partitions are
//! paused) and sending (each receiver queue waits before its next send) without dropping anything:
//! messages already in flight finish, queued ones wait. Restart ends the current sink run cleanly
//! (commit, as on shutdown) and the binary starts a new one with the same config.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::{watch, Notify};

/// Kafka Connect's connector/task states, as the status endpoint reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    Unassigned,
    Running,
    Paused,
    Failed,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub state: State,
    /// `topic-partition` of every partition this instance owns.
    pub assigned_partitions: Vec<String>,
    pub last_error: Option<String>,
    pub broker_ready: bool,
    pub lark_ready: bool,
}

pub struct Control {
    paused: watch::Sender<bool>,
    stopping: watch::Sender<bool>,
    restart: Notify,
    restart_requested: AtomicBool,
    running: AtomicBool,
    failed: Mutex<Option<String>>,
    assigned: Mutex<Vec<String>>,
    broker_ready: AtomicBool,
    lark_ready: AtomicBool,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            paused: watch::channel(false).0,
            stopping: watch::channel(false).0,
            restart: Notify::new(),
            restart_requested: AtomicBool::new(false),
            running: AtomicBool::new(false),
            failed: Mutex::new(None),
            assigned: Mutex::new(Vec::new()),
            broker_ready: AtomicBool::new(false),
            lark_ready: AtomicBool::new(false),
        }
    }
}

impl Control {
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Returns once the connector is not paused, or is stopping (check [`is_stopping`](Self::is_stopping)).
    pub async fn wait_resumed(&self) {
        let mut paused = self.paused.subscribe();
        let mut stopping = self.stopping.subscribe();
        tokio::select! {
            _ = paused.wait_for(|p| !*p) => {}
            _ = stopping.wait_for(|s| *s) => {}
        }
    }

    /// Marks the current sink run as ending (shutdown, restart or failure): paused queues give up
    /// their messages instead of waiting.
    pub fn set_stopping(&self, stopping: bool) {
        self.stopping.send_replace(stopping);
    }

    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    pub fn request_restart(&self) {
        self.restart_requested.store(true, Ordering::SeqCst);
        self.restart.notify_waiters();
        self.restart.notify_one();
    }

    /// Resolves when a restart was requested.
    pub async fn restart_requested(&self) {
        loop {
            let notified = self.restart.notified();
            if self.restart_requested.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// Takes a pending restart request (true once per request).
    pub fn take_restart(&self) -> bool {
        self.restart_requested.swap(false, Ordering::SeqCst)
    }

    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::SeqCst);
        if running {
            if let Ok(mut f) = self.failed.lock() {
                *f = None;
            }
        }
    }

    pub fn set_failed(&self, error: String) {
        self.running.store(false, Ordering::SeqCst);
        if let Ok(mut f) = self.failed.lock() {
            *f = Some(error);
        }
    }

    pub fn set_assigned(&self, partitions: Vec<String>) {
        if let Ok(mut a) = self.assigned.lock() {
            *a = partitions;
        }
    }

    pub fn set_broker_ready(&self, ready: bool) {
        self.broker_ready.store(ready, Ordering::SeqCst);
    }

    pub fn set_lark_ready(&self, ready: bool) {
        self.lark_ready.store(ready, Ordering::SeqCst);
    }

    pub fn ready(&self) -> bool {
        self.broker_ready.load(Ordering::SeqCst) && self.lark_ready.load(Ordering::SeqCst)
    }

    pub fn status(&self) -> Status {
        let last_error = self.failed.lock().ok().and_then(|f| f.clone());
        let state = if last_error.is_some() {
            State::Failed
        } else if !self.running.load(Ordering::SeqCst) {
            State::Unassigned
        } else if self.is_paused() {
            State::Paused
        } else {
            State::Running
        };
        Status {
            state,
            assigned_partitions: self.assigned.lock().map(|a| a.clone()).unwrap_or_default(),
            last_error,
            broker_ready: self.broker_ready.load(Ordering::SeqCst),
            lark_ready: self.lark_ready.load(Ordering::SeqCst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn pause_holds_waiters_until_resume_or_stop() {
        let c = Arc::new(Control::default());
        c.set_running(true);
        c.pause();
        assert_eq!(c.status().state, State::Paused);
        let c2 = c.clone();
        let waiter = tokio::spawn(async move { c2.wait_resumed().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        c.resume();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        c.pause();
        let c3 = c.clone();
        let waiter = tokio::spawn(async move { c3.wait_resumed().await });
        c.set_stopping(true);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn restart_is_requested_once() {
        let c = Arc::new(Control::default());
        let c2 = c.clone();
        let w = tokio::spawn(async move { c2.restart_requested().await });
        c.request_restart();
        tokio::time::timeout(Duration::from_secs(1), w)
            .await
            .unwrap()
            .unwrap();
        assert!(c.take_restart());
        assert!(!c.take_restart());
    }

    #[test]
    fn status_reflects_failure_and_readiness() {
        let c = Control::default();
        assert_eq!(c.status().state, State::Unassigned);
        c.set_running(true);
        assert_eq!(c.status().state, State::Running);
        assert!(!c.ready());
        c.set_broker_ready(true);
        c.set_lark_ready(true);
        assert!(c.ready());
        c.set_failed("boom".into());
        let s = c.status();
        assert_eq!(
            (s.state, s.last_error.as_deref()),
            (State::Failed, Some("boom"))
        );
    }
}
