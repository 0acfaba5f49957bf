//! Parsing a create payload's kind field: what `SourceSpec` (written by
//! the domain's registry, `domain/registry/generate.rs`) needs that is not
//! per kind — the kind's settings read from the untyped field with the path
//! of what is wrong, and the messages for an unknown field, none or several
//! kinds.

use serde::de::DeserializeOwned;
use utoipa::PartialSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

use super::DomainError;
use crate::model::{CreateSourcePayload, OrderedJson};

/// How a body that does not deserialize is refused (`api/error.rs` adds the
/// first half to axum's message, the second is axum's): an error in the
/// kind's field reads as it did when the field was typed.
const BODY_ERROR: &str =
    "invalid request body: Failed to deserialize the JSON body into the target type: ";

/// The kind's settings in `value` (the payload's `field`), or a 400 naming
/// the setting that is wrong, as a JSON body error would have:
/// `invalid request body: s3.region: invalid type: …`.
pub(crate) fn settings_of<T: DeserializeOwned>(
    field: &str,
    value: &OrderedJson,
) -> Result<T, DomainError> {
    serde_path_to_error::deserialize(value.to_value()).map_err(|error| {
        let path = error.path().to_string();
        let at = if path == "." {
            field.to_string()
        } else {
            format!("{field}.{path}")
        };
        DomainError::invalid(format!("{BODY_ERROR}{at}: {}", error.inner()))
    })
}

/// A payload field that is neither a kind nor a shared setting; lists what
/// is accepted, as serde's own message for an unknown field does.
pub(crate) fn unknown_field(field: &str, kind_fields: &[&str]) -> DomainError {
    let mut accepted: Vec<String> = kind_fields.iter().map(|f| format!("`{f}`")).collect();
    accepted.extend(shared_fields().into_iter().map(|f| format!("`{f}`")));
    DomainError::invalid(format!(
        "{BODY_ERROR}{field}: unknown field `{field}`, expected one of {}",
        accepted.join(", ")
    ))
}

/// The create payload's fields every kind shares, read off its schema so
/// the list cannot drift from the struct.
fn shared_fields() -> Vec<String> {
    match CreateSourcePayload::schema() {
        RefOr::T(Schema::Object(object)) => object.properties.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// "`a`, `b` or `c`".
pub(crate) fn one_of(fields: &[&str]) -> String {
    let quoted: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
    either(&quoted)
}

/// "a, b or c".
pub fn either(items: &[impl AsRef<str>]) -> String {
    let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    match items.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => items.join(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_of_reads_as_a_sentence() {
        assert_eq!(one_of(&["s3"]), "`s3`");
        assert_eq!(one_of(&["s3", "github"]), "`s3` or `github`");
        assert_eq!(one_of(&["a", "b", "c"]), "`a`, `b` or `c`");
    }

    #[test]
    fn the_shared_fields_come_from_the_payload_s_schema() {
        let shared = shared_fields();
        assert!(shared.contains(&"database_name".to_string()), "{shared:?}");
        assert!(shared.contains(&"webhook".to_string()), "{shared:?}");
        assert!(!shared.contains(&"kind".to_string()), "{shared:?}");
    }
}
