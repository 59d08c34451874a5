//! The command line: one struct per subcommand; `///` comments are the `--help` text.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::device::DeviceSpec;
use crate::generate::{Choice, SamplingConfig};
use crate::model::precision::Precision;
use crate::train::start::TrainOptions;

/// The heading of the options every command takes, shown apart from the command's own.
const GLOBAL: &str = "Global options";

/// `model init --preset`'s help: the built-in presets by name, from the list the binary holds.
fn preset_help() -> String {
    let names: Vec<&str> = crate::model::preset::BUILT_IN.iter().map(|(name, _)| *name).collect();
    format!("Built-in preset ({}; see configs/models/) or a preset TOML file", names.join(", "))
}

/// Train a ChatGPT-style assistant the InstructGPT way — supervised fine-tuning, a reward
/// model from human comparisons, PPO against it — then chat with it behind a moderation
/// classifier. Every stage reads a TOML config and JSONL data and writes a Hugging Face model
/// directory that the next stage reads.
#[derive(Debug, Parser)]
#[command(
    name = "rlhf",
    version,
    max_term_width = 100,
    after_help = "Example (every stage on the example data, a few minutes on a laptop):\n  scripts/demo.sh --quick\n\n`rlhf COMMAND --help` shows a command's options and an example; docs/cli.md has them all."
)]
pub struct Cli {
    /// Where tensors live: cpu, cuda or cuda:N (LibTorch).
    #[arg(
        long,
        global = true,
        default_value = "cpu",
        value_name = "DEVICE",
        help_heading = GLOBAL
    )]
    pub device: DeviceSpec,

    /// CPU threads for LibTorch (default: LibTorch's choice, usually all cores).
    #[arg(long, global = true, value_name = "N", help_heading = GLOBAL)]
    pub threads: Option<usize>,

    /// bf16: matrix products and attention in bf16, the rest in f32 (as torch.autocast); for
    /// training commands the same as --set train.precision=bf16. int8: decoding (generate,
    /// chat, serve) with int8 weights [default: f32].
    #[arg(long, global = true, value_name = "PRECISION", help_heading = GLOBAL)]
    pub precision: Option<Precision>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stage 1: supervised fine-tuning on demonstrations (prompt → ideal answer).
    #[command(subcommand, after_help = example("rlhf sft train --config configs/sft.toml"))]
    Sft(SftCommand),
    /// Stage 2: a reward model trained on human comparisons (chosen vs rejected).
    #[command(subcommand, after_help = example("rlhf reward train --config configs/reward.toml"))]
    Reward(RewardCommand),
    /// Stage 3: PPO against the reward model, held near the SFT policy by a KL penalty.
    #[command(subcommand, after_help = example("rlhf ppo train --config configs/ppo.toml"))]
    Ppo(PpoCommand),
    /// DPO (or IPO, hinge, robust): the policy trained on comparisons, no reward model.
    #[command(subcommand, after_help = example("rlhf dpo train --config configs/dpo.toml"))]
    Dpo(DpoCommand),
    /// KTO: the policy trained on single answers marked good or bad.
    #[command(subcommand, after_help = example("rlhf kto train --config configs/kto.toml"))]
    Kto(KtoCommand),
    /// GRPO or RLOO: online RL from group-relative rewards, no value model; reward models and
    /// reward programs.
    #[command(subcommand, after_help = example("rlhf grpo train --config configs/grpo.toml"))]
    Grpo(GrpoCommand),
    /// Moderation classifier (sexual, hate, violence, harassment, self-harm and sub-categories).
    #[command(
        subcommand,
        after_help = example("rlhf moderate train --config configs/moderate.toml")
    )]
    Moderate(ModerateCommand),
    /// Interactive chat that keeps the conversation's context, optionally moderated.
    #[command(after_help = example(
        "rlhf chat --model runs/ppo --moderation runs/moderate --system \"Answer briefly.\""
    ))]
    Chat(ChatArgs),
    /// The model (and moderation classifier) behind an OpenAI-compatible HTTP API.
    #[command(after_help = example(
        "rlhf serve --model runs/ppo --moderation runs/moderate --port 8000"
    ))]
    Serve(ServeArgs),
    /// Completions of prompts (a JSONL file, stdin or --prompt), written as JSONL.
    #[command(after_help = example(
        "rlhf generate --model runs/sft --prompt \"What is the capital of France?\" --temperature 0.7"
    ))]
    Generate(GenerateArgs),
    /// Tokenizers: train a byte-level BPE with the chat special tokens.
    #[command(subcommand, after_help = example(TOKENIZER_EXAMPLE))]
    Tokenizer(TokenizerCommand),
    /// Model directories: create one from a preset, inspect one, import or export GGUF.
    #[command(subcommand, after_help = example(INIT_EXAMPLE))]
    Model(ModelCommand),
    /// Charts of training runs' metrics.jsonl as SVG and PNG, several runs overlaid.
    #[command(after_help = example("rlhf plot runs/sft runs/sft-b --out runs/plots"))]
    Plot(PlotArgs),
    /// One self-contained HTML page: charts, final metrics, lineage and samples of runs.
    #[command(after_help = example("rlhf report runs/sft runs/reward runs/ppo --out runs/report.html"))]
    Report(ReportArgs),
    /// The demo's task (scripts/demo.sh): prompts, a gold judge, rankings, the result table.
    #[command(subcommand, after_help = example("rlhf demo summary --dir runs/demo"))]
    Demo(DemoCommand),
}

/// An `after_help` that shows one command line, as ripgrep's and uv's help do.
fn example(command: &str) -> String {
    format!("Example:\n  {command}")
}

const TOKENIZER_EXAMPLE: &str =
    "rlhf tokenizer train --data data/demo/sft.jsonl --vocab-size 1024 --out runs/tokenizer";
const INIT_EXAMPLE: &str =
    "rlhf model init --preset llama-tiny --tokenizer runs/tokenizer --out runs/base";

impl Command {
    /// The config and overrides of a training command (`sft|reward|ppo|moderate train`).
    pub fn train_args(&mut self) -> Option<&mut TrainArgs> {
        match self {
            Self::Sft(SftCommand::Train(args))
            | Self::Reward(RewardCommand::Train(args))
            | Self::Ppo(PpoCommand::Train(args))
            | Self::Dpo(DpoCommand::Train(args))
            | Self::Kto(KtoCommand::Train(args))
            | Self::Grpo(GrpoCommand::Train(args))
            | Self::Moderate(ModerateCommand::Train(args)) => Some(args),
            _ => None,
        }
    }
}

/// A stage's training run: config file plus overrides.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The stage's TOML config (see configs/; --print-config shows every key).
    #[arg(long, value_name = "FILE", required_unless_present = "print_config")]
    pub config: Option<PathBuf>,
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
    /// Replace the output directory if it exists (the same as --set output.overwrite=true).
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Print the config as TOML — every key, with its default where --config and --set say
    /// nothing — and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl TrainArgs {
    /// The domain options these flags stand for (`--force` is `output.overwrite=true`).
    pub fn options(&self) -> TrainOptions {
        let mut overrides = self.overrides.clone();
        if self.force {
            overrides.push("output.overwrite=true".into());
        }
        TrainOptions {
            config: self.config.clone().unwrap_or_default(), // clap: given unless --print-config
            overrides,
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
    #[command(after_help = example(
        "rlhf sft train --config configs/sft.toml --set train.lr=1e-3 --set output.dir=runs/sft-b"
    ))]
    Train(TrainArgs),
    /// Loss and perplexity of a model on a data file.
    #[command(after_help = example("rlhf sft eval --model runs/sft --data data/demo/sft.jsonl"))]
    Eval(EvalArgs),
}

#[derive(Debug, Subcommand)]
pub enum RewardCommand {
    /// Train a scalar reward model on comparisons.
    #[command(after_help = example("rlhf reward train --config configs/reward.toml"))]
    Train(TrainArgs),
    /// Pairwise accuracy and mean margin on comparisons.
    #[command(after_help = example(
        "rlhf reward eval --model runs/reward --data data/demo/prefs.jsonl --json"
    ))]
    Eval(RewardEvalArgs),
    /// One reward per row, written as JSONL.
    #[command(after_help = example(
        "rlhf reward score --model runs/reward --data answers.jsonl --out scored.jsonl"
    ))]
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
    #[command(flatten)]
    pub length: RewardLengthArgs,
}

#[derive(Debug, Args)]
pub struct RewardEvalArgs {
    #[command(flatten)]
    pub eval: EvalArgs,
    #[command(flatten)]
    pub length: RewardLengthArgs,
}

/// How much of each transcript a reward model (or a DPO policy's implicit reward) reads.
#[derive(Debug, Args)]
pub struct RewardLengthArgs {
    /// Tokens of prompt + response to read; a longer transcript loses the start of its
    /// prompt [default: the `data.max_len` the model was trained at, from its rlhf.json;
    /// without one, its context window]. 0: the whole context window.
    #[arg(long, value_name = "N")]
    pub max_len: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum PpoCommand {
    /// Optimise the policy against the reward model with PPO.
    #[command(after_help = example("rlhf ppo train --config configs/ppo.toml --set train.max_steps=50"))]
    Train(TrainArgs),
    /// Mean reward and KL to the reference on held-out prompts.
    #[command(after_help = example(
        "rlhf ppo eval --policy runs/ppo --reward runs/reward --data data/demo/prompts.jsonl --out answers.jsonl"
    ))]
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
    /// Tokens to generate at most per response.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_new_tokens: usize,
    /// Sampling temperature (responses are sampled, so the KL estimate is unbiased).
    #[arg(long, default_value_t = 1.0, value_name = "T")]
    pub temperature: f64,
    /// Random seed of the sampling: the same seed gives the same responses.
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
    #[command(after_help = example("rlhf dpo train --config configs/dpo.toml --set output.dir=runs/dpo-b"))]
    Train(TrainArgs),
    /// Implicit-reward accuracy and margin of a policy against its reference on comparisons.
    #[command(after_help = example("rlhf dpo eval --model runs/dpo --data data/demo/prefs.jsonl --json"))]
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
    #[command(flatten)]
    pub length: RewardLengthArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KtoCommand {
    /// Train the policy on answers marked good or bad (configs/kto.toml).
    #[command(after_help = example("rlhf kto train --config configs/kto.toml"))]
    Train(TrainArgs),
}

#[derive(Debug, Subcommand)]
pub enum GrpoCommand {
    /// Optimise the policy with GRPO or RLOO against reward models and programs.
    #[command(after_help = example("rlhf grpo train --config configs/grpo.toml --set grpo.advantage=rloo"))]
    Train(TrainArgs),
    /// Mean reward (each function's and their weighted sum) and KL on held-out prompts.
    #[command(after_help = example(
        "rlhf grpo eval --policy runs/grpo --data data/demo/heldout.jsonl --out answers.jsonl"
    ))]
    Eval(GrpoEvalArgs),
}

#[derive(Debug, Args)]
pub struct GrpoEvalArgs {
    /// Policy directory (a GRPO, PPO or SFT checkpoint).
    #[arg(long, value_name = "DIR")]
    pub policy: PathBuf,
    /// JSONL prompts (`prompt` or `messages` rows; other fields reach reward programs).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// A GRPO config whose `[[rewards]]` score the answers (default: the run's own, from the
    /// policy's rlhf.json).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Reference policy for the KL (default: the model a GRPO or PPO checkpoint started
    /// from; the policy itself otherwise).
    #[arg(long, value_name = "DIR")]
    pub reference: Option<PathBuf>,
    /// Tokens to generate at most per answer.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_new_tokens: usize,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0, value_name = "T")]
    pub temperature: f64,
    /// Random seed of the sampling: the same seed gives the same answers.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Prompts per generation batch.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub batch_size: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write every (prompt, answer, rewards, KL) as JSONL to FILE.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ModerateCommand {
    /// Train the multi-label moderation classifier (labelled data: docs/cli.md).
    #[command(after_help = example(
        "rlhf moderate train --config configs/moderate.toml --set data.train=samples-1680.jsonl"
    ))]
    Train(TrainArgs),
    /// Per-category AUPRC, precision and recall on labelled data.
    #[command(after_help = example(
        "rlhf moderate eval --model runs/moderate --data data/demo/moderation.jsonl --json"
    ))]
    Eval(EvalArgs),
    /// Moderate texts; prints OpenAI-shaped JSON lines.
    #[command(after_help = example(
        "rlhf moderate score --model runs/moderate \"I will hurt you if you come here again.\""
    ))]
    Score(ModerateScoreArgs),
}

#[derive(Debug, Args)]
pub struct ModerateScoreArgs {
    /// Moderation model directory.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Texts to moderate (none and no --data: one text per line of stdin).
    pub text: Vec<String>,
    /// JSONL file of texts instead ({"text"} or {"prompt"} rows).
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
    /// Where /compare appends rankings, as reward-model comparison rows; /good and /bad append
    /// KTO rows to the file beside it (prefs.jsonl → prefs.kto.jsonl).
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
pub struct ServeArgs {
    /// Model directory (an SFT or PPO policy, or any causal LM with a chat template).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Moderation classifier (`rlhf moderate train`): serves /v1/moderations and screens chat
    /// messages and answers.
    #[arg(long, value_name = "DIR")]
    pub moderation: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", value_name = "HOST")]
    pub host: String,
    /// Port to listen on (0: any free one; the address is printed).
    #[arg(long, default_value_t = 8000, value_name = "PORT")]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on /v1 routes [env: RLHF_API_KEY].
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Answers decoded at once (continuous batching: requests join between steps).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_batch: usize,
    /// Requests waiting for a place in the batch before new ones get 429.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_queue: usize,
    /// The most tokens a request may ask for (max_tokens), and the default when it asks none.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub max_tokens: usize,
    /// Finished conversations whose KV cache is kept for a follow-up turn to start from.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub prompt_cache: usize,
    /// Chat template: chatml, hh or model [default: model if the tokenizer has one, else
    /// chatml].
    #[arg(long, value_name = "NAME")]
    pub template: Option<String>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Model directory.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// JSONL prompts ({"prompt"} or {"messages"} rows); `-` reads them from stdin.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "prompt",
        conflicts_with = "prompt"
    )]
    pub data: Option<PathBuf>,
    /// A prompt to complete, without a file (repeatable: one output line each).
    #[arg(long, value_name = "TEXT")]
    pub prompt: Vec<String>,
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

impl SamplingArgs {
    /// The model's defaults with these choices on top, by [`SamplingConfig::apply_choice`]'s
    /// rule (the one `rlhf generate`, `rlhf chat` and the chat's `/set` share).
    pub fn config(&self, model_dir: &Path) -> anyhow::Result<SamplingConfig> {
        let args = self;
        let mut config = SamplingConfig::from_model_dir(model_dir);
        config.max_new_tokens = args.max_new_tokens.unwrap_or(config.max_new_tokens);
        config.repetition_penalty = args.repetition_penalty.unwrap_or(config.repetition_penalty);
        config.seed = args.seed;
        config.stop = args.stop.clone();
        config.ignore_eos = args.ignore_eos;
        let bad = |e: String| crate::bad_input!("{e}");
        if args.sample {
            config.do_sample = true; // what a temperature, top-p or top-k now says by itself
        }
        if args.greedy {
            config.do_sample = false; // clap refuses it beside a temperature, top-p or top-k
        }
        if let Some(k) = args.top_k {
            config.apply_choice(Choice::TopK(k)).map_err(bad)?;
        }
        if let Some(p) = args.top_p {
            config.apply_choice(Choice::TopP(p)).map_err(bad)?;
        }
        if let Some(t) = args.temperature {
            if args.sample && t == 0.0 {
                return Err(crate::bad_input!(
                    "--sample with --temperature 0: a temperature of 0 means greedy decoding\nhint: drop --sample for greedy, or give a temperature above 0"
                ));
            }
            config.apply_choice(Choice::Temperature(t)).map_err(bad)?;
        }
        config.validate().map_err(bad)?;
        Ok(config)
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenizerCommand {
    /// Train a byte-level BPE on the text of JSONL files.
    #[command(after_help = example(TOKENIZER_EXAMPLE))]
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
    #[command(after_help = example(INIT_EXAMPLE))]
    Init(ModelInitArgs),
    /// Load a model directory, check it, and describe it.
    #[command(after_help = example("rlhf model inspect --model models/smollm2"))]
    Inspect(ModelInspectArgs),
    /// Convert a GGUF file (llama.cpp, ollama, LM Studio) into a model directory.
    #[command(after_help = example(
        "rlhf model import --gguf SmolLM2-135M-Instruct.Q4_1.gguf --out models/smollm2"
    ))]
    Import(ModelImportArgs),
    /// Write a GPT-2- or Llama-family model directory as one GGUF file for llama.cpp and ollama.
    #[command(after_help = example("rlhf model export --model runs/ppo --gguf assistant.gguf --type q8_0"))]
    Export(ModelExportArgs),
    /// Fold a LoRA adapter directory into its base model: a whole model directory that
    /// `transformers` loads and `rlhf model export` turns into GGUF.
    #[command(after_help = example("rlhf model merge --adapter runs/sft-lora --out runs/sft-merged"))]
    Merge(ModelMergeArgs),
}

#[derive(Debug, Args)]
pub struct ModelMergeArgs {
    /// An adapter directory (`adapter_config.json`, `adapter_model.safetensors`), written by a
    /// stage with `[model.lora]` or by `peft`.
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// Output model directory (must not exist, unless --force).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
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
    #[arg(long = "type", value_enum, default_value = "f16", value_name = "TYPE")]
    pub kind: crate::gguf::ExportType,
    /// Replace --gguf if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ModelInitArgs {
    #[arg(long, value_name = "NAME|FILE", help = preset_help())]
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
    #[command(after_help = example("rlhf demo data --out runs/demo/data --samples 8 --seed 0"))]
    Data(DemoDataArgs),
    /// Rank sampled answers (`rlhf generate` output) with the gold judge: comparison rows.
    #[command(after_help = example(
        "rlhf demo rank --samples runs/demo/samples.jsonl --out runs/demo/rankings.jsonl"
    ))]
    Rank(DemoRankArgs),
    /// Score answers (`rlhf generate` or `rlhf ppo eval --out` rows) with the gold judge, or
    /// serve it as a reward program (--reward-program).
    #[command(after_help = example("rlhf demo judge --data answers.jsonl --json"))]
    Judge(DemoJudgeArgs),
    /// The result table of a demo run directory, printed and written to DIR/summary.md.
    #[command(after_help = example("rlhf demo summary --dir runs/demo"))]
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
    #[arg(long, value_name = "FILE", required_unless_present = "reward_program")]
    pub data: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long, conflicts_with = "reward_program")]
    pub json: bool,
    /// Be a reward program: read {"prompt", "completion"} requests a line on stdin, print the
    /// judge's number for each a line on stdout (for `rlhf grpo`).
    #[arg(long, conflicts_with = "data")]
    pub reward_program: bool,
    /// What --reward-program prints: the judge's score (0 to 1), correct (1 or 0, the
    /// verifiable reward) or form (0 to 1).
    #[arg(long, value_enum, default_value = "score", conflicts_with = "data")]
    pub metric: crate::demo::reward_program::Metric,
}

#[derive(Debug, Args)]
pub struct DemoSummaryArgs {
    /// The demo's run directory (runs/demo).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoding flags alone, as clap parses them.
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        sampling: SamplingArgs,
    }

    fn from_flags(flags: &[&str]) -> Result<SamplingConfig, String> {
        use clap::Parser;
        let flags = Flags::try_parse_from(std::iter::once("x").chain(flags.iter().copied()))
            .map_err(|e| e.to_string())?;
        flags.sampling.config(Path::new("no-such-model")).map_err(|e| format!("{e:#}"))
    }

    /// Issue 48: `rlhf generate --temperature 1.5` decoded greedily, without a word, unless
    /// `--sample` was given too.
    #[test]
    fn a_temperature_top_p_or_top_k_alone_means_sampling() {
        assert!(!from_flags(&[]).unwrap().do_sample, "no generation_config.json: greedy");
        let hot = from_flags(&["--temperature", "1.5"]).unwrap();
        assert!(hot.do_sample && hot.temperature == 1.5);
        assert!(from_flags(&["--top-p", "0.9"]).unwrap().do_sample);
        assert!(from_flags(&["--top-k", "40"]).unwrap().do_sample);
        assert!(from_flags(&["--sample"]).unwrap().do_sample, "--sample still works");
        assert!(from_flags(&["--sample", "--temperature", "0.7"]).unwrap().do_sample);
        let zero = from_flags(&["--top-k", "40", "--temperature", "0"]).unwrap();
        assert!(!zero.do_sample, "temperature 0 means greedy");
        assert!(from_flags(&["--sample", "--temperature", "0"]).unwrap_err().contains("greedy"));
        assert!(from_flags(&["--temperature=-1"]).unwrap_err().contains("≥ 0"));
        assert!(!from_flags(&["--greedy"]).unwrap().do_sample);
        let contradiction = from_flags(&["--greedy", "--temperature", "0.7"]).unwrap_err();
        assert!(contradiction.contains("cannot be used with"), "{contradiction}");
    }
}
