//! The `registry!` macro: from one line per kind it writes everything that
//! tells kinds apart — the [`SourceSpec`](super::SourceSpec) enum (a
//! payload's kind field parsed into the kind's own settings type), the
//! [`Sources`](super::Sources) registry holding one of each kind, and the
//! one `match` per operation that hands a spec to its kind.
//!
//! Why a macro rather than `dyn` trait objects: each kind's settings are a
//! different type, so a trait object would take them as the enum anyway and
//! re-check the variant in every method. Generated matches give each kind
//! its own typed config, keep futures `Send` without boxing, and make a new
//! kind one line in `sources/mod.rs`'s `registry!` call.

/// `registry! { Variant => field: path::KindType, … }`: see the module doc.
/// The order of the lines is the order the kinds are listed in everywhere:
/// `GET /api/v1/source-types`, the OpenAPI document's `SourceType`, refusals
/// and `run --help`.
macro_rules! registry {
    ($($variant:ident => $field:ident : $kind:ty),+ $(,)?) => {
        /// A source's kind and its kind-specific settings: the payload's
        /// kind field, parsed once at the edge ([`SourceSpec::from_payload`]).
        /// Everything past this point matches on the enum.
        #[derive(Debug, Clone, PartialEq)]
        pub enum SourceSpec {
            $($variant(<$kind as SourceKind>::Config),)+
        }

        impl SourceSpec {
            /// The one kind `payload` names, with its settings parsed, or
            /// why it names none or several, or an unknown field.
            pub fn from_payload(payload: &CreateSourcePayload) -> Result<Self, DomainError> {
                let mut given = Vec::new();
                for (field, value) in &payload.kind.0 {
                    let field = field.as_str();
                    $(
                        if field == <$kind as SourceKind>::SOURCE_TYPE.as_str() {
                            // `null` is a kind left out, as it was when
                            // each kind was an optional field.
                            if *value != OrderedJson::Null {
                                given.push(SourceSpec::$variant(spec::settings_of(field, value)?));
                            }
                            continue;
                        }
                    )+
                    return Err(spec::unknown_field(field, &Self::kind_fields()));
                }
                let mut given = given.into_iter();
                match (given.next(), given.next()) {
                    (Some(spec), None) => Ok(spec),
                    (None, _) => Err(DomainError::invalid(format!(
                        "a source needs exactly one of {}",
                        spec::one_of(&Self::kind_fields())
                    ))),
                    (Some(_), Some(_)) => Err(DomainError::invalid(format!(
                        "a source takes exactly one of {}, not several",
                        spec::one_of(&Self::kind_fields())
                    ))),
                }
            }

            /// The payload's fields that name a kind: the kinds'
            /// `source_type`s, in the registry's order (messages, the
            /// OpenAPI document's `SourceType` and `run --help` list them so).
            pub fn kind_fields() -> Vec<&'static str> {
                vec![$({
                    static NAME: SourceType = <$kind as SourceKind>::SOURCE_TYPE;
                    NAME.as_str()
                }),+]
            }

            /// Every kind's invocation fields, in the registry's order (a
            /// field several kinds take comes once per kind).
            pub fn invocation_fields() -> Vec<&'static InvocationField> {
                let mut fields = Vec::new();
                $(fields.extend(<$kind as SourceKind>::INVOCATION_FIELDS);)+
                fields
            }

            /// Every kind's run fields, with what refusals call the kind,
            /// in the registry's order.
            pub fn run_fields_by_kind() -> Vec<(&'static str, &'static [RunField])> {
                vec![$((<$kind as SourceKind>::CALLED, <$kind as SourceKind>::RUN_FIELDS)),+]
            }

            /// Every kind's run fields, in the registry's order (a field
            /// several kinds take comes once per kind).
            pub fn run_fields() -> Vec<&'static RunField> {
                Self::run_fields_by_kind()
                    .into_iter()
                    .flat_map(|(_, fields)| fields)
                    .collect()
            }

            /// Every kind's `source_type`, in the registry's order.
            pub fn source_types() -> Vec<SourceType> {
                vec![$(<$kind as SourceKind>::SOURCE_TYPE),+]
            }

            /// The `source_type` a caller names (a filter), if it is a
            /// kind's or [`SourceType::UPLOAD`]: what input is checked
            /// against, where [`SourceType::parse`] checks only the shape.
            pub fn source_type_named(name: &str) -> Option<SourceType> {
                Self::source_types()
                    .into_iter()
                    .chain([SourceType::UPLOAD])
                    .find(|kind| kind.as_str() == name)
            }

            pub fn source_type(&self) -> SourceType {
                match self {
                    $(SourceSpec::$variant(_) => <$kind as SourceKind>::SOURCE_TYPE,)+
                }
            }

            /// Puts this spec into the source's wire form (`GET /sources/{id}`).
            pub fn write_into(self, source: &mut Source) {
                let kind = self.source_type();
                let field = kind.as_str();
                let settings = match self {
                    $(SourceSpec::$variant(config) => KindSettings::of(field, &config),)+
                };
                // A settings type serializes to JSON (plain data); were it
                // ever not to, the field would be left out, not a panic.
                if let Ok(settings) = settings {
                    source.kind = settings;
                }
            }

            /// `self` with every optional setting at its effective value.
            pub fn effective(self) -> SourceSpec {
                match self {
                    $(SourceSpec::$variant(config) => {
                        SourceSpec::$variant(<$kind as SourceKind>::effective(config))
                    })+
                }
            }
        }

        /// The registry: one of each source kind, with its clients and
        /// settings. Built once per process and shared (`Arc`) by the API,
        /// the workers, the scheduler and auto-sync.
        pub struct Sources {
            $(pub $field: $kind,)+
            /// Not a kind: the outbound rules every source's `webhook` passes.
            pub webhooks: $crate::domain::webhook::WebhookRules,
            /// Not a kind: where files sent to `POST /api/v1/add-file` wait.
            pub uploads: $crate::domain::upload::UploadStore,
        }

        impl Sources {
            /// Builds every kind from its section of `config` (named for
            /// its field); a section no kind reads is refused. The upload
            /// store streams in segments of `upload_segment_bytes`.
            fn build(config: &Config, upload_segment_bytes: u64) -> Result<Self, String> {
                let sections = [$(stringify!($field)),+];
                if let Some(unknown) = config.sections.keys().find(|name| !sections.contains(&name.as_str())) {
                    return Err(format!(
                        "config: unknown section or key `{unknown}` (sections of source kinds: {})",
                        sections.join(", ")
                    ));
                }
                Ok(Sources {
                    $($field: {
                        let settings = config
                            .section(stringify!($field))
                            .map_err(|e| e.to_string())?;
                        <$kind as SourceKind>::build(config, settings)?
                    },)+
                    webhooks: $crate::domain::webhook::WebhookRules::new(&config.webhooks)?,
                    uploads: $crate::domain::upload::UploadStore::new(config, upload_segment_bytes),
                })
            }

            /// Every kind, as it describes itself.
            pub fn kinds(&self) -> Vec<KindDescription> {
                vec![$(describe(&self.$field),)+]
            }

            /// The wire settings type of every kind, by the payload field
            /// naming it, with the schemas it refers to: the OpenAPI
            /// document's `CreateSourcePayload` and `Source` properties.
            pub fn settings_schemas() -> Vec<SettingsSchema> {
                vec![$(settings_schema::<$kind>(),)+]
            }

            /// Every secret the sources' clients hold, for scrubbing.
            pub fn secret_values(&self) -> Vec<Secret> {
                let mut secrets = Vec::new();
                $(secrets.extend(<$kind as SourceKind>::secret_values(&self.$field));)+
                secrets.extend(self.webhooks.secret().cloned());
                secrets
            }

            pub fn validate(&self, spec: &SourceSpec) -> Result<(), DomainError> {
                match spec {
                    $(SourceSpec::$variant(config) => {
                        <$kind as SourceKind>::validate(&self.$field, config)
                    })+
                }
            }

            pub async fn authorize(
                &self,
                database: &str,
                spec: &SourceSpec,
            ) -> Result<(), DomainError> {
                match spec {
                    $(SourceSpec::$variant(config) => {
                        <$kind as SourceKind>::authorize(&self.$field, database, config).await
                    })+
                }
            }

            pub fn check_schedule(
                &self,
                spec: &SourceSpec,
                schedule: &SourceSchedule,
            ) -> Result<(), DomainError> {
                match spec {
                    $(SourceSpec::$variant(config) => {
                        <$kind as SourceKind>::check_schedule(&self.$field, config, schedule)
                    })+
                }
            }

            pub async fn prepare(
                &self,
                record: &SourceRecord,
                spec: &SourceSpec,
                payload: &mut CreateJobPayload,
            ) -> Result<(), DomainError> {
                match spec {
                    $(SourceSpec::$variant(config) => {
                        <$kind as SourceKind>::prepare(&self.$field, record, config, payload).await
                    })+
                }
            }

            /// The invocation fields `spec`'s kind declares.
            fn declared_fields(&self, spec: &SourceSpec) -> &'static [InvocationField] {
                match spec {
                    $(SourceSpec::$variant(_) => <$kind as SourceKind>::INVOCATION_FIELDS,)+
                }
            }

            pub fn plan(
                &self,
                record: &SourceRecord,
                spec: &SourceSpec,
                payload: &CreateJobPayload,
            ) -> Result<Planned, DomainError> {
                match spec {
                    $(SourceSpec::$variant(config) => {
                        <$kind as SourceKind>::plan(&self.$field, record, config, payload)
                    })+
                }
            }

            pub async fn whole_source(
                &self,
                record: &SourceRecord,
                spec: &SourceSpec,
                target: RunTarget,
            ) -> Result<WholeSource, DomainError> {
                match spec {
                    $(SourceSpec::$variant(config) => {
                        let declared = <$kind as SourceKind>::RUN_FIELDS;
                        if let Some(name) = target
                            .fields
                            .keys()
                            .find(|name| !declared.iter().any(|field| field.name == name.as_str()))
                        {
                            return Err(run_field_refused(name));
                        }
                        <$kind as SourceKind>::whole_source(&self.$field, record, config, target)
                            .await
                    })+
                }
            }

            pub fn one_job_per_document(&self, spec: &SourceSpec) -> bool {
                match spec {
                    $(SourceSpec::$variant(_) => {
                        <$kind as SourceKind>::one_job_per_document(&self.$field)
                    })+
                }
            }

            pub async fn run_job(
                &self,
                job: &JobRun<'_>,
                spec: &SourceSpec,
            ) -> Result<(), JobError> {
                match spec {
                    $(SourceSpec::$variant(config) => {
                        <$kind as SourceKind>::run_job(&self.$field, job, config).await
                    })+
                }
            }

            /// Starts the triggers that enqueue on their own (S3 event
            /// notifications, directory watches): each kind's, if it has any.
            pub fn start_auto_sync(
                &self,
                queue: &Arc<dyn Queue>,
                wake: &Arc<Notify>,
                shutdown: &CancellationToken,
                reconcile: Arc<dyn Reconcile>,
            ) {
                $(<$kind as SourceKind>::start_auto_sync(
                    &self.$field,
                    queue,
                    wake,
                    shutdown,
                    Arc::clone(&reconcile),
                );)+
            }
        }
    };
}

pub(super) use registry;
