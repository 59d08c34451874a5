//! Pictures of training runs: charts of `metrics.jsonl` (`rlhf plot`) and one self-contained
//! HTML page per set of runs (`rlhf report`).
//!
//! Reads what the stages write (metrics, lineage, samples) and nothing imports it back.

pub mod chart;
pub mod html;
mod raster;
pub mod run;
