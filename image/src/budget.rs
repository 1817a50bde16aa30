//! The image size budget: parsing sizes like `48M`, resolving the budget from
//! the command line or environment, and enforcing it.

/// The product promise: the whole image fits in 64 MiB. A build may tighten
/// this, never loosen it.
pub const HARD_LIMIT: u64 = 64 * MIB;

pub const MIB: u64 = 1024 * 1024;

/// Environment variable that sets the budget when `--budget` is not given.
pub const ENV_VAR: &str = "HV_SIZE_BUDGET";

/// A size that [`parse_size`] cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("invalid size {text:?}: expected a number of bytes such as 48M")]
    NoNumber { text: String },
    #[error(
        "invalid size {text:?}: unknown unit {unit:?} (use K, M, G, KiB, MiB, GiB, kB, MB or GB)"
    )]
    UnknownUnit { text: String, unit: String },
    #[error("invalid size {text:?}: number too large")]
    TooLarge { text: String },
}

/// A budget that [`resolve`] refuses; `origin` is `--budget` or [`ENV_VAR`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("{origin}: {error}")]
    Size {
        origin: &'static str,
        #[source]
        error: SizeError,
    },
    #[error(
        "{origin}: budget {budget} bytes ({human}) is above the {HARD_LIMIT} bytes (64 MiB) limit; \
         the budget can only be lowered, never raised",
        human = human(*budget)
    )]
    AboveLimit { origin: &'static str, budget: u64 },
    #[error("{origin}: budget must be greater than zero")]
    Zero { origin: &'static str },
}

/// An image larger than its budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{image} is {total} bytes ({human_total}), over the size budget of {budget} bytes \
     ({human_budget}) by {over} bytes",
    human_total = human(*total),
    human_budget = human(*budget),
    over = total - budget
)]
pub struct OverBudget {
    pub image: String,
    pub total: u64,
    pub budget: u64,
}

/// Parses a byte count with an optional unit suffix, following dd(1):
/// `K`/`KiB`, `M`/`MiB`, `G`/`GiB` are powers of 1024, `kB`/`KB`, `MB`, `GB`
/// powers of 1000; a bare number or `B` is bytes.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(SizeError::NoNumber { text: text.into() });
    }
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(SizeError::UnknownUnit {
                text: text.into(),
                unit: other.into(),
            })
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| SizeError::TooLarge { text: text.into() })
}

/// Picks the budget: `--budget` wins over `HV_SIZE_BUDGET`, which wins over
/// the hard limit. Returns an error when the requested budget is above the
/// hard limit, because silently capping it would hide a misconfiguration.
pub fn resolve(flag: Option<&str>, env: Option<&str>) -> Result<u64, BudgetError> {
    let (origin, text) = match (flag, env.filter(|e| !e.trim().is_empty())) {
        (Some(flag), _) => ("--budget", flag),
        (None, Some(env)) => (ENV_VAR, env),
        (None, None) => return Ok(HARD_LIMIT),
    };
    let budget = parse_size(text).map_err(|error| BudgetError::Size { origin, error })?;
    if budget > HARD_LIMIT {
        return Err(BudgetError::AboveLimit { origin, budget });
    }
    if budget == 0 {
        return Err(BudgetError::Zero { origin });
    }
    Ok(budget)
}

/// Fails when the image is larger than the budget, naming both sizes.
pub fn check(image_name: &str, total: u64, budget: u64) -> Result<(), OverBudget> {
    if total <= budget {
        return Ok(());
    }
    Err(OverBudget {
        image: image_name.into(),
        total,
        budget,
    })
}

/// Formats a byte count as MiB with two decimals, for messages and reports.
pub fn human(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / MIB as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_size("67108864").unwrap(), 64 * MIB);
        assert_eq!(parse_size("64M").unwrap(), 64 * MIB);
        assert_eq!(parse_size("64MiB").unwrap(), 64 * MIB);
        assert_eq!(parse_size("512K").unwrap(), 512 * 1024);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("20MB").unwrap(), 20_000_000);
        assert_eq!(parse_size(" 7 B ").unwrap(), 7);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn flag_beats_env_beats_default() {
        assert_eq!(resolve(None, None).unwrap(), HARD_LIMIT);
        assert_eq!(resolve(None, Some("")).unwrap(), HARD_LIMIT);
        assert_eq!(resolve(None, Some("32M")).unwrap(), 32 * MIB);
        assert_eq!(resolve(Some("16M"), Some("32M")).unwrap(), 16 * MIB);
    }

    #[test]
    fn budget_cannot_be_raised() {
        let err = resolve(Some("65M"), None).unwrap_err().to_string();
        assert!(err.contains("only be lowered"), "{err}");
        let err = resolve(None, Some("1G")).unwrap_err().to_string();
        assert!(err.starts_with(ENV_VAR), "{err}");
        assert!(resolve(Some("0"), None).is_err());
    }

    #[test]
    fn check_names_both_sizes() {
        assert!(check("out/hv.img", 100, 100).is_ok());
        let err = check("out/hv.img", 3 * MIB, 2 * MIB)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&(3 * MIB).to_string()), "{err}");
        assert!(err.contains(&(2 * MIB).to_string()), "{err}");
    }
}
