//! The single timestamp stamped on every file in every output, so that the
//! same inputs always produce the same bytes.

/// Used when SOURCE_DATE_EPOCH is unset: 2024-01-01T00:00:00Z. Any fixed
/// value works; this one is recent enough not to look like a broken clock.
pub const DEFAULT_EPOCH: u32 = 1_704_067_200;

/// A SOURCE_DATE_EPOCH that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpochError {
    #[error("SOURCE_DATE_EPOCH={text:?}: expected seconds since 1970 as a whole number")]
    NotANumber { text: String },
    /// cpio stores mtime in 32 bits.
    #[error("SOURCE_DATE_EPOCH={epoch}: later than the year 2106")]
    TooLate { epoch: u64 },
}

/// Reads SOURCE_DATE_EPOCH (see reproducible-builds.org) or falls back to
/// [`DEFAULT_EPOCH`]. The result fits the 32 bits cpio has for an mtime.
pub fn from_env() -> Result<u32, EpochError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) if !text.trim().is_empty() => parse(&text),
        _ => Ok(DEFAULT_EPOCH),
    }
}

fn parse(text: &str) -> Result<u32, EpochError> {
    let epoch: u64 = text
        .trim()
        .parse()
        .map_err(|_| EpochError::NotANumber { text: text.into() })?;
    u32::try_from(epoch).map_err(|_| EpochError::TooLate { epoch })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_garbage() {
        assert_eq!(parse(" 42 ").unwrap(), 42);
        assert!(parse("yesterday").is_err());
        assert!(parse("-5").is_err());
        assert!(parse("4294967296").is_err());
    }
}
