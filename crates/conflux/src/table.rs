//! Plain-text tables for the CLI's human output: left-aligned columns, two spaces apart,
//! `-` for a missing value (as Kafka's command-line tools print them).

use serde_json::Value;

/// Renders `rows` under `headers`.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// A JSON field as a table cell: strings bare, null or missing as `-`.
pub fn cell(value: &Value, key: &str) -> String {
    match value.get(key) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) if s.is_empty() => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_and_missing_values_dashed() {
        let rows = vec![
            vec!["orders".to_owned(), "0".to_owned()],
            vec!["o".to_owned(), cell(&serde_json::json!({"x": null}), "x")],
        ];
        let text = render(&["TOPIC", "PARTITION"], &rows);
        assert_eq!(text, "TOPIC   PARTITION\norders  0\no       -\n");
    }
}
