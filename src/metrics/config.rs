//! `portcullis_config_*` and `portcullis_build_info`: reload attempts and whether the
//! last one succeeded, the configuration in use (its hash, when it was loaded) and the build that runs.

use prometheus::{IntCounterVec, IntGaugeVec, Opts};

use super::{Metrics, Registrar};

/// The configuration and build families, registered once per process.
#[derive(Clone)]
pub(super) struct ConfigFamilies {
    reloads: IntCounterVec,
    last_reload_successful: prometheus::IntGauge,
    last_success: prometheus::Gauge,
    info: IntGaugeVec,
    open_files_limit: prometheus::IntGauge,
    descriptors_budgeted: IntGaugeVec,
}

impl ConfigFamilies {
    pub(super) fn register(r: &Registrar) -> Self {
        let families = ConfigFamilies {
            reloads: r.counter(
                "portcullis_config_reloads_total",
                "Configuration reloads attempted, by result (success or failure).",
                &["result"],
            ),
            last_reload_successful: r.register(
                prometheus::IntGauge::new(
                    "portcullis_config_last_reload_successful",
                    "1 when the last reload attempt succeeded (or none was made yet), 0 while the \
                     configuration file in use fails to load.",
                )
                .expect("valid gauge"),
            ),
            last_success: r.register(
                prometheus::Gauge::new(
                    "portcullis_config_last_reload_success_timestamp_seconds",
                    "When the configuration in use was loaded (Unix time).",
                )
                .expect("valid gauge"),
            ),
            open_files_limit: r.register(
                prometheus::IntGauge::new(
                    "portcullis_open_files_limit",
                    "The process's open-files (file descriptor) soft limit, after raising it to \
                     the hard limit at start.",
                )
                .expect("valid gauge"),
            ),
            descriptors_budgeted: r.gauge(
                "portcullis_descriptors_budgeted",
                "File descriptors the configuration in use may hold open at once, by part: \
                 client_connections (listeners' max_connections), upstream_connections \
                 (max_in_flight and idle pools), reserve (listening sockets, Redis, health \
                 checks, files). Above portcullis_open_files_limit, connects may have to wait \
                 for a descriptor.",
                &["part"],
            ),
            info: r.gauge(
                "portcullis_config_info",
                "Always 1; the hash label identifies the configuration file's content in use.",
                &["hash"],
            ),
        };
        for result in ["success", "failure"] {
            families.reloads.with_label_values(&[result]);
        }
        families.last_reload_successful.set(1);
        let build_info = IntGaugeVec::new(
            Opts::new(
                "portcullis_build_info",
                "Always 1; the version label says which build runs.",
            ),
            &["version"],
        )
        .expect("valid gauge");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        r.register(build_info);
        families
    }
}

impl Metrics {
    /// Records a reload attempt.
    pub fn record_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.config.reloads.with_label_values(&[result]).inc();
        self.config.last_reload_successful.set(i64::from(success));
    }

    /// The descriptor budget of the configuration in use, and the open-files limit.
    pub fn record_descriptor_budget(
        &self,
        client_connections: usize,
        upstream_connections: usize,
        reserve: usize,
        limit: u64,
    ) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let budget = &self.config.descriptors_budgeted;
        budget
            .with_label_values(&["client_connections"])
            .set(gauge(client_connections));
        budget
            .with_label_values(&["upstream_connections"])
            .set(gauge(upstream_connections));
        budget.with_label_values(&["reserve"]).set(gauge(reserve));
        self.config
            .open_files_limit
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// The configuration file is back to the one in use: the last failure no longer
    /// describes it.
    pub fn reload_failure_cleared(&self) {
        self.config.last_reload_successful.set(1);
    }

    /// Marks the configuration with `hash` as the one in use, loaded now.
    pub fn config_loaded(&self, previous_hash: Option<&str>, hash: &str) {
        if let Some(previous) = previous_hash.filter(|p| *p != hash) {
            let _ = self.config.info.remove_label_values(&[previous]);
        }
        self.config.info.with_label_values(&[hash]).set(1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.config.last_success.set(now);
    }
}
