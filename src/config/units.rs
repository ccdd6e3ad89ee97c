//! Value types that `gateway.yaml` writes in human units: durations (`250ms`, `5s`),
//! byte sizes (`64KiB`, `10MiB`) and scalars that users write unquoted (`x-version: 2`).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration written as `250ms`, `5s`, `1m` or `1h 30m`.
///
/// The units are those a gateway's timers need: `ns`, `us`, `ms`, `s`, `m`, `h` and `d`
/// (and their long names: `msec`, `sec`, `seconds`, `min`, `minutes`, `hours`, `days`,
/// …). Weeks, months and years are refused: no timeout or interval of a gateway is that
/// long, and `M` (a month to humantime) is too easily written for a minute or a
/// megabyte: `timeout: 1M` would otherwise be 2,630,016 seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `250ms`, `5s`, `1h 30m`, `1h30m`: whole numbers, each with a unit.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let example = "write e.g. 250ms, 5s, 1m or 1h 30m";
        if text.is_empty() {
            return Err(format!("empty duration; {example}"));
        }
        let mut total = Duration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!("invalid duration {text:?}; {example}"));
            }
            let number: u64 = rest[..digits]
                .parse()
                .map_err(|_| format!("duration {text:?} is too large"))?;
            rest = rest[digits..].trim_start();
            if rest.starts_with(['.', ',']) {
                return Err(format!(
                    "duration {text:?} has a fraction; write whole numbers of a smaller unit \
                     (1500ms, not 1.5s)"
                ));
            }
            let unit_len = rest
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = rest[unit_len..].trim_start();
            let part = duration_of(number, unit).map_err(|why| match why {
                UnitError::Missing => {
                    format!("duration {text:?} needs a unit after {number}; {example}")
                }
                UnitError::TooLong(name) => format!(
                    "unit `{unit}` ({name}) in {text:?} is not accepted: no gateway timeout or \
                     interval is that long (for a minute write `m`, the longest unit is `d`)"
                ),
                UnitError::Unknown => {
                    format!("unknown unit `{unit}` in {text:?}; use ns, us, ms, s, m, h or d")
                }
                UnitError::Overflow => format!("duration {text:?} is too large"),
            })?;
            total = total
                .checked_add(part)
                .ok_or_else(|| format!("duration {text:?} is too large"))?;
        }
        Ok(HumanDuration(total))
    }
}

enum UnitError {
    Missing,
    /// Weeks, months, years: named for the message.
    TooLong(&'static str),
    Unknown,
    Overflow,
}

/// `number` of `unit`.
fn duration_of(number: u64, unit: &str) -> Result<Duration, UnitError> {
    let seconds = |factor: u64| {
        number
            .checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or(UnitError::Overflow)
    };
    match unit {
        "" => Err(UnitError::Missing),
        "ns" | "nsec" | "nanos" => Ok(Duration::from_nanos(number)),
        "us" | "usec" | "micros" => Ok(Duration::from_micros(number)),
        "ms" | "msec" | "millis" => Ok(Duration::from_millis(number)),
        "s" | "sec" | "secs" | "second" | "seconds" => seconds(1),
        "m" | "min" | "mins" | "minute" | "minutes" => seconds(60),
        "h" | "hr" | "hrs" | "hour" | "hours" => seconds(3600),
        "d" | "day" | "days" => seconds(86_400),
        "w" | "week" | "weeks" => Err(UnitError::TooLong("weeks")),
        "M" | "month" | "months" => Err(UnitError::TooLong("months")),
        "y" | "year" | "years" => Err(UnitError::TooLong("years")),
        _ => Err(UnitError::Unknown),
    }
}

impl fmt::Display for HumanDuration {
    /// The exact value in the file's units: `250ms`, `5s`, `1m 30s`, `1d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let nanos = u64::from(self.0.subsec_nanos());
        let parts = [
            (secs / 86_400, "d"),
            (secs / 3600 % 24, "h"),
            (secs / 60 % 60, "m"),
            (secs % 60, "s"),
            (nanos / 1_000_000, "ms"),
            (nanos / 1000 % 1000, "us"),
            (nanos % 1000, "ns"),
        ];
        let mut first = true;
        for (count, unit) in parts.iter().filter(|(count, _)| *count > 0) {
            if !first {
                f.write_str(" ")?;
            }
            write!(f, "{count}{unit}")?;
            first = false;
        }
        if first {
            f.write_str("0s")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 250ms, 5s or 1m")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                HumanDuration::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "duration {v} has no unit; write e.g. {v}ms or {v}s"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "duration {v} has no unit; write e.g. {v}ms or {v}s"
                )))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// An `ip:port` to listen on (`listeners[].address`, `admin.address`). Host names are
/// not resolved: a name can stand for several addresses, or other ones tomorrow, and a
/// listener binds one address now; the error says so.
pub fn socket_address<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<std::net::SocketAddr, D::Error> {
    struct AddressVisitor;
    impl Visitor<'_> for AddressVisitor {
        type Value = std::net::SocketAddr;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an IP address and port such as 0.0.0.0:8080 or [::]:8080")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if let Ok(address) = v.trim().parse() {
                return Ok(address);
            }
            let message = match v.trim().rsplit_once(':') {
                Some((host, port)) if port.parse::<u16>().is_ok() && !host.is_empty() => format!(
                    "{v:?} names a host; an IP address is needed (host names are not \
                     resolved): write e.g. 127.0.0.1:{port} for loopback or 0.0.0.0:{port} \
                     for every interface"
                ),
                _ => format!(
                    "{v:?} is not an IP address and port; write e.g. 0.0.0.0:8080 or [::]:8080"
                ),
            };
            Err(E::custom(message))
        }
    }
    deserializer.deserialize_str(AddressVisitor)
}

/// A size in bytes, written as a plain integer or with a unit: `512`, `64KiB`, `10MiB`, `1GB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `64KiB`, `10 MB`, `1GiB` or a plain number of bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("invalid size {text:?}; write e.g. 512, 64KiB, 10MiB"))?;
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} in {text:?}; use B, KB, KiB, MB, MiB, GB or GiB"
                ))
            }
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("size {text:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 8192, 64KiB or 10MiB")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("size {v} must not be negative")))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// A scalar kept as text, so `x-version: 2` and `x-version: "2"` mean the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalarString(pub String);

impl<'de> Deserialize<'de> for ScalarString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = ScalarString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ScalarString(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(ScalarString(v.to_string()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!(ByteSize::parse("512"), Ok(ByteSize(512)));
        assert_eq!(ByteSize::parse("64KiB"), Ok(ByteSize(65536)));
        assert_eq!(ByteSize::parse("10 MB"), Ok(ByteSize(10_000_000)));
        assert_eq!(ByteSize::parse("1GiB"), Ok(ByteSize(1 << 30)));
        assert!(ByteSize::parse("12 parsecs").is_err());
        assert!(ByteSize::parse("KiB").is_err());
    }

    #[test]
    fn durations_need_units() {
        let d: HumanDuration = serde_yaml::from_str("250ms").expect("valid");
        assert_eq!(d.0, Duration::from_millis(250));
        let err = serde_yaml::from_str::<HumanDuration>("5").expect_err("no unit");
        assert!(err.to_string().contains("no unit"), "{err}");
    }

    #[test]
    fn durations_take_gateway_units_only() {
        let parse = |t: &str| HumanDuration::parse(t).map(|d| d.0);
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("2 seconds"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("1ns"), Ok(Duration::from_nanos(1)));
        assert_eq!(
            parse("1M"),
            Err(
                "unit `M` (months) in \"1M\" is not accepted: no gateway timeout or \
                 interval is that long (for a minute write `m`, the longest unit is `d`)"
                    .to_owned()
            )
        );
        assert!(parse("2y").is_err_and(|e| e.contains("(years)")));
        assert!(parse("1w").is_err_and(|e| e.contains("(weeks)")));
        assert!(parse("5 parsecs").is_err_and(|e| e.contains("unknown unit `parsecs`")));
        assert!(parse("1h 5").is_err_and(|e| e.contains("needs a unit after 5")));
        assert!(parse("ms").is_err());
        assert!(parse("1.5s").is_err_and(|e| e.contains("1500ms, not 1.5s")));
        assert_eq!(
            HumanDuration(Duration::from_millis(90_250)).to_string(),
            "1m 30s 250ms"
        );
        assert_eq!(HumanDuration(Duration::ZERO).to_string(), "0s");
        assert!(parse("99999999999999999999s").is_err());
    }
}
