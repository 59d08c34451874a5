//! The report: one self-contained HTML page (inline SVG charts, a `<style>` block, no scripts,
//! nothing fetched) with each run's final metrics, lineage and sample generations.

use std::fmt::Write;

use anyhow::Result;
use serde_json::{Map, Value};

use super::chart::Chart;
use super::run::Run;

/// Charts on the page: smaller than the files, so their text stays legible in two columns.
const CHART_SIZE: (u32, u32) = (600, 360);

/// Sample generations are shown for at most this many logged steps per run (the first, the
/// last and evenly spaced ones between), so a long run's report stays readable.
const SAMPLE_STEPS: usize = 6;

const STYLE: &str = r#"
:root { --ink: #1f2328; --muted: #656d76; --line: #d0d7de; --soft: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 28px; margin: 0 0 4px; }
h2 { font-size: 21px; margin: 40px 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 24px 0 8px; }
p.lead, .muted { color: var(--muted); }
a { color: var(--accent); text-decoration: none; }
code, pre { font: 13px/1.45 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
code.hash { word-break: break-all; }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 12px;
  overflow: auto; max-height: 480px; }
table { border-collapse: collapse; margin: 4px 0 8px; }
th, td { text-align: left; vertical-align: top; padding: 5px 12px 5px 0; border-bottom: 1px solid var(--line); }
th { font-weight: 600; color: var(--muted); font-size: 13px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 16px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 8px; background: #fff; }
figure svg { display: block; width: 100%; height: auto; }
.metrics { display: flex; flex-wrap: wrap; gap: 40px; }
.metrics > div { min-width: 0; max-width: 100%; }
td code { overflow-wrap: anywhere; }
table.nested { margin: 0; }
table.nested td { padding: 1px 10px 1px 0; border-bottom: none; font-size: 13px; }
.stage { display: inline-block; font-size: 12px; font-weight: 600; color: #fff; background: var(--accent);
  border-radius: 10px; padding: 1px 9px; vertical-align: middle; margin-left: 6px; }
table.samples { width: 100%; table-layout: fixed; }
table.samples td { font-size: 14px; }
table.samples td.text { white-space: pre-wrap; word-wrap: break-word; }
table.samples th.step, table.samples td.step { width: 64px; }
table.samples th.num, table.samples td.num { width: 96px; }
details summary { cursor: pointer; color: var(--accent); }
"#;

/// The whole page for `runs`, with `charts` (built from the same runs) inline.
pub fn page(runs: &[Run], charts: &[Chart]) -> Result<String> {
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    let mut html = String::new();
    writeln!(html, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">")?;
    writeln!(html, "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")?;
    writeln!(html, "<title>rlhf report: {}</title>", escape(&names.join(", ")))?;
    writeln!(html, "<style>{STYLE}</style>\n</head>\n<body>\n<main>")?;
    writeln!(html, "<h1>rlhf report</h1>")?;
    writeln!(
        html,
        "<p class=\"lead\">{} run(s), written by rlhf {}.</p>",
        runs.len(),
        env!("CARGO_PKG_VERSION")
    )?;
    overview(&mut html, runs)?;

    writeln!(html, "<h2 id=\"charts\">Charts</h2>")?;
    if charts.is_empty() {
        writeln!(html, "<p class=\"muted\">No numeric metrics were logged.</p>")?;
    } else {
        writeln!(html, "<div class=\"charts\">")?;
        for chart in charts {
            // Inline SVG needs no namespace, and the page should name no web address at all.
            let svg =
                chart.svg(CHART_SIZE)?.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1);
            let svg = svg.replacen(
                "<svg ",
                &format!("<svg role=\"img\" aria-label=\"{}\" ", escape(&chart.title())),
                1,
            );
            writeln!(html, "<figure id=\"chart-{}\">\n{svg}</figure>", escape(&chart.file_stem()))?;
        }
        writeln!(html, "</div>")?;
    }

    for (i, run) in runs.iter().enumerate() {
        run_section(&mut html, i, run)?;
    }
    writeln!(html, "</main>\n</body>\n</html>")?;
    Ok(html)
}

/// One line per run: what it is and where it came from, linking to its section.
fn overview(html: &mut String, runs: &[Run]) -> Result<()> {
    writeln!(
        html,
        "<table>\n<tr><th>run</th><th>stage</th><th>last step</th><th>headline metric</th><th>directory</th><th>parent</th></tr>"
    )?;
    for (i, run) in runs.iter().enumerate() {
        let last_step = run.rows.iter().map(|r| r.step).reduce(f64::max);
        let headline = run.headline().map_or_else(
            || "—".into(),
            |(key, value, step)| {
                format!(
                    "{} <b>{}</b> <span class=\"muted\">(step {})</span>",
                    escape(&key),
                    number(value),
                    number(step)
                )
            },
        );
        writeln!(
            html,
            "<tr><td><a href=\"#run-{i}\">{}</a></td><td>{}</td><td class=\"num\">{}</td><td>{headline}</td><td><code>{}</code></td><td>{}</td></tr>",
            escape(&run.name),
            escape(&run.lineage.stage),
            last_step.map_or_else(|| "—".into(), number),
            escape(&run.dir.display().to_string()),
            run.lineage
                .parent
                .as_ref()
                .map_or_else(|| "—".into(), |p| format!("<code>{}</code>", escape(&p.path))),
        )?;
    }
    writeln!(html, "</table>")?;
    Ok(())
}

fn run_section(html: &mut String, i: usize, run: &Run) -> Result<()> {
    let lineage = &run.lineage;
    writeln!(html, "<section id=\"run-{i}\">")?;
    writeln!(
        html,
        "<h2>{}<span class=\"stage\">{}</span></h2>",
        escape(&run.name),
        escape(&lineage.stage)
    )?;

    writeln!(html, "<h3>Final metrics</h3>\n<div class=\"metrics\">")?;
    writeln!(html, "<div><p class=\"muted\">saved in rlhf.json</p>\n<table>")?;
    match &lineage.metrics {
        Value::Object(metrics) if !metrics.is_empty() => {
            for (key, value) in metrics {
                writeln!(
                    html,
                    "<tr><td>{}</td><td class=\"num\">{}</td></tr>",
                    escape(key),
                    json_cell(value)
                )?;
            }
        }
        _ => writeln!(html, "<tr><td class=\"muted\">none</td></tr>")?,
    }
    writeln!(html, "</table></div>")?;
    writeln!(html, "<div><p class=\"muted\">last logged in metrics.jsonl</p>\n<table>")?;
    writeln!(html, "<tr><th>metric</th><th>value</th><th>step</th></tr>")?;
    for (key, value, step) in run.last_values() {
        writeln!(
            html,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&key),
            number(value),
            number(step)
        )?;
    }
    writeln!(html, "</table></div>\n</div>")?;

    writeln!(html, "<h3>Lineage</h3>\n<table>")?;
    let row = |html: &mut String, what: &str, cell: String| {
        writeln!(html, "<tr><th>{what}</th><td>{cell}</td></tr>")
    };
    row(html, "directory", format!("<code>{}</code>", escape(&run.dir.display().to_string())))?;
    row(html, "stage", escape(&lineage.stage))?;
    row(html, "tool version", escape(&lineage.tool_version))?;
    let source = |s: &crate::checkpoint::Source| {
        format!(
            "<code>{}</code><br>sha256 <code class=\"hash\">{}</code>",
            escape(&s.path),
            escape(&s.sha256)
        )
    };
    row(html, "parent", lineage.parent.as_ref().map_or_else(|| "none".into(), source))?;
    for data in &lineage.data {
        row(html, "data", source(data))?;
    }
    writeln!(html, "</table>")?;
    let config = serde_json::to_string_pretty(&lineage.config)?;
    writeln!(
        html,
        "<details><summary>resolved config</summary>\n<pre>{}</pre></details>",
        escape(&config)
    )?;

    samples(html, run)?;
    writeln!(html, "</section>")?;
    Ok(())
}

/// Sample generations grouped by step: sft's greedy completions, ppo's scored responses.
fn samples(html: &mut String, run: &Run) -> Result<()> {
    writeln!(html, "<h3>Samples</h3>")?;
    if run.samples.is_empty() {
        writeln!(html, "<p class=\"muted\">This run wrote no samples.jsonl.</p>")?;
        return Ok(());
    }
    let step_of = |row: &Map<String, Value>| row.get("step").and_then(Value::as_f64);
    let mut steps: Vec<Option<f64>> = Vec::new();
    for row in &run.samples {
        if !steps.contains(&step_of(row)) {
            steps.push(step_of(row));
        }
    }
    let shown = spread(steps.len(), SAMPLE_STEPS);
    if shown.len() < steps.len() {
        writeln!(
            html,
            "<p class=\"muted\">{} rows at {} steps; shown: {} of the steps, first and last included.</p>",
            run.samples.len(),
            steps.len(),
            shown.len()
        )?;
    }
    let mut columns: Vec<&str> = Vec::new();
    for row in &run.samples {
        for key in row.keys() {
            if key != "step" && !columns.contains(&key.as_str()) {
                columns.push(key);
            }
        }
    }
    // Scores are right-aligned numbers; prompts and responses wrap as text.
    let classes: Vec<&str> = columns
        .iter()
        .map(|c| run.samples.iter().all(|r| r.get(*c).is_none_or(Value::is_number)))
        .map(|numeric| if numeric { "num" } else { "text" })
        .collect();
    writeln!(html, "<table class=\"samples\">\n<tr><th class=\"step\">step</th>")?;
    for (column, class) in columns.iter().zip(&classes) {
        write!(html, "<th class=\"{class}\">{}</th>", escape(column))?;
    }
    writeln!(html, "</tr>")?;
    for step in shown.iter().map(|&s| steps[s]) {
        for row in run.samples.iter().filter(|r| step_of(r) == step) {
            write!(
                html,
                "<tr><td class=\"step num\">{}</td>",
                step.map_or_else(|| "—".into(), number)
            )?;
            for (column, class) in columns.iter().zip(&classes) {
                let cell = row.get(*column).map_or_else(String::new, json_cell);
                write!(html, "<td class=\"{class}\">{cell}</td>")?;
            }
            writeln!(html, "</tr>")?;
        }
    }
    writeln!(html, "</table>")?;
    Ok(())
}

/// At most `k` of the indices `0..n`, evenly spread, first and last included.
fn spread(n: usize, k: usize) -> Vec<usize> {
    if n <= k {
        return (0..n).collect();
    }
    let mut picked: Vec<usize> = (0..k).map(|i| i * (n - 1) / (k - 1)).collect();
    picked.dedup();
    picked
}

/// A JSON value as table text: numbers formatted, strings as they are, an object (moderate's
/// `thresholds`) as a small table of its own, a list comma-separated.
fn json_cell(value: &Value) -> String {
    match value {
        Value::Null => "—".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), number),
        Value::String(s) => escape(s),
        Value::Array(items) => items.iter().map(json_cell).collect::<Vec<_>>().join(", "),
        Value::Object(fields) if fields.is_empty() => "—".into(),
        Value::Object(fields) => {
            let rows: String = fields
                .iter()
                .map(|(key, value)| {
                    format!(
                        "<tr><td>{}</td><td class=\"num\">{}</td></tr>",
                        escape(key),
                        json_cell(value)
                    )
                })
                .collect();
            format!("<table class=\"nested\">{rows}</table>")
        }
    }
}

/// Whole numbers as integers, others to five significant digits (scientific when tiny or huge).
fn number(value: f64) -> String {
    let magnitude = value.abs();
    if value.fract() == 0.0 && magnitude < 1e15 {
        format!("{value:.0}")
    } else if (1e-3..1e6).contains(&magnitude) {
        let decimals = (4 - magnitude.log10().floor() as i32).max(0) as usize;
        let text = format!("{value:.decimals$}");
        if decimals == 0 { text } else { text.trim_end_matches('0').trim_end_matches('.').into() }
    } else {
        format!("{value:.4e}")
    }
}

/// Text as HTML: the five characters that could open markup or end an attribute, escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<b a="1">'x' & y</b>"#),
            "&lt;b a=&quot;1&quot;&gt;&#39;x&#39; &amp; y&lt;/b&gt;"
        );
    }

    /// Issue 48: moderate's `thresholds` were printed as one raw JSON string, which ran off
    /// the page and pushed the values beside it out of sight.
    #[test]
    fn nested_metrics_are_a_table_not_a_json_string() {
        let thresholds = serde_json::json!({"hate": 0.25, "sexual": null, "violence": 0.5});
        let cell = json_cell(&thresholds);
        assert!(!cell.contains('{') && !cell.contains("\"hate\""), "{cell}");
        assert!(cell.starts_with("<table class=\"nested\">"), "{cell}");
        assert!(cell.contains("<tr><td>hate</td><td class=\"num\">0.25</td></tr>"), "{cell}");
        assert!(cell.contains("<tr><td>sexual</td><td class=\"num\">—</td></tr>"), "{cell}");
        assert_eq!(json_cell(&serde_json::json!([1, 2.5])), "1, 2.5");
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(300.0), "300");
        assert_eq!(number(1.913823), "1.9138");
        assert_eq!(number(0.0567), "0.0567");
        assert_eq!(number(123456.7), "123457");
        assert_eq!(number(9.44e-8), "9.4400e-8");
        assert_eq!(number(-0.5), "-0.5");
    }

    #[test]
    fn spread_keeps_first_and_last() {
        assert_eq!(spread(3, 6), [0, 1, 2]);
        assert_eq!(spread(11, 6), [0, 2, 4, 6, 8, 10]);
        assert_eq!(spread(7, 2), [0, 6]);
    }
}
