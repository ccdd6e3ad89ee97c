//! `portcullis_websocket_*`: upgraded connections per route, upgrade outcomes and why
//! upgraded connections closed.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use super::{Metrics, Registrar};

/// The WebSocket families, registered once per process.
#[derive(Clone)]
pub(super) struct WebSocketFamilies {
    active: IntGaugeVec,
    upgrades: IntCounterVec,
    closed: IntCounterVec,
}

impl WebSocketFamilies {
    pub(super) fn register(r: &Registrar) -> Self {
        WebSocketFamilies {
            active: r.gauge(
                "portcullis_websocket_connections_active",
                "Upgraded (WebSocket) connections open now, by route.",
                &["route"],
            ),
            upgrades: r.counter(
                "portcullis_websocket_upgrades_total",
                "WebSocket upgrade requests, by outcome: upgraded (the upstream answered 101), refused (it answered something else), rejected (the route's max_connections was reached).",
                &["route", "outcome"],
            ),
            closed: r.counter(
                "portcullis_websocket_closed_total",
                "Upgraded connections closed, by reason: closed (by either side), idle_timeout, shutdown, error.",
                &["route", "reason"],
            ),
        }
    }
}

impl Metrics {
    /// Handles for one route's WebSocket connections.
    pub fn websocket(&self, route: &str) -> WebSocketMetrics {
        WebSocketMetrics {
            active: self.websocket.active.with_label_values(&[route]),
            upgrades: UpgradeOutcome::ALL.map(|outcome| {
                self.websocket
                    .upgrades
                    .with_label_values(&[route, outcome.label()])
            }),
            closed: CloseReason::ALL.map(|reason| {
                self.websocket
                    .closed
                    .with_label_values(&[route, reason.label()])
            }),
        }
    }
}

/// What became of a WebSocket upgrade request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeOutcome {
    Upgraded,
    Refused,
    Rejected,
}

impl UpgradeOutcome {
    const ALL: [UpgradeOutcome; 3] = [
        UpgradeOutcome::Upgraded,
        UpgradeOutcome::Refused,
        UpgradeOutcome::Rejected,
    ];

    pub fn label(self) -> &'static str {
        match self {
            UpgradeOutcome::Upgraded => "upgraded",
            UpgradeOutcome::Refused => "refused",
            UpgradeOutcome::Rejected => "rejected",
        }
    }
}

/// Why an upgraded connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Closed,
    IdleTimeout,
    Shutdown,
    Error,
}

impl CloseReason {
    const ALL: [CloseReason; 4] = [
        CloseReason::Closed,
        CloseReason::IdleTimeout,
        CloseReason::Shutdown,
        CloseReason::Error,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Closed => "closed",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Error => "error",
        }
    }
}

/// Handles for one route's WebSocket connections.
#[derive(Clone)]
pub struct WebSocketMetrics {
    pub active: IntGauge,
    upgrades: [IntCounter; 3],
    closed: [IntCounter; 4],
}

impl WebSocketMetrics {
    pub fn upgrade(&self, outcome: UpgradeOutcome) {
        self.upgrades[outcome as usize].inc();
    }

    pub fn closed(&self, reason: CloseReason) {
        self.closed[reason as usize].inc();
    }
}
