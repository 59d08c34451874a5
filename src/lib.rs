//! `rlhf`: InstructGPT-style training (SFT → reward model → PPO) and serving, on Burn + LibTorch.
//!
//! The house, top to bottom (a folder imports only from below it): `commands/` (one file per
//! subcommand family: options in, a stage or service called, results printed), `chat/` and
//! `serve/` (the OpenAI-compatible server);
//! the method folders `sft/`, `reward/`, `ppo/`, `dpo/` (DPO and KTO), `grpo/` (GRPO and RLOO), `moderation/` (data, loss and metrics of
//! one method each); `train/` (the loop, the optimizer step, start and resume), `generate/`,
//! `gguf/`, `report/`, `dist/`; `model/` (families, heads, the one loader `model/auto.rs`);
//! `data/` and `config/`; and the small files at the root (`error.rs`, `checkpoint.rs`, …).
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
pub mod dpo;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod grpo;
pub mod json_file;
pub mod metrics;
pub mod model;
pub mod moderation;
pub mod ppo;
pub mod report;
pub mod reward;
pub mod serve;
pub mod sft;
pub mod toml_file;
pub mod train;
