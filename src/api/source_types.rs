//! `GET /api/v1/source-types` (extension): every source kind the daemon
//! has, as the kind describes itself (`sources::SourceKind`): its
//! title and description, the create payload's field for its settings,
//! their JSON Schema (from the wire config type's `ToSchema`, `$ref`s
//! resolved, each optional setting's effective value as its `default`), and
//! the invocation fields it takes. The dashboard builds its create form,
//! filters and invocation forms from this answer, so it names no kind.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Json;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use utoipa::{PartialSchema, ToSchema};

use super::AppState;
use crate::model::{CreateJobPayload, ErrorResponse, SourceType};
use crate::sources::{InvocationField, KindDescription};

/// Body of `GET /api/v1/source-types`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SourceTypes {
    pub source_types: Vec<SourceTypeInfo>,
}

/// One source kind, as the daemon knows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SourceTypeInfo {
    /// The kind: the `source_type` of its sources and jobs.
    #[serde(rename = "type")]
    pub source_type: SourceType,
    /// A short name for people.
    pub title: String,
    pub description: String,
    /// The field of `POST /api/v1/sources`'s body (and of a `Source`)
    /// holding the kind's settings.
    pub config_field: String,
    /// JSON Schema of the settings, with every `$ref` resolved; an optional
    /// setting's `default` is the value it takes when left out.
    #[schema(value_type = Object)]
    pub schema: Value,
    /// The invocation body fields the kind accepts; others are refused.
    pub invocation_fields: Vec<String>,
    /// JSON Schema of an invocation of the kind: those fields of
    /// `CreateJobPayload`, and which of them are `required`.
    #[schema(value_type = Object)]
    pub invocation_schema: Value,
    /// For an invocation field recorded in the job's `metadata.<type>`,
    /// that field's name (what a retry reads back). `target_collection_name`
    /// is every job's `metadata.collection_name`.
    pub job_metadata_fields: BTreeMap<String, String>,
}

#[utoipa::path(get, path = "/api/v1/source-types", tag = "Source",
    operation_id = "list_source_types",
    description = "Extension: every source kind this daemon has, with the JSON Schema of its \
        settings and the invocation fields it takes (the dashboard builds its forms from it).",
    responses(
        (status = 200, description = "Source kinds", body = SourceTypes),
        (status = 401, description = "Unauthorized", body = ErrorResponse),
        (status = 500, description = "Server error", body = ErrorResponse)),
    security(("x-chroma-token" = [])))]
pub async fn list(State(state): State<AppState>) -> Json<SourceTypes> {
    Json(SourceTypes {
        source_types: state.sources.kinds().into_iter().map(info).collect(),
    })
}

/// The wire form of what a kind says of itself.
fn info(kind: KindDescription) -> SourceTypeInfo {
    let mut schema = resolved(kind.schema, kind.schemas);
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        for (field, value) in kind.defaults {
            if let Some(Value::Object(property)) = properties.get_mut(&field) {
                property.insert("default".to_string(), value);
            }
        }
    }
    let invocation_fields: Vec<String> = kind
        .invocation_fields
        .iter()
        .map(|field| field.name.to_string())
        .collect();
    SourceTypeInfo {
        source_type: kind.source_type,
        title: kind.title.to_string(),
        description: kind.description.to_string(),
        config_field: kind.source_type.as_str().to_string(),
        schema,
        invocation_schema: invocation_schema(kind.invocation_fields),
        job_metadata_fields: kind
            .invocation_fields
            .iter()
            .filter_map(|field| Some((field.name.to_string(), field.recorded_as?.to_string())))
            .collect(),
        invocation_fields,
    }
}

/// `CreateJobPayload`'s schema cut down to a kind's fields.
fn invocation_schema(fields: &[InvocationField]) -> Value {
    let mut schemas = Vec::new();
    <CreateJobPayload as ToSchema>::schemas(&mut schemas);
    let payload = resolved(CreateJobPayload::schema(), schemas);
    let all = payload.get("properties").and_then(Value::as_object);
    let properties: Map<String, Value> = fields
        .iter()
        .filter_map(|field| Some((field.name.to_string(), all?.get(field.name)?.clone())))
        .collect();
    let required: Vec<&str> = fields
        .iter()
        .filter(|field| field.required)
        .map(|field| field.name)
        .collect();
    serde_json::json!({
        "type": "object",
        "properties": properties,
        "required": required,
    })
}

/// Deepest chain of `$ref`s followed; the wire types nest far less.
const MAX_REF_DEPTH: usize = 16;

/// `schema` as JSON with every `#/components/schemas/<name>` reference
/// replaced by the named schema (from `schemas`), so a reader needs no
/// component table.
fn resolved(schema: RefOr<Schema>, schemas: Vec<(String, RefOr<Schema>)>) -> Value {
    let components: Map<String, Value> = schemas
        .into_iter()
        .filter_map(|(name, schema)| Some((name, serde_json::to_value(schema).ok()?)))
        .collect();
    let mut value = serde_json::to_value(schema).unwrap_or(Value::Null);
    resolve(&mut value, &components, 0);
    value
}

fn resolve(value: &mut Value, components: &Map<String, Value>, depth: usize) {
    match value {
        Value::Object(object) => {
            let target = object
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|reference| reference.strip_prefix("#/components/schemas/"))
                .and_then(|name| components.get(name));
            if let Some(target) = target.filter(|_| depth < MAX_REF_DEPTH) {
                // The reference's siblings (a field's description) stay.
                let mut replacement = target.clone();
                if let Value::Object(replacement) = &mut replacement {
                    for (key, sibling) in std::mem::take(object) {
                        if key != "$ref" {
                            replacement.insert(key, sibling);
                        }
                    }
                }
                *value = replacement;
                resolve(value, components, depth + 1);
                return;
            }
            for child in object.values_mut() {
                resolve(child, components, depth);
            }
        }
        Value::Array(items) => {
            for item in items {
                resolve(item, components, depth);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::domain::Sources;
    use crate::sources::SourceKind;
    use crate::sources::web::WebSource;

    fn answer() -> Vec<SourceTypeInfo> {
        let sources = Sources::new(&Config::default()).expect("the default config's sources");
        sources.kinds().into_iter().map(info).collect()
    }

    /// Each kind's `config_field` is the create payload's field holding
    /// exactly the settings its schema describes.
    #[test]
    fn config_fields_are_the_create_payloads_fields_of_each_kinds_settings() {
        let document = serde_json::to_value(super::super::openapi::spec()).unwrap();
        let components = document["components"]["schemas"].as_object().unwrap();
        let payload = &components["CreateSourcePayload"]["properties"];
        let sources = Sources::new(&Config::default()).unwrap();
        for kind in sources.kinds() {
            let field = kind.source_type.as_str();
            let property = serde_json::to_string(&payload[field]).unwrap();
            let name = property
                .split("#/components/schemas/")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("{field}: {property}"));
            let mut documented = components[name].clone();
            let mut described = serde_json::to_value(&kind.schema).unwrap();
            resolve(&mut documented, components, 0);
            resolve(&mut described, components, 0);
            assert_eq!(documented, described, "{field}");
        }
    }

    #[test]
    fn schemas_have_no_references_and_defaults_only_on_known_settings() {
        for kind in answer() {
            let text = kind.schema.to_string();
            assert!(!text.contains("$ref"), "{text}");
            assert!(!kind.invocation_schema.to_string().contains("$ref"));
            let properties = kind.schema["properties"].as_object().unwrap();
            assert!(!properties.is_empty());
            let invocation = kind.invocation_schema["properties"].as_object().unwrap();
            assert_eq!(
                invocation.keys().collect::<std::collections::BTreeSet<_>>(),
                kind.invocation_fields.iter().collect(),
                "every declared field is one of CreateJobPayload's"
            );
        }
        // A default is the daemon's: its config's, not the settings type's.
        let config: Config = toml::from_str("[web]\ndefault_max_depth = 7\n").unwrap();
        let sources = Sources::new(&config).unwrap();
        let web = sources
            .kinds()
            .into_iter()
            .map(info)
            .find(|kind| kind.source_type == <WebSource as SourceKind>::SOURCE_TYPE)
            .unwrap();
        assert_eq!(web.schema["properties"]["max_depth"]["default"], 7);
    }
}
