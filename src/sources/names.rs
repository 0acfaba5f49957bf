//! Names and identifiers callers choose, checked before anything is stored.

use super::error::DomainError;

/// Chroma's rule for database and collection names.
pub fn validate_chroma_name(what: &str, name: &str) -> Result<(), DomainError> {
    let ok_len = (3..=512).contains(&name.len());
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let ok_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok_len && ok_chars && ok_ends {
        Ok(())
    } else {
        Err(DomainError::invalid(format!(
            "{what} `{name}` must be 3-512 characters from [a-zA-Z0-9._-], starting and ending \
             with a letter or digit"
        )))
    }
}

/// Longest custom_id (seed 002); with `-<n>` it stays within Chroma's 128-byte IDs.
pub const MAX_CUSTOM_ID: usize = 120;

/// A `custom_id` chunk IDs are built from: 1 to 120 bytes.
pub fn validate_custom_id(custom_id: &str) -> Result<(), DomainError> {
    if custom_id.is_empty() || custom_id.chars().count() > MAX_CUSTOM_ID {
        return Err(DomainError::invalid(format!(
            "custom_id must be 1 to {MAX_CUSTOM_ID} characters long"
        )));
    }
    if custom_id.len() > MAX_CUSTOM_ID {
        return Err(DomainError::invalid(format!(
            "custom_id must be at most {MAX_CUSTOM_ID} bytes in UTF-8, to keep record IDs \
             within Chroma's 128 bytes"
        )));
    }
    Ok(())
}
