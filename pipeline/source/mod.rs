//! Reading exports: discovery is in [`crate::storage`]; here files become typed raw batches.

pub mod csv;
pub mod layout;
#[cfg(test)]
pub mod meddling;
pub mod read;
pub mod typing;
