//! `weft-benches`: benchmark drivers behind `weft bench …`, and peer comparisons.
//!
//! Each driver returns a serializable report whose fields are the figures its issue asks
//! for, with baselines measured in the same run, plus the targets evaluated against them.
//! Drivers never print; the `weft` binary prints.

#![allow(missing_docs)] // report fields are documented in the issue tables and the README

pub mod engine;
