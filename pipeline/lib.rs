//! tally: billing exports on object storage → exact, conformant FOCUS 1.4 tables.
//!
//! The pipeline, stage by stage:
//! [`storage`] discovers export files; [`source`] streams each one into typed raw batches;
//! [`normalize`] runs the format's SQL (`sql/normalize/`) and the FOCUS row rules
//! ([`schema`]) in DataFusion, splitting rows into written, [`quarantine`]d and folded;
//! [`run`] reconciles the money, commits Delta tables ([`table`]) and writes the [`manifest`].

pub mod ai_meters;
pub mod cloud;
pub mod decimal;
pub mod error;
pub mod fault;
pub mod flat_case;
pub mod formats;
pub mod generate;
pub mod hash;
pub mod inputs;
pub mod job;
pub mod lock;
pub mod lookup;
pub mod manifest;
pub mod mapping_plan;
pub mod narrow;
pub mod normalize;
pub mod progress;
pub mod quarantine;
pub mod query;
pub mod resources;
pub mod run;
pub mod schedule;
pub mod schema;
pub mod source;
pub mod stages;
pub mod storage;
pub mod table;
pub mod timestamp;
pub mod udf;
pub mod unnest;
pub mod validate;
