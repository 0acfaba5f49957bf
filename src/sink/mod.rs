//! Sink: where chunks go. `records` knows the chunk-ID and metadata contract;
//! `chroma` writes records to a Chroma server.

pub mod chroma;
pub mod records;
