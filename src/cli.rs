//! The command line: one struct per subcommand; `///` comments are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::device::DeviceSpec;
use crate::model::precision::Precision;
use crate::train::start::TrainOptions;

/// Train a ChatGPT-style assistant the InstructGPT way — supervised fine-tuning, a reward
/// model from human comparisons, PPO against it — then chat with it behind a moderation
/// classifier. Every stage reads a TOML config and JSONL data and writes a Hugging Face model
/// directory that the next stage reads.
#[derive(Debug, Parser)]
#[command(name = "rlhf", version, max_term_width = 100)]
pub struct Cli {
    /// Where tensors live: cpu, cuda or cuda:N (LibTorch).
    #[arg(long, global = true, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceSpec,

    /// CPU threads for LibTorch (default: LibTorch's choice, usually all cores).
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,

    /// Matrix products and attention in bf16, the rest in f32 (as torch.autocast); for
    /// training commands the same as --set train.precision=bf16 [default: f32].
    #[arg(long, global = true, value_name = "PRECISION")]
    pub precision: Option<Precision>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stage 1: supervised fine-tuning on demonstrations (prompt → ideal answer).
    #[command(subcommand)]
    Sft(SftCommand),
    /// Stage 2: a reward model trained on human comparisons (chosen vs rejected).
    #[command(subcommand)]
    Reward(RewardCommand),
    /// Stage 3: PPO against the reward model, held near the SFT policy by a KL penalty.
    #[command(subcommand)]
    Ppo(PpoCommand),
    /// DPO (or IPO, hinge, robust): the policy trained on comparisons, no reward model.
    #[command(subcommand)]
    Dpo(DpoCommand),
    /// KTO: the policy trained on single answers marked good or bad.
    #[command(subcommand)]
    Kto(KtoCommand),
    /// Moderation classifier (sexual, hate, violence, harassment, self-harm and sub-categories).
    #[command(subcommand)]
    Moderate(ModerateCommand),
    /// Interactive chat that keeps the conversation's context, optionally moderated.
    Chat(ChatArgs),
    /// Batch completions for a JSONL file of prompts, written as JSONL.
    Generate(GenerateArgs),
    /// Tokenizers: train a byte-level BPE with the chat special tokens.
    #[command(subcommand)]
    Tokenizer(TokenizerCommand),
    /// Model directories: create one from a preset, or inspect one.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Charts of training runs' metrics.jsonl as SVG and PNG, several runs overlaid.
    Plot(PlotArgs),
    /// One self-contained HTML page: charts, final metrics, lineage and samples of runs.
    Report(ReportArgs),
    /// The demo's task (scripts/demo.sh): prompts, a gold judge, rankings, the result table.
    #[command(subcommand)]
    Demo(DemoCommand),
}

impl Command {
    /// The config and overrides of a training command (`sft|reward|ppo|moderate train`).
    pub fn train_args(&mut self) -> Option<&mut TrainArgs> {
        match self {
            Self::Sft(SftCommand::Train(args))
            | Self::Reward(RewardCommand::Train(args))
            | Self::Ppo(PpoCommand::Train(args))
            | Self::Dpo(DpoCommand::Train(args))
            | Self::Kto(KtoCommand::Train(args))
            | Self::Moderate(ModerateCommand::Train(args)) => Some(args),
            _ => None,
        }
    }
}

/// A stage's training run: config file plus overrides.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The stage's TOML config (see configs/).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Override a config field, e.g. --set train.lr=1e-4 (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Continue from the output directory's state/ instead of starting over.
    #[arg(long)]
    pub resume: bool,
    /// With --resume: continue although the config changes what a step computes (lr, batch
    /// size, …); the lineage records the changes.
    #[arg(long, requires = "resume")]
    pub accept_changes: bool,
}

impl TrainArgs {
    /// The domain options these flags stand for.
    pub fn options(&self) -> TrainOptions {
        TrainOptions {
            config: self.config.clone(),
            overrides: self.overrides.clone(),
            resume: self.resume,
            accept_changes: self.accept_changes,
        }
    }
}

/// A model evaluated on a data file.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model directory.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// JSONL data file.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SftCommand {
    /// Fine-tune a base model on demonstrations.
    Train(TrainArgs),
    /// Loss and perplexity of a model on a data file.
    Eval(EvalArgs),
}

#[derive(Debug, Subcommand)]
pub enum RewardCommand {
    /// Train a scalar reward model on comparisons.
    Train(TrainArgs),
    /// Pairwise accuracy and mean margin on comparisons.
    Eval(EvalArgs),
    /// One reward per row, written as JSONL.
    Score(ScoreArgs),
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Model directory.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// JSONL rows: `prompt` + `response` (or `completion`), `messages` ending with the
    /// assistant's turn, or comparison rows (every response is scored).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Where to write JSONL (default: stdout).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PpoCommand {
    /// Optimise the policy against the reward model with PPO.
    Train(TrainArgs),
    /// Mean reward and KL to the reference on held-out prompts.
    Eval(PpoEvalArgs),
}

#[derive(Debug, Args)]
pub struct PpoEvalArgs {
    /// Policy directory (a PPO or SFT checkpoint).
    #[arg(long, value_name = "DIR")]
    pub policy: PathBuf,
    /// Reward model directory.
    #[arg(long, value_name = "DIR")]
    pub reward: PathBuf,
    /// JSONL prompts (`prompt` or `messages` rows).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Reference policy for the KL (default: the SFT model a PPO checkpoint started from;
    /// the policy itself otherwise).
    #[arg(long, value_name = "DIR")]
    pub reference: Option<PathBuf>,
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_new_tokens: usize,
    /// Sampling temperature (responses are sampled, so the KL estimate is unbiased).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Prompts per generation batch.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub batch_size: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write every (prompt, response, reward, KL) as JSONL to FILE.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum DpoCommand {
    /// Train the policy on comparisons (configs/dpo.toml).
    Train(TrainArgs),
    /// Implicit-reward accuracy and margin of a policy against its reference on comparisons.
    Eval(DpoEvalArgs),
}

#[derive(Debug, Args)]
pub struct DpoEvalArgs {
    /// The policy (a DPO or KTO checkpoint, or any causal LM).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// The frozen reference (default: the one the checkpoint's rlhf.json names).
    #[arg(long, value_name = "DIR")]
    pub reference: Option<PathBuf>,
    /// JSONL comparisons, in any form `rlhf dpo train` reads.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// β of the implicit reward β·(log π − log π_ref).
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// The loss reported: sigmoid, ipo, hinge or robust.
    #[arg(long, default_value = "sigmoid", value_parser = ["sigmoid", "ipo", "hinge", "robust"])]
    pub loss_type: String,
    /// ε of the robust loss.
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// Chat template: chatml, hh or model [default: the model's own, else chatml].
    #[arg(long)]
    pub template: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KtoCommand {
    /// Train the policy on answers marked good or bad (configs/kto.toml).
    Train(TrainArgs),
}

#[derive(Debug, Subcommand)]
pub enum ModerateCommand {
    /// Train the multi-label moderation classifier.
    Train(TrainArgs),
    /// Per-category AUPRC, precision and recall on labelled data.
    Eval(EvalArgs),
    /// Moderate texts; prints OpenAI-shaped JSON lines.
    Score(ModerateScoreArgs),
}

#[derive(Debug, Args)]
pub struct ModerateScoreArgs {
    /// Moderation model directory.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Texts to moderate.
    pub text: Vec<String>,
    /// JSONL file of texts instead.
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Model directory (an SFT or PPO policy, or any causal LM with a chat template).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Moderation classifier (`rlhf moderate train`) that screens messages and answers.
    #[arg(long, value_name = "DIR")]
    pub moderation: Option<PathBuf>,
    /// Reward model (`rlhf reward train`) that scores each answer; enables /best N.
    #[arg(long, value_name = "DIR")]
    pub reward: Option<PathBuf>,
    /// System prompt.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Answer this message and exit (for scripts; piped stdin works too, a turn a line).
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// One JSON object per answer, with token usage (input lines are turns, as when piped).
    #[arg(long)]
    pub json: bool,
    /// Append the conversation (SFT rows) and moderated texts (moderation rows) to DIR.
    #[arg(long, value_name = "DIR")]
    pub log: Option<PathBuf>,
    /// Where /compare appends rankings, as reward-model comparison rows.
    #[arg(long, value_name = "FILE")]
    pub prefs: Option<PathBuf>,
    /// Continue a conversation saved with /save (a {"messages": [...]} JSONL row).
    #[arg(long, value_name = "FILE")]
    pub load: Option<PathBuf>,
    /// Chat template: chatml, hh or model [default: model, the tokenizer's own].
    #[arg(long, value_name = "NAME")]
    pub template: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Model directory.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// JSONL prompts ({"prompt"} or {"messages"} rows).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Where to write JSONL (default: stdout).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Chat template: chatml, hh, model (the tokenizer's own) or raw (the prompt as it is)
    /// [default: model if the tokenizer has one, else chatml].
    #[arg(long, value_name = "NAME")]
    pub template: Option<String>,
    /// Prompts decoded together.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub batch_size: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Decoding options; unset ones come from the model's generation_config.json. A temperature
/// above 0, a top-p or a top-k means sampling; --greedy or --temperature 0 means greedy.
#[derive(Debug, Args)]
pub struct SamplingArgs {
    /// Tokens to generate at most per prompt [default: generation_config.json's, else 128].
    #[arg(long, value_name = "N")]
    pub max_new_tokens: Option<usize>,
    /// Sample at the model's temperature (generation_config.json's, else 1); a temperature,
    /// top-p or top-k already means sampling.
    #[arg(long, conflicts_with = "greedy")]
    pub sample: bool,
    /// Greedy decoding, even where generation_config.json says to sample.
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
    pub greedy: bool,
    /// Sample at this softmax temperature (0: greedy decoding).
    #[arg(long, value_name = "T")]
    pub temperature: Option<f64>,
    /// Sample among the K most likely tokens (0: all).
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Sample among the most likely tokens whose probability reaches P.
    #[arg(long, value_name = "P")]
    pub top_p: Option<f64>,
    /// Penalty (> 1) on tokens already in the prompt or output.
    #[arg(long, value_name = "X")]
    pub repetition_penalty: Option<f64>,
    /// Random seed: the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop a completion where this string appears (repeatable; the string is cut).
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Do not stop at end-of-sequence tokens (for benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenizerCommand {
    /// Train a byte-level BPE on the text of JSONL files.
    Train(TokenizerTrainArgs),
}

#[derive(Debug, Args)]
pub struct TokenizerTrainArgs {
    /// JSONL files in any of the data forms.
    #[arg(long, value_name = "FILE", num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// Vocabulary size, special tokens included.
    #[arg(long, value_name = "N")]
    pub vocab_size: usize,
    /// Output directory (tokenizer.json + tokenizer_config.json).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Create a randomly initialised model directory from a preset and a tokenizer.
    Init(ModelInitArgs),
    /// Load a model directory, check it, and describe it.
    Inspect(ModelInspectArgs),
    /// Convert a GGUF file (llama.cpp, ollama, LM Studio) into a model directory.
    Import(ModelImportArgs),
    /// Write a GPT-2- or Llama-family model directory as one GGUF file for llama.cpp and ollama.
    Export(ModelExportArgs),
}

#[derive(Debug, Args)]
pub struct ModelImportArgs {
    /// The GGUF file (architectures gpt2, llama and qwen2; F32, F16, BF16, Q4_0, Q4_1, Q5_0,
    /// Q5_1, Q8_0, Q4_K, Q5_K and Q6_K tensors).
    #[arg(long, value_name = "FILE")]
    pub gguf: PathBuf,
    /// Output model directory (must not exist, unless --force).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ModelExportArgs {
    /// A causal LM directory of the GPT-2 or Llama family (gpt2, llama, mistral, qwen2).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// The GGUF file to write (must not exist, unless --force).
    #[arg(long, value_name = "FILE")]
    pub gguf: PathBuf,
    /// How the matrices are stored; norms, biases and learned positions stay f32. q4_k is
    /// llama.cpp's Q4_K_M mix (Q4_K, Q6_K for the output and some value and down projections).
    #[arg(long = "type", value_enum, default_value = "f16")]
    pub kind: crate::gguf::ExportType,
    /// Replace --gguf if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ModelInitArgs {
    /// Built-in preset (tiny, small, gpt2-124m) or a preset TOML file.
    #[arg(long, value_name = "NAME|FILE")]
    pub preset: String,
    /// Tokenizer: a directory with tokenizer.json, or the file itself.
    #[arg(long, value_name = "DIR")]
    pub tokenizer: PathBuf,
    /// Output model directory (must not exist, unless --force).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Override a preset key, e.g. --set n_layer=4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Seed for the random initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ModelInspectArgs {
    /// Model directory.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run directories (what sft, reward, ppo or moderate train writes); their curves share
    /// each chart, labelled with the directory names.
    #[arg(value_name = "RUN_DIR", required = true)]
    pub runs: Vec<PathBuf>,
    /// Directory for METRIC.svg and METRIC.png, one pair per metric (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run directories (what sft, reward, ppo or moderate train writes).
    #[arg(value_name = "RUN_DIR", required = true)]
    pub runs: Vec<PathBuf>,
    /// The HTML file to write (no scripts, nothing fetched: it opens offline).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Write the task's demonstrations, train and held-out prompts, prompts to rank and to
    /// evaluate.
    Data(DemoDataArgs),
    /// Rank sampled answers (`rlhf generate` output) with the gold judge: comparison rows.
    Rank(DemoRankArgs),
    /// Score answers (`rlhf generate` or `rlhf ppo eval --out` rows) with the gold judge.
    Judge(DemoJudgeArgs),
    /// The result table of a demo run directory, printed and written to DIR/summary.md.
    Summary(DemoSummaryArgs),
}

#[derive(Debug, Args)]
pub struct DemoDataArgs {
    /// Output directory (must not exist, unless --force).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Chooses the held-out facts and the order of the rows.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fraction of the facts whose questions are held out.
    #[arg(long, default_value_t = 0.2, value_name = "F")]
    pub held_out: f64,
    /// Only the first N train prompts get a demonstration [default: all of them].
    #[arg(long, value_name = "N")]
    pub demonstrations: Option<usize>,
    /// Answers sampled per prompt for the rankings (each prompt is written this many times).
    #[arg(long, default_value_t = 8, value_name = "K")]
    pub samples: usize,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct DemoRankArgs {
    /// `rlhf generate` output: {"prompt", "completion"} rows, several per prompt.
    #[arg(long, value_name = "FILE")]
    pub samples: PathBuf,
    /// Where to write {"prompt", "responses"} rows, best first.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct DemoJudgeArgs {
    /// Rows with "prompt" and "completion" or "response".
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DemoSummaryArgs {
    /// The demo's run directory (runs/demo).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}
