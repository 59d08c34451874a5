//! `rlhf`: InstructGPT-style training (SFT → reward model → PPO) and serving, on Burn + LibTorch.
//!
//! The binary (`src/main.rs`) is a thin shell over this library; integration tests use both.

pub mod chat;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod demo;
pub mod device;
pub mod dist;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod json_file;
pub mod metrics;
pub mod model;
pub mod moderation;
pub mod ppo;
pub mod report;
pub mod stages;
pub mod train;
