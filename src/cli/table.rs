//! Output for people: aligned tables and JSON values shown as text; and JSON for scripts.

use serde_json::Value;

/// Rows under a header, each column as wide as its widest cell, two spaces apart.
pub(super) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(super) fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(super) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines, without trailing spaces.
    pub(super) fn lines(&self) -> Vec<String> {
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        let all: Vec<&Vec<String>> = std::iter::once(&header).chain(&self.rows).collect();
        let columns = all.iter().map(|r| r.len()).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                all.iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| width(cell))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        all.iter()
            .map(|r| {
                let mut line = String::new();
                for (c, cell) in r.iter().enumerate() {
                    if c > 0 {
                        line.push_str("  ");
                    }
                    line.push_str(cell);
                    if c + 1 < r.len() {
                        line.push_str(&" ".repeat(widths[c] - width(cell)));
                    }
                }
                line.trim_end().to_string()
            })
            .collect()
    }

    pub(super) fn print(&self) {
        for line in self.lines() {
            println!("{line}");
        }
    }
}

/// Characters on screen (the diagrams' box-drawing characters are one each).
pub(super) fn width(s: &str) -> usize {
    s.chars().count()
}

/// A JSON value as a cell: strings without quotes, `null` as `-`, the rest as JSON.
pub(super) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints a value as indented JSON, for `--json`.
pub(super) fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON serialises")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut t = Table::new(&["ID", "STATUS", "NAME"]);
        t.row(vec!["a".into(), "active".into(), "First".into()]);
        t.row(vec!["longer-id".into(), "-".into(), "".into()]);
        assert_eq!(
            t.lines(),
            vec![
                "ID         STATUS  NAME",
                "a          active  First",
                "longer-id  -",
            ]
        );
    }
}
