//! The bench report: rows of medians with their references, as a table, Markdown and JSON.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

/// One figure: the median of `samples`, optionally set against a reference.
#[derive(Debug, Clone)]
pub struct Row {
    pub section: &'static str,
    pub name: String,
    pub unit: &'static str,
    pub samples: Vec<f64>,
    /// What the figure is compared with, its value (same unit) and where it comes from.
    pub reference: Option<Reference>,
    /// The target for the ratio (or for the value, when `target_on_value`).
    pub target: Option<Target>,
    pub note: String,
}

#[derive(Debug, Clone)]
pub struct Reference {
    pub name: String,
    pub value: f64,
    /// The reference measured beside each sample, if it was; `value` is then
    /// their median, and the ratio the median of the samples' own ratios.
    pub each: Vec<f64>,
}

#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// ratio = value / reference must be at least this.
    RatioAtLeast(f64),
    /// The value itself must be at most this (costs: ms, MiB).
    ValueAtMost(f64),
    /// The value itself must be at least this (rates with an absolute target).
    ValueAtLeast(f64),
}

pub fn median(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let mid = s.len() / 2;
    if s.len() % 2 == 1 {
        s[mid]
    } else {
        (s[mid - 1] + s[mid]) / 2.0
    }
}

impl Row {
    pub fn new(section: &'static str, name: impl Into<String>, unit: &'static str) -> Row {
        Row {
            section,
            name: name.into(),
            unit,
            samples: Vec::new(),
            reference: None,
            target: None,
            note: String::new(),
        }
    }

    pub fn samples(mut self, samples: Vec<f64>) -> Row {
        self.samples = samples;
        self
    }

    pub fn against(mut self, name: impl Into<String>, value: f64) -> Row {
        self.reference = Some(Reference {
            name: name.into(),
            value,
            each: Vec::new(),
        });
        self
    }

    /// Against a reference measured right before each sample (one per
    /// sample, in order), so drift in the machine's speed between runs
    /// cancels out of each ratio.
    pub fn against_each(mut self, name: impl Into<String>, each: Vec<f64>) -> Row {
        self.reference = Some(Reference {
            name: name.into(),
            value: median(&each),
            each,
        });
        self
    }

    pub fn target(mut self, t: Target) -> Row {
        self.target = Some(t);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }

    pub fn median(&self) -> f64 {
        median(&self.samples)
    }

    pub fn ratio(&self) -> Option<f64> {
        let r = self.reference.as_ref()?;
        if !r.each.is_empty() && r.each.len() == self.samples.len() {
            let ratios: Vec<f64> = self
                .samples
                .iter()
                .zip(&r.each)
                .filter(|(_, reference)| **reference > 0.0)
                .map(|(sample, reference)| sample / reference)
                .collect();
            return (!ratios.is_empty()).then(|| median(&ratios));
        }
        (r.value > 0.0).then(|| self.median() / r.value)
    }

    /// `Some(true)` if the row meets its target.
    pub fn met(&self) -> Option<bool> {
        let v = self.median();
        match self.target? {
            Target::RatioAtLeast(t) => self.ratio().map(|r| r >= t),
            Target::ValueAtMost(t) => Some(v <= t),
            Target::ValueAtLeast(t) => Some(v >= t),
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            None => String::new(),
            Some(Target::RatioAtLeast(t)) => format!("ratio ≥ {t}"),
            Some(Target::ValueAtMost(t)) => format!("≤ {}", fmt_num(t)),
            Some(Target::ValueAtLeast(t)) => format!("≥ {}", fmt_num(t)),
        }
    }
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn status(row: &Row) -> &'static str {
    match row.met() {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "",
    }
}

/// The table as Markdown (also what is printed).
pub fn markdown(rows: &[Row], header: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}");
    let mut section = "";
    for row in rows {
        if row.section != section {
            section = row.section;
            let _ = writeln!(out, "\n### {section}\n");
            let _ = writeln!(
                out,
                "| figure | median | unit | runs | min–max | reference | ratio | target | |"
            );
            let _ = writeln!(out, "|---|---:|---|---:|---|---|---:|---|---|");
        }
        let (lo, hi) = row
            .samples
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(*v), hi.max(*v))
            });
        let reference = row
            .reference
            .as_ref()
            .map(|r| {
                let each: Vec<String> = r.each.iter().map(|v| fmt_num(*v)).collect();
                if each.is_empty() {
                    format!("{} = {}", r.name, fmt_num(r.value))
                } else {
                    format!(
                        "{} = {} (median; beside each run: {})",
                        r.name,
                        fmt_num(r.value),
                        each.join(", ")
                    )
                }
            })
            .unwrap_or_default();
        let ratio = row.ratio().map(|r| format!("{r:.2}")).unwrap_or_default();
        let note = if row.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", row.note)
        };
        let _ = writeln!(
            out,
            "| {}{} | {} | {} | {} | {}–{} | {} | {} | {} | {} |",
            row.name,
            note,
            fmt_num(row.median()),
            row.unit,
            row.samples.len(),
            fmt_num(lo),
            fmt_num(hi),
            reference,
            ratio,
            row.target_text(),
            status(row),
        );
    }
    out
}

pub fn json(rows: &[Row], meta: serde_json::Value) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "section": r.section,
                "name": r.name,
                "unit": r.unit,
                "median": finite(r.median()),
                "runs": r.samples.len(),
                "samples": r.samples.iter().map(|v| finite(*v)).collect::<Vec<_>>(),
                "reference": r.reference.as_ref().map(|x| serde_json::json!({
                    "name": x.name,
                    "value": finite(x.value),
                    "each": x.each.iter().map(|v| finite(*v)).collect::<Vec<_>>(),
                })),
                "ratio": r.ratio().map(finite),
                "target": r.target_text(),
                "met": r.met(),
                "note": r.note,
            })
        })
        .collect();
    serde_json::json!({ "meta": meta, "rows": rows })
}

fn finite(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!(v)
    } else {
        serde_json::Value::Null
    }
}

pub fn write(dir: &Path, md: &str, json: &serde_json::Value) -> Result<()> {
    let md_path = dir.join("report.md");
    std::fs::write(&md_path, md).with_context(|| format!("cannot write {}", md_path.display()))?;
    let json_path = dir.join("report.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(json)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_against_references_beside_each_run_is_the_median_of_the_runs_ratios() {
        let row = Row::new("s", "put", "MB/s")
            .samples(vec![100.0, 200.0, 300.0])
            .against_each("limit", vec![200.0, 200.0, 1000.0])
            .target(Target::RatioAtLeast(0.7));
        // Runs' ratios 0.5, 1.0 and 0.3; medians over medians would say 1.0.
        assert_eq!(row.ratio(), Some(0.5));
        assert_eq!(row.met(), Some(false));
        assert_eq!(row.reference.as_ref().map(|r| r.value), Some(200.0));
        let md = markdown(&[row], "h");
        assert!(
            md.contains("limit = 200 (median; beside each run: 200, 200, 1000)"),
            "{md}"
        );
        assert!(md.contains("| 0.50 |"), "{md}");
    }

    #[test]
    fn a_single_reference_divides_the_median() {
        let row = Row::new("s", "get", "MB/s")
            .samples(vec![100.0, 200.0, 300.0])
            .against("limit", 400.0);
        assert_eq!(row.ratio(), Some(0.5));
        let row = row.against("limit", 0.0);
        assert_eq!(row.ratio(), None);
    }
}
