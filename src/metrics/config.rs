//! `portcullis_config_*` and `portcullis_build_info`: reload attempts, the configuration
//! in use (its hash, when it was loaded) and the build that runs.

use super::Metrics;

impl Metrics {
    /// Records a reload attempt.
    pub fn record_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.config_reloads.with_label_values(&[result]).inc();
    }

    /// Marks the configuration with `hash` as the one in use, loaded now.
    pub fn config_loaded(&self, previous_hash: Option<&str>, hash: &str) {
        if let Some(previous) = previous_hash.filter(|p| *p != hash) {
            let _ = self.config_info.remove_label_values(&[previous]);
        }
        self.config_info.with_label_values(&[hash]).set(1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.config_last_success.set(now);
    }
}
