//! End-to-end tests: one binary (linking is the slow part of a debug build), one module per concern.

mod azure;
mod common;
mod conformance;
mod e2e;
mod gcp;
mod idempotence;
mod incremental;
mod s3;
mod schedule;
mod spec_examples;
mod sql_cases;
mod stage_cases;
mod stages;
mod strict;
