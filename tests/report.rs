//! `rlhf plot` and `rlhf report` end to end: a real (short) SFT run and a synthetic PPO-shaped
//! run drawn as PNG and SVG, one self-contained HTML page, bad input refused with nothing
//! written, and the page rendered by headless Chromium where it is installed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::{Value, json};

/// matplotlib's first three colours, as the charts use them: run 0's training curve, run 0's
/// validation curve, run 1's training curve.
const RUN0: [u8; 3] = [0x1f, 0x77, 0xb4];
const RUN0_VALID: [u8; 3] = [0xff, 0x7f, 0x0e];
const RUN1: [u8; 3] = [0x2c, 0xa0, 0x2c];

const PPO_STEPS: usize = 12;
const MODERATE_STEPS: usize = 3;
const PPO_PARENT_HASH: &str = "5e1f0c3d9a7b2e4f6a8c0b1d3e5f7a9c1b3d5e7f9a1c3e5b7d9f1a3c5e7b9d1f";
const SAMPLE: &str = "<script>alert(\"hi\")</script> & 'quotes'";

/// A temporary directory holding a synthetic PPO run (`runs/ppo`) with every key `rlhf ppo
/// train` logs and, from [`Runs::with_sft`], a short real SFT run (`runs/sft`).
struct Runs {
    dir: tempfile::TempDir,
}

impl Runs {
    fn ppo() -> Self {
        let runs = Self { dir: tempfile::tempdir().unwrap() };
        runs.write_ppo();
        runs
    }

    fn with_sft() -> Self {
        let runs = Self::ppo();
        runs.train_sft();
        runs
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `rlhf ARGS…` in the directory, with one LibTorch thread.
    fn rlhf(&self, args: &[&str]) -> Output {
        rlhf_in(self.dir.path(), args).output().unwrap()
    }

    fn train_sft(&self) {
        let qa = [("What is two plus two?", "Four."), ("What colour is grass?", "Green.")];
        let rows: Vec<Value> =
            (0..24).map(|i| json!({"prompt": qa[i % 2].0, "completion": qa[i % 2].1})).collect();
        write_jsonl(&self.path("sft.jsonl"), &rows);
        assert_ok(&self.rlhf(&[
            "tokenizer",
            "train",
            "--data",
            "sft.jsonl",
            "--vocab-size",
            "300",
            "--out",
            "tok",
        ]));
        let config = r#"
[model]
init = "tiny"
tokenizer = "tok"
[data]
train = "sft.jsonl"
valid_fraction = 0.2
max_len = 32
[train]
max_steps = 30
batch_size = 4
lr = 3e-3
warmup_steps = 3
eval_every = 10
save_every = 0
log_every = 5
[samples]
count = 2
max_new_tokens = 6
[output]
dir = "runs/sft"
"#;
        std::fs::write(self.path("sft.toml"), config).unwrap();
        assert_ok(&self.rlhf(&["sft", "train", "--config", "sft.toml"]));
    }

    /// A PPO run as `rlhf ppo train` writes it: one metrics line per iteration, four samples
    /// at the first and every sixth iteration, lineage pointing at its SFT parent.
    fn write_ppo(&self) {
        let dir = self.path("runs/ppo");
        std::fs::create_dir_all(&dir).unwrap();
        let mut metrics = Vec::new();
        let mut samples = Vec::new();
        for step in 1..=PPO_STEPS {
            let t = step as f64;
            metrics.push(json!({
                "step": step, "epoch": t / 4.0,
                "score": 0.2 + 0.1 * t, "score_std": 1.0, "rm_score": 0.1 * t,
                "kl": 0.3 * t, "beta": 0.05 - 0.001 * t, "non_score_reward": -0.015 * t,
                "entropy": 2.0 - 0.05 * t, "clip_fraction": 0.1 + 0.01 * (t % 3.0),
                "approx_kl": 0.001 * t, "policy_loss": -0.01 * t, "value_loss": 1.0 / t,
                "grad_norm": 0.5, "explained_variance": 0.05 * t,
                "response_length": 12.0 + t, "ended": 0.9, "rollout_s": 0.2, "update_s": 0.3,
                "tokens": 200 * step, "tokens_per_s": 800.0, "lr": 1e-5, "seconds": 0.5 * t,
            }));
            if step == 1 || step % 6 == 0 {
                for i in 0..4 {
                    samples.push(json!({
                        "step": step, "prompt": format!("Prompt {i}"), "response": SAMPLE,
                        "rm_score": 0.5, "score": 0.25,
                    }));
                }
            }
        }
        write_jsonl(&dir.join("metrics.jsonl"), &metrics);
        write_jsonl(&dir.join("samples.jsonl"), &samples);
        let lineage = json!({
            "stage": "ppo", "tool_version": "0.1.0",
            "parent": {"path": "runs/sft", "sha256": PPO_PARENT_HASH},
            "data": [{"path": "data/prompts.jsonl", "sha256": "ab".repeat(32)}],
            "config": {"config": {"ppo": {"target_kl": 3.0}}, "overrides": []},
            "metrics": {"step": PPO_STEPS, "score": 1.4321, "kl": 3.6},
        });
        std::fs::write(dir.join("rlhf.json"), serde_json::to_string_pretty(&lineage).unwrap())
            .unwrap();
    }

    /// A moderation run as `rlhf moderate train` writes it: three steps, one validation, and
    /// the chosen thresholds (f32 values widened to f64, as written) in rlhf.json's metrics.
    fn write_moderate(&self) {
        let dir = self.path("runs/mod");
        std::fs::create_dir_all(&dir).unwrap();
        let mut metrics: Vec<Value> = (1..=MODERATE_STEPS)
            .map(|step| {
                json!({"step": step, "epoch": step as f64 / 3.0, "loss": 0.3 - 0.05 * step as f64,
                       "grad_norm": 0.8, "lr": 1e-4, "tokens": 300 * step, "texts_per_s": 40.0})
            })
            .collect();
        metrics.push(
            json!({"step": MODERATE_STEPS, "valid_auprc_HR": 0.875, "valid_macro_auprc": 0.8125,
                            "valid_auprc_any": 0.9375, "valid_ece": 0.042}),
        );
        write_jsonl(&dir.join("metrics.jsonl"), &metrics);
        let lineage = json!({
            "stage": "moderate", "tool_version": "0.1.0",
            "parent": {"path": "models/minilm", "sha256": "cd".repeat(32)},
            "data": [{"path": "moderation.jsonl", "sha256": "ef".repeat(32)}],
            "config": {"config": {"thresholds": {"rule": "best_f1"}}, "overrides": []},
            "metrics": {
                "step": MODERATE_STEPS, "valid_auprc_any": 0.9375, "valid_macro_auprc": 0.8125,
                "valid_ece": 0.042,
                "thresholds": {
                    "sexual": null, "hate": 0.03910000262260437,
                    "violence": 0.07857143133878708, "harassment": 0.4434782564640045,
                    "self-harm": 0.2130434811115265, "sexual/minors": null,
                    "hate/threatening": 0.5, "violence/graphic": 0.10389610379934311,
                },
            },
        });
        std::fs::write(dir.join("rlhf.json"), serde_json::to_string_pretty(&lineage).unwrap())
            .unwrap();
    }

    fn metrics_rows(&self, run: &str) -> Vec<Value> {
        std::fs::read_to_string(self.path(run).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// How many rows of a run's metrics.jsonl log `key`.
    fn logged(&self, run: &str, key: &str) -> usize {
        self.metrics_rows(run).iter().filter(|r| r.get(key).is_some()).count()
    }
}

struct Image {
    width: u32,
    height: u32,
    /// RGB triples, row by row.
    pixels: Vec<[u8; 3]>,
}

fn decode_png(path: &Path) -> Image {
    let bytes = std::fs::read(path).unwrap();
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buffer).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{}: not a colour image", path.display());
    let pixels =
        buffer[..info.buffer_size()].chunks(channels).map(|p| [p[0], p[1], p[2]]).collect();
    Image { width: info.width, height: info.height, pixels }
}

impl Image {
    /// Pixels within `tolerance` of `colour` on every channel.
    fn count_near(&self, colour: [u8; 3], tolerance: u8) -> usize {
        self.pixels
            .iter()
            .filter(|p| p.iter().zip(colour).all(|(a, b)| a.abs_diff(b) <= tolerance))
            .count()
    }

    fn distinct_colours(&self) -> usize {
        let set: std::collections::HashSet<[u8; 3]> = self.pixels.iter().copied().collect();
        set.len()
    }
}

/// The `<polyline>`s of an SVG drawn in `colour`, as their numbers of points.
fn polylines(svg: &str, colour: [u8; 3]) -> Vec<usize> {
    let doc = roxmltree::Document::parse(svg).expect("the SVG parses as XML");
    let hex = format!("#{:02x}{:02x}{:02x}", colour[0], colour[1], colour[2]);
    doc.descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter(|n| n.attribute("stroke").is_some_and(|s| s.eq_ignore_ascii_case(&hex)))
        .map(|n| n.attribute("points").unwrap_or("").split_whitespace().count())
        .collect()
}

/// The texts of an SVG (titles, tick labels, legend entries), trimmed.
fn texts(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).expect("the SVG parses as XML");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(|t| t.trim().to_string())
        .collect()
}

fn exit_code(out: &Output) -> Option<i32> {
    out.status.code()
}

#[test]
fn plot_draws_each_metric_of_every_run_as_png_and_svg() {
    let runs = Runs::with_sft();
    let out = runs.rlhf(&["plot", "runs/sft", "runs/ppo", "--out", "plots"]);
    assert_ok(&out);
    assert!(stderr(&out).contains("SVG and PNG"), "{}", stderr(&out));

    // Every numeric key either stage logs has its chart, validation keys on their metric's.
    let mut expected = vec!["loss", "lr", "perplexity", "grad_norm", "epoch", "tokens"];
    expected.extend([
        "score",
        "kl",
        "beta",
        "entropy",
        "clip_fraction",
        "value_loss",
        "response_length",
        "rm_score",
        "approx_kl",
        "explained_variance",
    ]);
    for metric in &expected {
        for ext in ["svg", "png"] {
            let file = runs.path(&format!("plots/{metric}.{ext}"));
            assert!(file.is_file(), "no {}", file.display());
        }
    }
    assert!(!runs.path("plots/valid_loss.png").exists(), "validation has a chart of its own");

    for metric in &expected {
        let image = decode_png(&runs.path(&format!("plots/{metric}.png")));
        assert_eq!((image.width, image.height), (800, 460), "{metric}.png");
        let background = image.count_near([255, 255, 255], 0);
        let drawn = image.pixels.len() - background;
        assert!(drawn > image.pixels.len() / 50, "{metric}.png is nearly blank ({drawn} pixels)");
        assert!(
            image.distinct_colours() > 20,
            "{metric}.png has {} colours",
            image.distinct_colours()
        );
    }
    // The curves themselves, in their runs' colours (legend samples are ~100 pixels at most).
    let loss = decode_png(&runs.path("plots/loss.png"));
    assert!(loss.count_near(RUN0, 10) > 400, "sft's loss curve is missing");
    assert!(loss.count_near(RUN0_VALID, 10) > 200, "sft's validation curve is missing");
    let kl = decode_png(&runs.path("plots/kl.png"));
    assert!(kl.count_near(RUN1, 10) > 400, "ppo's KL curve is missing");

    // SVG: well-formed XML with one polyline per series holding every logged point (and the
    // legend's short sample of each).
    let svg =
        |metric: &str| std::fs::read_to_string(runs.path(&format!("plots/{metric}.svg"))).unwrap();
    let loss_svg = svg("loss");
    assert!(polylines(&loss_svg, RUN0).contains(&runs.logged("runs/sft", "loss")));
    assert!(polylines(&loss_svg, RUN0_VALID).contains(&runs.logged("runs/sft", "valid_loss")));
    assert!(
        texts(&loss_svg).contains(&"sft (validation)".into()),
        "legend names the validation series"
    );
    for metric in
        ["score", "kl", "beta", "entropy", "clip_fraction", "value_loss", "response_length"]
    {
        assert!(
            polylines(&svg(metric), RUN1).contains(&PPO_STEPS),
            "{metric}.svg lacks ppo's curve"
        );
    }
    let kl_texts = texts(&svg("kl"));
    for text in ["kl", "step", "ppo"] {
        assert!(kl_texts.contains(&text.into()), "kl.svg lacks the text {text:?}");
    }

    // Plotting again into the same directory replaces the charts and leaves no staging files.
    assert_ok(&runs.rlhf(&["plot", "runs/ppo", "--out", "plots"]));
    let hidden: Vec<_> = std::fs::read_dir(runs.path("plots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "left behind: {hidden:?}");
    assert_eq!(polylines(&svg("kl"), RUN0), [PPO_STEPS, 2], "ppo alone is run 0 now");
}

#[test]
fn report_is_one_self_contained_page() {
    let runs = Runs::with_sft();
    let out = runs.rlhf(&["report", "runs/sft", "runs/ppo", "--out", "site/report.html"]);
    assert_ok(&out);
    let html = std::fs::read_to_string(runs.path("site/report.html")).unwrap();

    // Charts inline, one per metric, each with its curves.
    let charts = html.matches("<svg").count();
    assert!(charts >= 16, "{charts} charts");
    assert_eq!(charts, html.matches("</svg>").count());
    assert!(html.contains("aria-label=\"kl\""));
    assert!(html.contains("<style>"));
    // Nothing to run and nothing to fetch.
    assert!(!html.to_lowercase().contains("<script"), "the page has a script");
    assert!(!html.contains("http://") && !html.contains("https://"), "the page names a URL");
    for attr in ["src=", "<link", "@import", "url("] {
        assert!(!html.contains(attr), "the page loads something: {attr}");
    }

    // Final metrics from rlhf.json and from the last metrics lines.
    assert!(html.contains("1.4321"), "ppo's final score (rlhf.json)");
    let sft: Value =
        serde_json::from_str(&std::fs::read_to_string(runs.path("runs/sft/rlhf.json")).unwrap())
            .unwrap();
    let valid_loss = sft["metrics"]["valid_loss"].as_f64().unwrap();
    let cell = "<tr><td>valid_loss</td><td class=\"num\">";
    let shown = html.split(cell).nth(1).and_then(|rest| rest.split('<').next());
    let shown: f64 = shown.expect("sft's final validation loss").parse().unwrap();
    assert!((shown - valid_loss).abs() < 1e-3, "valid_loss {shown} shown, {valid_loss} saved");
    let last_kl = "<tr><td>kl</td><td class=\"num\">3.6</td><td class=\"num\">12</td></tr>";
    assert!(html.contains(last_kl), "ppo's last logged KL and its step");

    // Lineage: stage, parent hash, data hashes, the resolved config.
    assert!(html.contains(PPO_PARENT_HASH));
    assert!(html.contains(sft["data"][0]["sha256"].as_str().unwrap()), "sft's data hash");
    assert!(html.contains("target_kl"));
    assert!(html.contains(&format!("rlhf {}", env!("CARGO_PKG_VERSION"))));

    // Samples, escaped: sft's greedy completions and ppo's scored responses.
    assert!(
        html.contains("&lt;script&gt;alert(&quot;hi&quot;)&lt;/script&gt; &amp; &#39;quotes&#39;")
    );
    assert!(html.contains("Prompt 3") && html.contains("rm_score"));
    assert!(html.contains("&lt;|im_start|&gt;user"), "sft's sample prompts");
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let runs = Runs::ppo();
    std::fs::create_dir_all(runs.path("model")).unwrap();
    std::fs::copy(runs.path("runs/ppo/rlhf.json"), runs.path("model/rlhf.json")).unwrap();
    std::fs::create_dir_all(runs.path("no-lineage")).unwrap();
    std::fs::copy(runs.path("runs/ppo/metrics.jsonl"), runs.path("no-lineage/metrics.jsonl"))
        .unwrap();
    std::fs::create_dir_all(runs.path("broken")).unwrap();
    std::fs::copy(runs.path("runs/ppo/rlhf.json"), runs.path("broken/rlhf.json")).unwrap();
    std::fs::write(
        runs.path("broken/metrics.jsonl"),
        "{\"step\":1,\"loss\":2}\n\n{\"step\":2,\"loss\":\n",
    )
    .unwrap();
    std::fs::write(runs.path("a-file"), "keep me").unwrap();

    let cases: [(&[&str], &str); 9] = [
        (&["plot", "model", "--out", "out"], "model: no metrics.jsonl"),
        (&["plot", "no-lineage", "--out", "out"], "no rlhf.json"),
        (&["plot", "runs/ppo", "broken", "--out", "out"], "broken/metrics.jsonl:3: invalid JSON"),
        (&["report", "broken", "--out", "out"], "broken/metrics.jsonl:3:"),
        (&["plot", "missing", "--out", "out"], "missing: not a directory"),
        (&["plot", "runs/ppo", "--out", "a-file"], "a-file: exists and is not a directory"),
        (&["plot", "runs/ppo", "--out", "a-file/plots"], "is a file, not a directory"),
        (&["report", "runs/ppo", "--out", "runs"], "is a directory"),
        (&["report", "runs/ppo", "--out", "a-file/report.html"], "is a file, not a directory"),
    ];
    for (args, message) in cases {
        let out = runs.rlhf(args);
        assert_eq!(exit_code(&out), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
        assert!(!runs.path("out").exists(), "{args:?} wrote out");
    }
    assert_eq!(std::fs::read_to_string(runs.path("a-file")).unwrap(), "keep me");
    let hidden: Vec<_> = std::fs::read_dir(runs.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "left behind: {hidden:?}");
}

/// Issue 48: `rlhf plot` of runs of several stages drew the SFT language-model loss and the
/// moderation classifier's loss on one axis, and a three-step run's step axis had ticks at 1.5
/// and 2.5.
#[test]
fn plot_gives_each_quantity_its_own_chart_and_whole_step_ticks() {
    let runs = Runs::with_sft();
    runs.write_moderate();
    assert_ok(&runs.rlhf(&["plot", "runs/sft", "runs/mod", "--out", "plots"]));
    assert!(!runs.path("plots/loss.svg").exists(), "two stages' losses on one axis");
    let svg =
        |name: &str| std::fs::read_to_string(runs.path(&format!("plots/{name}.svg"))).unwrap();
    let sft = texts(&svg("sft-loss"));
    assert!(sft.contains(&"sft: language-model loss".into()), "{sft:?}");
    assert!(!sft.contains(&"mod".into()), "the moderation run is not on sft's chart");
    let moderate = texts(&svg("moderate-loss"));
    assert!(moderate.contains(&"moderate: classifier loss".into()), "{moderate:?}");
    assert!(polylines(&svg("moderate-loss"), RUN1).contains(&MODERATE_STEPS));
    // The learning rate means the same in both: one chart, both runs.
    assert_eq!(polylines(&svg("lr"), RUN0).len() + polylines(&svg("lr"), RUN1).len(), 4);
    // Three steps: ticks 1, 2 and 3, nothing between.
    for tick in ["1", "2", "3"] {
        assert!(moderate.contains(&tick.into()), "no step tick {tick}: {moderate:?}");
    }
    for between in ["1.5", "2.5", "1.0", "2.0"] {
        assert!(!moderate.contains(&between.into()), "step tick {between}: {moderate:?}");
    }
}

/// Issue 48: on a moderation run the report printed rlhf.json's `thresholds` object as one raw
/// JSON string, too long for the page; it also named no run's headline number.
#[test]
fn a_moderation_run_reports_thresholds_readably_and_its_headline() {
    let runs = Runs::ppo();
    runs.write_moderate();
    assert_ok(&runs.rlhf(&["report", "runs/mod", "runs/ppo", "--out", "report.html"]));
    let html = std::fs::read_to_string(runs.path("report.html")).unwrap();
    assert!(!html.contains("{&quot;") && !html.contains("{\""), "a raw JSON object on the page");
    assert!(html.contains("<tr><td>hate</td><td class=\"num\">0.0391</td></tr>"), "thresholds");
    assert!(html.contains("<tr><td>sexual</td><td class=\"num\">—</td></tr>"));
    // The overview names each run's headline metric.
    assert!(html.contains("<th>headline metric</th>"));
    assert!(html.contains("valid_auprc_any <b>0.9375</b>"), "moderate's headline");
    assert!(html.contains("rm_score <b>1.2</b>"), "ppo's headline");
}

/// Chromium renders the page offline and the screenshot shows drawn curves. CI installs only
/// what scripts/setup.sh does, so without `chromium` on PATH the test says so and passes.
#[test]
fn report_renders_in_headless_chromium() {
    if Command::new("chromium").arg("--version").output().is_err() {
        eprintln!("skipped: no `chromium` on PATH (apt-get install chromium to run this check)");
        return;
    }
    let runs = Runs::with_sft();
    runs.write_moderate();
    assert_ok(&runs.rlhf(&["report", "runs/sft", "runs/ppo", "runs/mod", "--out", "report.html"]));
    let profile = tempfile::tempdir().unwrap();
    let shot = runs.path("shot.png");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1200,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", runs.path("report.html").display()))
        .output()
        .unwrap();
    assert!(shot.is_file(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
    let image = decode_png(&shot);
    assert_eq!((image.width, image.height), (1200, 2000));
    // The first screen holds the overview and the first charts: sft's loss curve and its
    // validation curve in their colours, antialiased by the browser.
    assert!(image.count_near(RUN0, 24) > 300, "no training curve on the screenshot");
    assert!(image.count_near(RUN0_VALID, 24) > 100, "no validation curve on the screenshot");
    assert!(image.distinct_colours() > 100, "the screenshot is nearly flat");

    // Issue 48: nothing runs off the page in a laptop's 1000 px window (moderate's thresholds
    // made it 1042 px wide). The page has no script, so a copy of it gets one that writes the
    // laid-out width into the DOM that Chromium dumps.
    let page = std::fs::read_to_string(runs.path("report.html")).unwrap();
    let measured = page.replace(
        "</body>",
        "<script>document.body.dataset.width = document.documentElement.scrollWidth;</script></body>",
    );
    std::fs::write(runs.path("measured.html"), measured).unwrap();
    let dom = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1000,2000"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", runs.path("measured.html").display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    let width: u32 = dom
        .split("data-width=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no width measured in {dom:.400}"));
    assert!(width <= 1000, "the page is {width} px wide in a 1000 px window");
}

#[test]
fn both_commands_have_help() {
    let help = String::from_utf8_lossy(&rlhf(&["--help"]).stdout).into_owned();
    for name in ["plot", "report"] {
        assert!(help.contains(&format!("  {name} ")), "--help lacks `{name}`:\n{help}");
        let out = rlhf(&[name, "--help"]);
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("--out"));
    }
}
