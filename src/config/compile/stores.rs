//! `rate_limit_stores`: each shared store's Redis URL (checked here, so a typo fails at
//! load and not on the first request), timeout, pool and `on_error`.

use std::collections::BTreeMap;

use super::{check_name, Problems};
use crate::config::raw::RawRateLimitStore;
use crate::config::{
    defaults, RateLimitStoreConfig, RedisPassword, RedisStoreConfig, RedisUrl, LOCAL_STORE,
};

/// The shared stores, sorted by name (as the map is). A store with a problem is left out
/// (the file does not load anyway).
pub(super) fn compile_stores(
    raw: &BTreeMap<String, RawRateLimitStore>,
    problems: &mut Problems,
) -> Vec<RateLimitStoreConfig> {
    raw.iter()
        .filter_map(|(name, store)| {
            let key = format!("rate_limit_stores.{name}");
            check_name("rate-limit store", name, key.clone(), problems);
            if name == LOCAL_STORE {
                problems.add(
                    key.clone(),
                    format!(
                        "{LOCAL_STORE:?} is the gateway's own store (rate limits name it \
                         with `store: {LOCAL_STORE}`); give the shared store another name"
                    ),
                );
            }
            let before = problems.error_count();
            let url = parse_redis_url(&store.redis.url)
                .map_err(|message| problems.add(format!("{key}.redis.url"), message))
                .ok();
            let timeout = problems.positive_duration(
                format!("{key}.redis.timeout"),
                store.redis.timeout,
                defaults::RATE_LIMIT_STORE_TIMEOUT,
            );
            let pool = store.redis.pool.unwrap_or(defaults::RATE_LIMIT_STORE_POOL);
            if !(1..=defaults::RATE_LIMIT_STORE_MAX_POOL).contains(&pool) {
                problems.add(
                    format!("{key}.redis.pool"),
                    format!(
                        "must be between 1 and {} connections",
                        defaults::RATE_LIMIT_STORE_MAX_POOL
                    ),
                );
            }
            let url = url.filter(|_| problems.error_count() == before)?;
            Some(RateLimitStoreConfig {
                name: name.clone(),
                redis: RedisStoreConfig { url, timeout, pool },
                on_error: store.on_error.unwrap_or_default(),
            })
        })
        .collect()
}

/// `redis://[user[:password]@]host[:port][/db]`. Messages never repeat the password.
pub(super) fn parse_redis_url(text: &str) -> Result<RedisUrl, String> {
    // The URL as it may be shown: with any password masked.
    let shown = || match url::Url::parse(text) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => text.to_owned(),
        Err(_) => "the value".to_owned(),
    };
    let parsed = url::Url::parse(text).map_err(|e| {
        format!(
            "{} is not a URL ({e}); write e.g. redis://127.0.0.1:6379",
            shown()
        )
    })?;
    match parsed.scheme() {
        "redis" => {}
        "rediss" => {
            return Err(format!(
                "{}: TLS to Redis (rediss://) is not supported; use redis:// on a trusted \
                 network or a local TLS tunnel",
                shown()
            ))
        }
        "unix" | "redis+unix" => {
            return Err(format!(
                "{}: Unix sockets are not supported; use redis://host:port",
                shown()
            ))
        }
        other => return Err(format!("{}: scheme {other:?} is not redis://", shown())),
    }
    let host = match parsed.host() {
        Some(url::Host::Domain(name)) if !name.is_empty() => name.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err(format!("{} has no host", shown())),
    };
    let port = parsed.port().unwrap_or(defaults::REDIS_PORT);
    if port == 0 {
        return Err(format!("{}: port 0 is not a Redis port", shown()));
    }
    let db = match parsed.path().trim_start_matches('/') {
        "" => 0,
        db => db
            .parse::<i64>()
            .ok()
            .filter(|db| *db >= 0)
            .ok_or_else(|| {
                format!(
                    "{}: the path must be a database number such as /0, not {:?}",
                    shown(),
                    parsed.path()
                )
            })?,
    };
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!(
            "{}: query parameters are not supported; write \
             redis://[user[:password]@]host[:port][/db]",
            shown()
        ));
    }
    let decode = |part: &str| {
        percent_decode(part).ok_or_else(|| format!("{}: credentials are not UTF-8", shown()))
    };
    let username = match parsed.username() {
        "" => None,
        user => Some(decode(user)?),
    };
    let password = parsed
        .password()
        .map(decode)
        .transpose()?
        .map(RedisPassword::new);
    Ok(RedisUrl {
        host,
        port,
        db,
        username,
        password,
    })
}

/// `%XX` sequences decoded (the URL parser keeps them encoded in user and password).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_host_port_db_and_credentials() {
        let url = parse_redis_url("redis://127.0.0.1:6380/3").expect("valid");
        assert_eq!(
            (
                url.host.as_str(),
                url.port,
                url.db,
                url.username,
                url.password
            ),
            ("127.0.0.1", 6380, 3, None, None)
        );
        let url = parse_redis_url("redis://cache.internal").expect("valid");
        assert_eq!((url.port, url.db), (6379, 0));
        let url = parse_redis_url("redis://gw:p%40ss@[::1]/").expect("valid");
        assert_eq!(url.host, "::1");
        assert_eq!(url.username.as_deref(), Some("gw"));
        assert_eq!(
            url.password.as_ref().map(RedisPassword::expose),
            Some("p@ss")
        );
        let url = parse_redis_url("redis://:only-a-password@localhost").expect("valid");
        assert_eq!(url.username, None);
        assert!(url.password.is_some());
    }

    #[test]
    fn bad_urls_are_refused_without_showing_the_password() {
        for (text, expect) in [
            ("rediss://:hunter2@cache:6380", "TLS to Redis"),
            ("unix:///run/redis.sock", "Unix sockets"),
            ("http://cache:6379", "is not redis://"),
            ("redis://:hunter2@cache/x", "database number"),
            ("redis://cache/-1", "database number"),
            ("redis://cache?timeout=1", "query parameters"),
            ("redis://:hunter2@cache:0", "port 0"),
            ("cache:6379", "is not redis://"),
            ("127.0.0.1:6379", "is not a URL"),
        ] {
            let message = parse_redis_url(text).expect_err(text);
            assert!(message.contains(expect), "{text}: {message}");
            assert!(!message.contains("hunter2"), "{text}: {message}");
        }
    }

    const BASE: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:8080
upstreams:
  app:
    endpoints: ["http://127.0.0.1:9201"]
routes:
  - name: app
    match: { path_prefix: / }
    upstream: app
"#;

    fn errors_of(text: &str) -> Vec<crate::config::ConfigError> {
        match crate::config::Config::from_yaml(text, "g.yaml") {
            Ok(_) => panic!("expected errors:\n{text}"),
            Err(crate::config::LoadError::Invalid(errors)) => errors,
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn stores_compile_with_defaults_and_are_found_by_name() {
        let text = format!(
            "{BASE}rate_limit_stores:\n  \
             shared: {{ redis: {{ url: \"redis://127.0.0.1:6379\", timeout: 20ms, pool: 16 }}, on_error: deny }}\n  \
             other: {{ redis: {{ url: \"redis://10.0.0.5\" }} }}\n"
        );
        let config = crate::config::Config::from_yaml(&text, "g.yaml").expect("valid");
        let shared = &config.rate_limit_stores[config.rate_limit_store("shared").expect("found")];
        assert_eq!(shared.redis.timeout, std::time::Duration::from_millis(20));
        assert_eq!(shared.redis.pool, 16);
        assert_eq!(shared.on_error, crate::config::OnStoreError::Deny);
        let other = &config.rate_limit_stores[config.rate_limit_store("other").expect("found")];
        assert_eq!(other.redis.timeout, defaults::RATE_LIMIT_STORE_TIMEOUT);
        assert_eq!(other.redis.pool, defaults::RATE_LIMIT_STORE_POOL);
        assert_eq!(other.on_error, crate::config::OnStoreError::Allow);
        assert_eq!(config.rate_limit_store(LOCAL_STORE), None);
        assert_eq!(config.rate_limit_store("nope"), None);
    }

    #[test]
    fn every_problem_of_a_store_is_located() {
        let text = format!(
            "{BASE}rate_limit_stores:\n  \
             local: {{ redis: {{ url: \"redis://127.0.0.1\" }} }}\n  \
             shared:\n    \
             redis: {{ url: \"rediss://:hunter2@cache\", timeout: 0s, pool: 0 }}\n"
        );
        let errors = errors_of(&text);
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "rate_limit_stores.local",
                "rate_limit_stores.shared.redis.url",
                "rate_limit_stores.shared.redis.timeout",
                "rate_limit_stores.shared.redis.pool",
            ],
            "{errors:#?}"
        );
        assert_eq!((errors[1].line, errors[1].column), (15, 19), "{errors:#?}");
        assert!(errors.iter().all(|e| !e.message.contains("hunter2")));
    }

    #[test]
    fn unknown_keys_and_values_are_refused_by_type() {
        let errors = errors_of(&format!(
            "{BASE}rate_limit_stores:\n  s: {{ redis: {{ url: \"redis://x\", pol: 2 }} }}\n"
        ));
        assert!(
            errors[0].message.contains("unknown field `pol`"),
            "{errors:?}"
        );
        let errors = errors_of(&format!(
            "{BASE}rate_limit_stores:\n  s: {{ redis: {{ url: \"redis://x\" }}, on_error: open }}\n"
        ));
        assert!(errors[0].message.contains("allow"), "{errors:?}");
        let errors = errors_of(&format!(
            "{BASE}rate_limit_stores:\n  s: {{ redis: {{ url: \"redis://x\", timeout: 20 }} }}\n"
        ));
        assert!(errors[0].message.contains("20ms"), "{errors:?}");
    }
}
