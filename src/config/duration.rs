//! Istio duration strings (`1s`, `0.5s`, `100ms`, `1m30s`): Go's `time.ParseDuration` syntax,
//! which is what Istio's CRD validation accepts and a superset of protobuf JSON durations.
//!
//! Depends on: std.

use std::time::Duration;

/// A timeout that is off, as a duration: ten years, so deadlines computed from it cannot
/// overflow.
pub(crate) const NEVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Parse a duration such as `1.5s`, `250ms` or `1h2m`; `None` when malformed or negative.
pub fn parse(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return None;
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_forms() {
        let ms = Duration::from_millis;
        for (s, d) in [
            ("1s", ms(1000)),
            ("0.5s", ms(500)),
            ("100ms", ms(100)),
            ("1m30s", ms(90_000)),
            ("2h", ms(7_200_000)),
            ("0", ms(0)),
            ("1.5ms", Duration::from_micros(1500)),
        ] {
            assert_eq!(parse(s), Some(d), "{s}");
        }
        for bad in ["", "s", "1", "-1s", "1x", "1.2.3s", "ms1"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
