//! Output: a human-readable table or JSON, for every command.

use clap::ValueEnum;
use serde::Serialize;

use crate::Finished;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON document for scripts.
    Json,
}

/// A command's result: serialisable for `--output json`, and printable for people.
pub trait Render: Serialize {
    fn render(&self) -> String;
}

/// The text a report prints in `format`.
pub fn format_report<R: Render>(report: &R, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => report.render(),
        OutputFormat::Json => match serde_json::to_string_pretty(report) {
            Ok(text) => format!("{text}\n"),
            Err(e) => format!("{{\"error\": \"cannot serialise the report: {e}\"}}\n"),
        },
    }
}

pub fn finished<R: Render>(report: &R, format: OutputFormat, success: bool) -> Finished {
    Finished {
        text: format_report(report, format),
        success,
    }
}

/// A table with aligned columns.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<I, S>(headers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                let pad = width.saturating_sub(cell.chars().count());
                text.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        if !self.headers.is_empty() {
            line(&self.headers);
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            line(&rule);
        }
        for row in &self.rows {
            line(row);
        }
        out
    }
}

/// `key: value` lines with the keys aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut table = Table::new(["a", "long header"]);
        table.row(["wide cell", "x"]);
        assert_eq!(
            table.render(),
            "a          long header\n---------  -----------\nwide cell  x\n"
        );
    }
}
