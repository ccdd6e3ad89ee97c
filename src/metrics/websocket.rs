//! `portcullis_websocket_*`: upgraded connections per route, upgrade outcomes and why
//! upgraded connections closed.

use prometheus::{IntCounter, IntGauge};

use super::Metrics;

impl Metrics {
    /// Handles for one route's WebSocket connections.
    pub fn websocket(&self, route: &str) -> WebSocketMetrics {
        WebSocketMetrics {
            active: self.websocket_active.with_label_values(&[route]),
            upgrades: UpgradeOutcome::ALL.map(|outcome| {
                self.websocket_upgrades
                    .with_label_values(&[route, outcome.label()])
            }),
            closed: CloseReason::ALL.map(|reason| {
                self.websocket_closed
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
