//! The registry: one line per source kind (`registry!`, written in
//! `generate.rs`), and what is decided across kinds — the kinds'
//! sections of the daemon's config, the invocation fields and run fields
//! a kind does not declare. It lives in the domain, above the kinds
//! (`crate::sources`), because it also holds what every source shares:
//! the webhook rules and the upload store.

mod generate;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use generate::registry;

use crate::config::{Config, Secret};
use crate::model::{
    CreateJobPayload, CreateSourcePayload, KindSettings, OrderedJson, Source, SourceSchedule,
    SourceType,
};
use crate::pipeline::{JobError, JobRun};
use crate::queue::{Queue, SourceRecord};
use crate::sources::{
    DomainError, InvocationField, KindDescription, Planned, Reconcile, RunField, RunTarget,
    SettingsSchema, SourceKind, WholeSource, describe, filesystem, github, s3, settings_schema,
    spec, web,
};

/// A run field the source's kind does not take, named as the flag that
/// set it and the kinds that do take it.
fn run_field_refused(name: &str) -> DomainError {
    let owners: Vec<&str> = SourceSpec::run_fields_by_kind()
        .into_iter()
        .filter(|(_, fields)| fields.iter().any(|field| field.name == name))
        .map(|(called, _)| called)
        .collect();
    // The field's flags (`--branch/--sha`), or its name when it has none.
    let flags: Vec<String> = SourceSpec::run_fields()
        .into_iter()
        .find(|field| field.name == name)
        .map(|field| {
            field
                .flags
                .iter()
                .map(|f| format!("--{}", f.long))
                .collect()
        })
        .unwrap_or_default();
    let flag = if flags.is_empty() {
        name.to_string()
    } else {
        flags.join("/")
    };
    DomainError::invalid(format!(
        "{flag} applies to {} sources only",
        spec::either(&owners)
    ))
}

impl Sources {
    /// One of each kind, built from the daemon's config.
    pub fn new(config: &Config) -> Result<Self, String> {
        // Uploads are written in the segments S3 objects are streamed in.
        let s3: <s3::S3Source as SourceKind>::Settings =
            config.section("s3").map_err(|e| e.to_string())?;
        Sources::build(config, s3.stream_segment_bytes)
    }
}

registry! {
    Github => github: github::GithubSource,
    WebScrape => web: web::WebSource,
    S3 => s3: s3::S3Source,
    Filesystem => filesystem: filesystem::FilesystemSource,
}

impl Sources {
    /// Refuses each invocation field the source's kind does not declare
    /// ([`SourceKind::INVOCATION_FIELDS`]), naming the kinds that take it:
    /// one check for every kind, before anything is asked of the source.
    pub fn refuse_undeclared(
        &self,
        spec: &SourceSpec,
        payload: &CreateJobPayload,
    ) -> Result<(), DomainError> {
        let declared = self.declared_fields(spec);
        let given = [
            ("object_key", payload.object_key.is_some()),
            ("custom_id", payload.custom_id.is_some()),
            ("metadata", payload.metadata.is_some()),
            ("ref_identifier", payload.ref_identifier.is_some()),
            ("path", payload.path.is_some()),
            (
                "target_collection_name",
                payload.target_collection_name.is_some(),
            ),
        ];
        let Some((name, _)) = given
            .into_iter()
            .find(|(name, given)| *given && !declared.iter().any(|field| field.name == *name))
        else {
            return Ok(());
        };
        let owners: Vec<String> = self
            .kinds()
            .iter()
            .filter(|kind| kind.invocation_fields.iter().any(|f| f.name == name))
            .map(|kind| format!("{} sources", kind.called))
            .collect();
        Err(DomainError::invalid(format!(
            "{name} is only allowed for {}",
            owners.join(" and ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: serde_json::Value) -> Result<SourceSpec, String> {
        let payload: CreateSourcePayload = serde_json::from_value(body).unwrap();
        SourceSpec::from_payload(&payload).map_err(|e| e.to_string())
    }

    /// Each kind reads its own section of the daemon's config; a section
    /// no kind reads, or a kind's section with a key it does not know,
    /// stops the daemon before it starts, naming it.
    #[test]
    fn each_kind_reads_its_section_and_a_stray_section_is_refused() {
        let config = |text: &str| -> Config { toml::from_str(text).unwrap() };
        let sources = Sources::new(&config("[web]\ndefault_max_depth = 3\n")).unwrap();
        assert_eq!(sources.web.defaults()["max_depth"], 3);
        let stray = Sources::new(&config("[bogus]\nx = 1\n")).err().unwrap();
        assert!(stray.contains("unknown section or key `bogus`"), "{stray}");
        let typo = Sources::new(&config("workerz = 3\n")).err().unwrap();
        assert!(typo.contains("`workerz`"), "{typo}");
        let unknown = Sources::new(&config("[filesystem]\nroots = []\n"))
            .err()
            .unwrap();
        assert!(
            unknown.contains("[filesystem]") && unknown.contains("unknown field `roots`"),
            "{unknown}"
        );
        let checked = Sources::new(&config("[filesystem]\nallowed_roots = [\"docs\"]\n"))
            .err()
            .unwrap();
        assert!(checked.contains("filesystem.allowed_roots"), "{checked}");
    }

    #[test]
    fn the_kind_field_is_parsed_into_the_kinds_own_settings() {
        let s3 = serde_json::json!({"bucket_name": "b", "region": "r",
            "collection_name": "c", "aws_credential_id": 0});
        let spec = parsed(serde_json::json!({"database_name": "db", "s3": s3.clone(),
            "github": null}))
        .unwrap();
        assert_eq!(
            spec.source_type(),
            s3::S3Source::SOURCE_TYPE,
            "a null kind is a kind left out"
        );

        let none = parsed(serde_json::json!({"database_name": "db", "github": null}));
        assert!(
            none.unwrap_err()
                .contains("needs exactly one of `github`, `web_scrape`, `s3` or `filesystem`")
        );
        let several = parsed(serde_json::json!({"database_name": "db", "s3": s3,
            "web_scrape": {"starting_url": "https://example.com/"}}));
        assert!(several.unwrap_err().contains("not several"));
        let unknown = parsed(serde_json::json!({"database_name": "db", "sftp": {}}));
        let unknown = unknown.unwrap_err();
        assert!(
            unknown.contains("unknown field `sftp`, expected one of `github`"),
            "{unknown}"
        );
        assert!(unknown.contains("`database_name`"), "{unknown}");
        let wrong = parsed(serde_json::json!({"database_name": "db",
            "filesystem": {"root": "/srv", "collection_name": 5}}));
        let wrong = wrong.unwrap_err();
        assert!(
            wrong.contains("filesystem.collection_name: invalid type: integer `5`"),
            "{wrong}"
        );
        let extra = parsed(serde_json::json!({"database_name": "db",
            "filesystem": {"root": "/srv", "collection_name": "c", "depth": 1}}));
        assert!(
            extra
                .unwrap_err()
                .contains("filesystem.depth: unknown field `depth`")
        );
    }
}
