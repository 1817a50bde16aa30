//! Timeouts that stretch with the machine.
//!
//! Everything runs under TCG, where a boot that takes 30 s on an idle box can
//! take three times as long while the rest of the team compiles. Tests state
//! nominal timeouts; `HV_E2E_TIMEOUT_SCALE` (a positive number, default 1)
//! multiplies all of them.

use std::env;
use std::time::Duration;

const SCALE_VAR: &str = "HV_E2E_TIMEOUT_SCALE";

/// The factor from `HV_E2E_TIMEOUT_SCALE`.
///
/// # Panics
/// When the variable is set but is not a positive finite number: silently
/// ignoring a typo would make timeouts surprising.
pub fn scale() -> f64 {
    match env::var(SCALE_VAR) {
        Ok(text) => parse_scale(&text).unwrap_or_else(|| {
            panic!("{SCALE_VAR}={text:?} is not a positive number (e.g. 2 or 1.5)")
        }),
        Err(_) => 1.0,
    }
}

/// `nominal` multiplied by [`scale`].
pub fn scaled(nominal: Duration) -> Duration {
    nominal.mul_f64(scale())
}

fn parse_scale(text: &str) -> Option<f64> {
    let value: f64 = text.trim().parse().ok()?;
    (value.is_finite() && value > 0.0).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::parse_scale;

    #[test]
    fn accepts_positive_numbers_only() {
        assert_eq!(parse_scale("2"), Some(2.0));
        assert_eq!(parse_scale(" 1.5 "), Some(1.5));
        assert_eq!(parse_scale("0"), None);
        assert_eq!(parse_scale("-1"), None);
        assert_eq!(parse_scale("inf"), None);
        assert_eq!(parse_scale("fast"), None);
    }
}
