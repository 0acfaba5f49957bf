//! Sink: where chunks go. `records` knows the chunk-ID and metadata contract;
//! `chroma` writes records to a Chroma server, `group_commit` combining
//! upserts that arrive while one is in flight.

pub mod chroma;
pub mod group_commit;
pub mod records;
