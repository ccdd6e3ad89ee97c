//! `tracing`: the OTLP endpoint (a plain `http://` URL with a host and port), the
//! sampling ratio (0 to 1), and the bounds of the export queue and its batches.

use std::time::Duration;

use http::Uri;

use super::Problems;
use crate::config::raw::RawTracing;
use crate::trace::TracingSettings;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_SAMPLE: f64 = 0.01;
const DEFAULT_SERVICE_NAME: &str = "portcullis";
const DEFAULT_QUEUE: usize = 2048;
const MAX_QUEUE: usize = 1_000_000;
const DEFAULT_BATCH: usize = 512;
const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(1);

/// `tracing`, compiled; `None` (with problems added) when anything is wrong.
pub(super) fn compile_tracing(
    raw: &RawTracing,
    problems: &mut Problems,
) -> Option<TracingSettings> {
    let before = problems.error_count();
    let endpoint = match raw.otlp.endpoint.parse::<Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => Some(uri),
        Ok(uri) if uri.scheme_str() == Some("https") => {
            problems.add(
                "tracing.otlp.endpoint",
                "https:// collectors are not supported yet; export to a local collector over http://",
            );
            None
        }
        _ => {
            problems.add(
                "tracing.otlp.endpoint",
                format!(
                    "{:?} is not an http:// URL; write e.g. http://127.0.0.1:4318/v1/traces",
                    raw.otlp.endpoint
                ),
            );
            None
        }
    };
    let timeout = problems.positive_duration(
        "tracing.otlp.timeout".into(),
        raw.otlp.timeout,
        DEFAULT_TIMEOUT,
    );
    let export_interval = problems.positive_duration(
        "tracing.export_interval".into(),
        raw.export_interval,
        DEFAULT_EXPORT_INTERVAL,
    );
    let sample = raw.sample.unwrap_or(DEFAULT_SAMPLE);
    if !(0.0..=1.0).contains(&sample) {
        problems.add(
            "tracing.sample",
            "must be between 0 and 1 (0.01 samples 1% of new traces)",
        );
    }
    let service_name = raw
        .service_name
        .clone()
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    if service_name.trim().is_empty() || service_name.len() > 256 {
        problems.add(
            "tracing.service_name",
            "must be a name of 1 to 256 characters",
        );
    }
    let queue = raw.queue.unwrap_or(DEFAULT_QUEUE);
    if !(1..=MAX_QUEUE).contains(&queue) {
        problems.add(
            "tracing.queue",
            format!("must be between 1 and {MAX_QUEUE} spans"),
        );
    }
    let batch = raw.batch.unwrap_or(DEFAULT_BATCH.min(queue.max(1)));
    if batch == 0 || batch > queue {
        problems.add(
            "tracing.batch",
            format!("must be between 1 and the queue's size ({queue})"),
        );
    }
    let endpoint = endpoint.filter(|_| problems.error_count() == before)?;
    Some(TracingSettings {
        endpoint,
        timeout,
        sample,
        service_name,
        trust_incoming: raw.trust_incoming.unwrap_or_default(),
        queue,
        batch,
        export_interval,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, LoadError};

    const BASE: &str = "listeners:\n  - name: public\n    address: 127.0.0.1:0\n";

    #[test]
    fn defaults_fill_what_is_left_out() {
        let text =
            format!("{BASE}tracing:\n  otlp:\n    endpoint: http://127.0.0.1:4318/v1/traces\n");
        let config = Config::from_yaml(&text, "gateway.yaml").expect("valid");
        let tracing = config.tracing.expect("on");
        assert_eq!(tracing.sample, 0.01);
        assert_eq!((tracing.queue, tracing.batch), (2048, 512));
    }

    #[test]
    fn bad_values_are_named() {
        let text = format!(
            "{BASE}tracing:\n  otlp:\n    endpoint: ftp://x\n  sample: 2\n  queue: 4\n  batch: 8\n"
        );
        let Err(LoadError::Invalid(errors)) = Config::from_yaml(&text, "gateway.yaml") else {
            panic!("invalid");
        };
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        for key in ["tracing.otlp.endpoint", "tracing.sample", "tracing.batch"] {
            assert!(keys.contains(&key), "{key} in {keys:?}");
        }
    }
}
