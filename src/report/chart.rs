//! Charts of logged metrics: one per metric with every run's curve overlaid, drawn with
//! plotters as SVG (files and the HTML report) and PNG.
//!
//! A metric and its validation twin (`loss` and `valid_loss`) share a chart: a run's training
//! curve is a line, its validation curve (sparser rows of their own) a line with dots. A chart
//! holds one quantity: where runs of several stages log a metric of the same name that means
//! something else in each (`loss`: the SFT language-model loss, the reward model's pairwise
//! loss, the moderation classifier's cross-entropy), each stage gets a chart of its own.
//! Steps are whole numbers, and so are the step axis's ticks.

use std::sync::OnceLock;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::raster::Raster;
use super::run::{Run, VALID_PREFIX};

/// Pixels of a chart file (SVG and PNG).
pub const SIZE: (u32, u32) = (800, 460);

/// Text is laid out (SVG) and rasterised (PNG) with this family, registered from the embedded
/// DejaVu Sans; browsers showing the SVG use their own sans-serif.
const FONT: &str = "sans-serif";

/// Bookkeeping rather than learning curves: drawn after the rest.
const BOOKKEEPING: [&str; 8] = [
    "epoch",
    "seconds",
    "tokens",
    "tokens_per_s",
    "comparisons_per_s",
    "texts_per_s",
    "rollout_s",
    "update_s",
];

/// Metrics that mean the same in every stage, so runs of different stages share their chart.
const SHARED: [&str; 2] = ["lr", "grad_norm"];

/// What a stage's metric measures, for the title of a chart of that stage alone.
const QUANTITIES: [(&str, &str, &str); 4] = [
    ("sft", "loss", "language-model loss"),
    ("reward", "loss", "pairwise loss"),
    ("moderate", "loss", "classifier loss"),
    ("reward", "accuracy", "pairwise accuracy"),
];

/// matplotlib's default colours; run i draws training in 2i and validation in 2i + 1, so
/// both stand apart from each other and from other runs.
const PALETTE: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

pub struct Chart {
    /// The metric without `valid_`: training and validation values share a chart.
    pub metric: String,
    /// The stage whose runs alone the chart shows, where runs of other stages log a metric of
    /// the same name that measures something else.
    pub stage: Option<String>,
    pub series: Vec<Series>,
}

pub struct Series {
    pub label: String,
    /// Index into the palette: 2 × run, plus 1 for validation.
    pub color: usize,
    pub validation: bool,
    /// (step, value), by step.
    pub points: Vec<(f64, f64)>,
}

/// A metric key's chart name and whether it is a validation value: `valid_loss` → `loss`.
fn metric_of(key: &str) -> (&str, bool) {
    match key.strip_prefix(VALID_PREFIX) {
        Some(metric) => (metric, true),
        None => (key, false),
    }
}

/// One chart per quantity any run logs — per metric, and per stage where stages mean different
/// things by one name — in order of first appearance (bookkeeping last).
pub fn charts(runs: &[Run]) -> Vec<Chart> {
    // The stages that log each metric.
    let mut stages: Vec<(&str, Vec<&str>)> = Vec::new();
    for run in runs {
        for (key, _) in run.rows.iter().flat_map(|row| &row.values) {
            let metric = metric_of(key).0;
            let stage = run.lineage.stage.as_str();
            match stages.iter_mut().find(|(m, _)| *m == metric) {
                Some((_, seen)) if !seen.contains(&stage) => seen.push(stage),
                Some(_) => {}
                None => stages.push((metric, vec![stage])),
            }
        }
    }
    let per_stage = |metric: &str| {
        !SHARED.contains(&metric)
            && !BOOKKEEPING.contains(&metric)
            && stages.iter().any(|(m, seen)| *m == metric && seen.len() > 1)
    };
    let mut charts: Vec<Chart> = Vec::new();
    for (r, run) in runs.iter().enumerate() {
        for row in &run.rows {
            for (key, value) in &row.values {
                let (metric, validation) = metric_of(key);
                let stage = per_stage(metric).then(|| run.lineage.stage.clone());
                let at = match charts.iter().position(|c| c.metric == metric && c.stage == stage) {
                    Some(at) => at,
                    None => {
                        charts.push(Chart {
                            metric: metric.to_string(),
                            stage,
                            series: Vec::new(),
                        });
                        charts.len() - 1
                    }
                };
                let color = 2 * r + usize::from(validation);
                let series = &mut charts[at].series;
                let s = match series.iter().position(|s| s.color == color) {
                    Some(s) => s,
                    None => {
                        let label = if validation {
                            format!("{} (validation)", run.name)
                        } else {
                            run.name.clone()
                        };
                        series.push(Series { label, color, validation, points: Vec::new() });
                        series.len() - 1
                    }
                };
                series[s].points.push((row.step, *value));
            }
        }
    }
    for chart in &mut charts {
        chart.series.sort_by_key(|s| s.color);
        for series in &mut chart.series {
            series.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
    }
    charts.sort_by_key(|c| BOOKKEEPING.contains(&c.metric.as_str()));
    charts
}

impl Chart {
    /// A file name for the chart: the metric (after its stage and `-` when the chart is one
    /// stage's) with anything but letters, digits, `-`, `_` and `.` replaced by `_`.
    pub fn file_stem(&self) -> String {
        let name = match &self.stage {
            Some(stage) => format!("{stage}-{}", self.metric),
            None => self.metric.clone(),
        };
        name.chars()
            .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
            .collect()
    }

    /// The chart's title: the metric, or for one stage's chart the stage and what the metric
    /// measures there (`reward: pairwise loss`).
    pub fn title(&self) -> String {
        match &self.stage {
            Some(stage) => {
                let quantity = QUANTITIES
                    .iter()
                    .find(|(s, m, _)| s == stage && *m == self.metric)
                    .map_or(self.metric.as_str(), |(_, _, quantity)| quantity);
                format!("{stage}: {quantity}")
            }
            None => self.metric.clone(),
        }
    }

    /// The chart as SVG of `size` pixels (text keeps its size: a smaller canvas gives it more
    /// room).
    pub fn svg(&self, size: (u32, u32)) -> Result<String> {
        register_font()?;
        let mut text = String::new();
        {
            let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
            self.draw(&root).map_err(|e| self.failed(e))?;
            root.present().map_err(|e| self.failed(e))?;
        }
        Ok(text)
    }

    pub fn png(&self) -> Result<Vec<u8>> {
        register_font()?;
        let (width, height) = SIZE;
        let mut rgb = vec![0u8; (width * height * 3) as usize];
        {
            let backend = Raster::new(&mut rgb, SIZE, dejavu::sans::regular())?;
            let root = backend.into_drawing_area();
            self.draw(&root).map_err(|e| self.failed(e))?;
            root.present().map_err(|e| self.failed(e))?;
        }
        encode_png(&rgb, width, height)
    }

    fn failed(&self, e: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("drawing the {} chart: {e}", self.title())
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let points = self.series.iter().flat_map(|s| s.points.iter().copied());
        let (xs, ys): (Vec<f64>, Vec<f64>) = points.unzip();
        let (x, y) = (step_range(&xs), axis_range(&ys, true));
        let mut chart = ChartBuilder::on(root)
            .caption(self.title(), (FONT, 22))
            .margin(14)
            .x_label_area_size(46)
            .y_label_area_size(78)
            .build_cartesian_2d(x.clone(), y.clone())?;
        let grid = RGBColor(0xe4, 0xe4, 0xe4);
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc(&self.metric)
            // No more ticks than whole steps, so the nicest spacing is a whole number too.
            .x_labels(((x.end - x.start).round() as usize + 1).min(8))
            .y_labels(7)
            .x_label_formatter(&step_label)
            .y_label_formatter(&|v| tick_label(*v, &y))
            .bold_line_style(grid)
            .light_line_style(TRANSPARENT)
            .axis_style(RGBColor(0x60, 0x60, 0x60))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .draw()?;
        for series in &self.series {
            let color = PALETTE[series.color % PALETTE.len()];
            let line = color.stroke_width(2);
            let dots = series.validation || series.points.len() == 1;
            chart
                .draw_series(LineSeries::new(series.points.iter().copied(), line))?
                .label(&series.label)
                .legend(move |(x, y)| {
                    let dot = if dots { color.filled() } else { TRANSPARENT.filled() };
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (24, 0)], line)
                        + Circle::new((12, 0), 3, dot)
                });
            if dots {
                chart.draw_series(
                    series.points.iter().map(|&p| Circle::new(p, 3, color.filled())),
                )?;
            }
        }
        chart
            .configure_series_labels()
            .position(self.legend_corner(&x, &y, root.dim_in_pixel()))
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(0xc0, 0xc0, 0xc0))
            .label_font((FONT, 13))
            .draw()?;
        Ok(())
    }

    /// The corner of the plot where the legend covers the fewest points of the curves
    /// (sampled along each segment too), upper right on a tie.
    fn legend_corner(
        &self,
        x: &std::ops::Range<f64>,
        y: &std::ops::Range<f64>,
        (canvas_width, canvas_height): (u32, u32),
    ) -> SeriesLabelPosition {
        // Legend size as a fraction of the plot area (the canvas less margins and labels).
        let longest = self.series.iter().map(|s| s.label.chars().count()).max().unwrap_or(0);
        let plot_width = f64::from(canvas_width.saturating_sub(120).max(1));
        let plot_height = f64::from(canvas_height.saturating_sub(100).max(1));
        let width = ((longest as f64 * 7.5 + 50.0) / plot_width).min(1.0);
        let height = ((self.series.len() as f64 * 20.0 + 16.0) / plot_height).min(1.0);
        let mut samples = Vec::new();
        for series in &self.series {
            let normalized: Vec<(f64, f64)> = series
                .points
                .iter()
                .map(|&(px, py)| {
                    ((px - x.start) / (x.end - x.start), (py - y.start) / (y.end - y.start))
                })
                .collect();
            samples.extend(normalized.first().copied());
            for pair in normalized.windows(2) {
                let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
                samples.extend((1..=10).map(|i| {
                    let t = f64::from(i) / 10.0;
                    (x0 + t * (x1 - x0), y0 + t * (y1 - y0))
                }));
            }
        }
        let corners = [
            (SeriesLabelPosition::UpperRight, true, true),
            (SeriesLabelPosition::UpperLeft, false, true),
            (SeriesLabelPosition::LowerRight, true, false),
            (SeriesLabelPosition::LowerLeft, false, false),
        ];
        let covered = |right: bool, upper: bool| {
            samples
                .iter()
                .filter(|&&(sx, sy)| {
                    let in_x = if right { sx >= 1.0 - width } else { sx <= width };
                    let in_y = if upper { sy >= 1.0 - height } else { sy <= height };
                    in_x && in_y
                })
                .count()
        };
        corners
            .into_iter()
            .min_by_key(|&(_, right, upper)| covered(right, upper))
            .map_or(SeriesLabelPosition::UpperRight, |(corner, _, _)| corner)
    }
}

/// The axis over `values`: their extent, padded on the value axis so curves do not run along
/// the frame, and widened around a constant.
fn axis_range(values: &[f64], pad: bool) -> std::ops::Range<f64> {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return 0.0..1.0;
    }
    if hi > lo {
        let margin = if pad { 0.06 * (hi - lo) } else { 0.0 };
        return (lo - margin)..(hi + margin);
    }
    let margin = if lo == 0.0 { 1.0 } else { 0.1 * lo.abs() };
    (lo - margin)..(hi + margin)
}

/// The step axis: whole steps from the first to the last (one either side of a lone step).
fn step_range(steps: &[f64]) -> std::ops::Range<f64> {
    let lo = steps.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = steps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return 0.0..1.0;
    }
    let (lo, hi) = (lo.floor(), hi.ceil());
    if hi > lo { lo..hi } else { (lo - 1.0)..(hi + 1.0) }
}

/// A step tick: a whole number, or nothing between steps.
fn step_label(value: &f64) -> String {
    let whole = value.round();
    if (value - whole).abs() < 1e-6 { format!("{whole:.0}") } else { String::new() }
}

/// A tick label on `axis`: with as many decimals as ticks about a fifth of the axis apart
/// need, or in scientific notation on an axis of very small or large numbers (learning rates,
/// token counts). Every label of an axis takes the same form.
fn tick_label(value: f64, axis: &std::ops::Range<f64>) -> String {
    // Ticks computed as k · spacing can miss zero by a rounding error.
    let span = axis.end - axis.start;
    if value.abs() < span * 1e-9 {
        return "0".into();
    }
    let largest = axis.start.abs().max(axis.end.abs());
    if !(1e-3..1e6).contains(&largest) {
        // Enough mantissa digits that ticks a fifth of the axis apart differ (a constant
        // learning rate's axis, 9.0e-5 to 1.1e-4, had two ticks reading 1.1e-4).
        let digits = largest.log10().floor() - (span / 5.0).log10().floor();
        let decimals = digits.clamp(1.0, 4.0) as usize;
        return format!("{value:.decimals$e}");
    }
    let decimals = (-(span / 5.0).log10()).ceil().clamp(0.0, 6.0) as usize;
    format!("{value:.decimals$}")
}

/// DejaVu Sans as plotters' `sans-serif`, once per process.
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    ok.then_some(()).ok_or_else(|| anyhow!("the embedded DejaVu Sans font did not load"))
}

fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::High);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Lineage;
    use crate::report::run::Row;

    fn run(name: &str, rows: &[(f64, &[(&str, f64)])]) -> Run {
        staged("sft", name, rows)
    }

    fn staged(stage: &str, name: &str, rows: &[(f64, &[(&str, f64)])]) -> Run {
        Run {
            name: name.into(),
            dir: name.into(),
            lineage: Lineage::new(stage, serde_json::Value::Null),
            rows: rows
                .iter()
                .map(|(step, values)| Row {
                    step: *step,
                    values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                })
                .collect(),
            samples: Vec::new(),
        }
    }

    #[test]
    fn validation_shares_the_metric_chart_and_bookkeeping_goes_last() {
        let a = run(
            "a",
            &[
                (1.0, &[("epoch", 0.1), ("loss", 2.0)]),
                (2.0, &[("epoch", 0.2), ("loss", 1.0)]),
                (2.0, &[("valid_loss", 1.5), ("valid_perplexity", 4.5)]),
            ],
        );
        let b = run("b", &[(1.0, &[("loss", 3.0), ("kl", 0.5)])]);
        let charts = charts(&[a, b]);
        let names: Vec<&str> = charts.iter().map(|c| c.metric.as_str()).collect();
        assert_eq!(names, ["loss", "perplexity", "kl", "epoch"]);
        let labels: Vec<&str> = charts[0].series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["a", "a (validation)", "b"]);
        assert_eq!(charts[0].series[0].points, [(1.0, 2.0), (2.0, 1.0)]);
        assert_eq!(charts[0].series[2].color, 2);
        assert!(charts[1].series[0].validation);
    }

    /// Issue 48: `rlhf plot` of an SFT, a reward and a moderation run drew the LM loss, the
    /// pairwise loss and the classifier loss on one axis.
    #[test]
    fn each_stage_gets_its_own_chart_of_a_metric_it_means_differently() {
        let sft = staged("sft", "sft", &[(1.0, &[("loss", 2.0), ("lr", 1e-3)])]);
        let reward = staged("reward", "rm", &[(1.0, &[("loss", 0.69), ("lr", 1e-5)])]);
        let moderate =
            staged("moderate", "mod", &[(1.0, &[("loss", 0.3)]), (1.0, &[("valid_loss", 0.4)])]);
        let charts = charts(&[sft, reward, moderate]);
        let names: Vec<(String, String)> =
            charts.iter().map(|c| (c.file_stem(), c.title())).collect();
        let name = |stem: &str, title: &str| (stem.to_string(), title.to_string());
        assert_eq!(
            names,
            [
                name("sft-loss", "sft: language-model loss"),
                name("lr", "lr"),
                name("reward-loss", "reward: pairwise loss"),
                name("moderate-loss", "moderate: classifier loss"),
            ]
        );
        assert_eq!(charts[1].series.len(), 2, "the learning rate means the same everywhere");
        assert_eq!(charts[3].series.len(), 2, "moderate's validation loss on its own chart");
        let alone = super::charts(&[staged("sft", "sft", &[(1.0, &[("loss", 2.0)])])]);
        assert_eq!((alone[0].file_stem(), alone[0].title()), name("loss", "loss"));
    }

    /// Issue 48: a short run's step axis had ticks at 1.5 and 2.5.
    #[test]
    fn step_ticks_are_whole_numbers() {
        assert_eq!(step_range(&[1.0, 3.0]), 1.0..3.0);
        assert_eq!(step_range(&[5.0]), 4.0..6.0);
        assert_eq!(step_label(&2.0), "2");
        assert_eq!(step_label(&2.5), "");
        assert_eq!(step_label(&300.0000000001), "300");
    }

    #[test]
    fn tick_labels_fit_the_scale() {
        assert_eq!(tick_label(150.0, &(0.0..300.0)), "150");
        assert_eq!(tick_label(1.27, &(0.0..2.0)), "1.3");
        assert_eq!(tick_label(1e-17, &(-1.0..1.0)), "0");
        assert_eq!(tick_label(5e-4, &(0.0..3e-3)), "0.0005");
        assert_eq!(tick_label(3e-4, &(0.0..4e-4)), "3.0e-4");
        assert_eq!(tick_label(2.5e6, &(1e6..3e6)), "2.5e6");
        assert_eq!(tick_label(1.05e-4, &(9e-5..1.1e-4)), "1.05e-4");
        assert_eq!(tick_label(1.1e-4, &(9e-5..1.1e-4)), "1.10e-4");
    }

    #[test]
    fn constant_series_get_a_visible_range() {
        assert_eq!(axis_range(&[0.0, 0.0], true), -1.0..1.0);
        let r = axis_range(&[2.0], true);
        assert!(r.start < 2.0 && r.end > 2.0);
    }

    #[test]
    fn file_names_are_tame() {
        let chart = Chart { metric: "auprc/S 2".into(), stage: None, series: Vec::new() };
        assert_eq!(chart.file_stem(), "auprc_S_2");
    }
}
