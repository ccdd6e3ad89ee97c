//! The file descriptors a configuration may hold open at once, by part: what its
//! listeners' `max_connections` admit, the upstream connections its limits and pools
//! allow, and a reserve for everything else. Compared with the open-files limit at
//! start, on reload and by `check`, so that a configuration that cannot fit is told
//! before client connections starve upstream connects of descriptors (HAProxy sizes its
//! limits from `ulimit -n` the same way).

use super::{Config, UpstreamProtocol};

/// Descriptors for what is not a client or upstream connection: the configuration and
/// certificate files, log output, name resolution, health checks and the admin
/// listener's connections.
pub const FIXED_RESERVE: usize = 128;

/// What a configuration may hold open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// Client connections: every listener's `max_connections`.
    pub client_connections: usize,
    /// Upstream connections: per upstream, requests in flight (the adaptive limit's
    /// maximum) plus its idle pool (HTTP/1.1). WebSocket tunnels are not counted: each
    /// holds one upstream connection beyond these, bounded by its route's
    /// `websocket.max_connections` (1,024 by default on every route, far more than most
    /// use).
    pub upstream_connections: usize,
    /// Listening sockets, Redis connections, health checks and [`FIXED_RESERVE`].
    pub reserve: usize,
}

impl DescriptorBudget {
    /// The budget of `config`.
    pub fn of(config: &Config) -> DescriptorBudget {
        let workers = config.per_core_workers().max(1);
        let client_connections = config
            .listeners
            .iter()
            .map(|l| l.max_connections)
            .fold(0usize, usize::saturating_add);
        let upstream_connections = config
            .upstreams
            .iter()
            .map(|u| {
                let in_flight = u.adaptive.map_or(u.max_in_flight, |a| a.max);
                let idle = match u.protocol {
                    UpstreamProtocol::Http1 => {
                        u.max_idle_per_endpoint.saturating_mul(u.endpoints.len())
                    }
                    // Multiplexed: about one connection per endpoint and worker.
                    _ => u.endpoints.len().saturating_mul(workers),
                };
                in_flight.saturating_add(idle)
            })
            .fold(0usize, usize::saturating_add);
        let listening = (config.listeners.len().saturating_mul(workers)) + 1;
        let health_checks: usize = config
            .upstreams
            .iter()
            .filter(|u| u.health_check.is_some())
            .map(|u| u.endpoints.len())
            .sum();
        let redis: usize = config
            .rate_limit_stores
            .iter()
            .map(|s| s.redis.pool.max(workers))
            .sum();
        DescriptorBudget {
            client_connections,
            upstream_connections,
            reserve: FIXED_RESERVE + listening + health_checks + redis,
        }
    }

    /// Every part together.
    pub fn total(&self) -> usize {
        self.client_connections
            .saturating_add(self.upstream_connections)
            .saturating_add(self.reserve)
    }

    /// The warning for an open-files limit of `limit`, when the budget exceeds it.
    pub fn exceeds(&self, limit: u64) -> Option<String> {
        let total = self.total();
        (u64::try_from(total).unwrap_or(u64::MAX) > limit).then(|| {
            format!(
                "the configuration may hold {total} file descriptors open at once ({} client connections \
                 by max_connections, {} upstream connections by max_in_flight and pools, \
                 {} reserved) but the open-files limit is {limit}: lower max_connections \
                 or raise the limit (LimitNOFILE, ulimit -Hn); upstream connects that find no \
                 descriptor wait for one up to the upstream's connect_timeout",
                self.client_connections, self.upstream_connections, self.reserve
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_adds_listeners_upstreams_and_the_reserve() {
        let config = Config::from_yaml(
            "workers: 2\nlisteners: [{ name: a, address: \"127.0.0.1:0\", max_connections: 1000 }]\n\
             upstreams:\n  u: { endpoints: [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"], max_in_flight: 100, pool: { max_idle_per_endpoint: 10 } }\n\
             routes: [{ name: r, match: { path_prefix: / }, upstream: u }]\n",
            "test.yaml",
        )
        .expect("valid");
        let budget = DescriptorBudget::of(&config);
        assert_eq!(budget.client_connections, 1000);
        // 100 in flight + 2 × 10 idle.
        assert_eq!(budget.upstream_connections, 120);
        assert_eq!(budget.reserve, FIXED_RESERVE + 2 + 1);
        assert!(budget.exceeds(u64::MAX).is_none());
        let warning = budget.exceeds(500).expect("over");
        assert!(warning.contains("open-files limit is 500"), "{warning}");
    }
}
