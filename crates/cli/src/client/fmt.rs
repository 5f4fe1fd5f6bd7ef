//! Pure formatting helpers of the client: aligned tables, JSON re-indenting,
//! cell rendering.

/// A table of text cells printed as aligned columns separated by two spaces.
///
/// Widths count characters (not bytes), so `×` or `≥` line up. The last
/// column of a left-aligned table carries no trailing spaces.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    right: Vec<usize>,
}

impl Table {
    /// A table with a header line.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            ..Table::default()
        }
    }

    /// A table without a header line (e.g. `key  value` listings).
    pub fn bare() -> Table {
        Table::default()
    }

    /// Right-aligns the given columns (0-based), e.g. numbers.
    pub fn right_align(mut self, cols: &[usize]) -> Table {
        self.right.extend_from_slice(cols);
        self
    }

    /// Appends a row; missing cells are empty, extra cells are kept.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// Renders the table, one line per row, each ending with a newline.
    pub fn render(&self) -> String {
        self.render_page(&mut Vec::new(), true)
    }

    /// Renders one page of a longer table shown as it comes: the header
    /// only if `header`, columns at least `widths` wide (and `widths`
    /// widened to this page's), so that later pages line up with the
    /// first unless a cell is wider.
    pub fn render_page(&self, widths: &mut Vec<usize>, header: bool) -> String {
        let lines: Vec<&Vec<String>> = if self.headers.is_empty() || !header {
            self.rows.iter().collect()
        } else {
            std::iter::once(&self.headers).chain(&self.rows).collect()
        };
        let ncols = lines.iter().map(|l| l.len()).max().unwrap_or(0);
        if widths.len() < ncols {
            widths.resize(ncols, 0);
        }
        if !header {
            // the header counts toward the widths of every page
            for (i, h) in self.headers.iter().enumerate() {
                widths[i] = widths[i].max(width(h));
            }
        }
        for line in &lines {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let mut out = String::new();
        for line in lines {
            let mut text = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = line.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    text.push_str("  ");
                }
                let pad = " ".repeat(w - width(cell));
                if self.right.contains(&i) {
                    text.push_str(&pad);
                    text.push_str(cell);
                } else {
                    text.push_str(cell);
                    text.push_str(&pad);
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// Cuts `s` to at most `max` characters, ending with `…` when cut; newlines
/// and tabs become spaces so that a cell stays on one line.
pub fn truncate(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if width(&flat) <= max {
        return flat;
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = flat.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Re-indents a JSON document without parsing it into a map, so the server's
/// key order and number spelling are kept verbatim. Expects valid JSON.
pub fn pretty_json(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() * 2);
    pretty_into(raw, 0, &mut out);
    out
}

/// [`pretty_json`] of a text that sits `indent` levels deep in a document
/// (balanced values, e.g. the items of one page of a list), appended to
/// `out`: what [`pretty_json`] writes for that part of the whole document.
pub fn pretty_into(raw: &str, indent: usize, out: &mut String) {
    fn newline(out: &mut String, indent: usize) {
        out.push('\n');
        for _ in 0..indent {
            out.push_str("  ");
        }
    }
    let mut indent = indent;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = raw.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while chars.peek().is_some_and(|n| n.is_whitespace()) {
                    chars.next();
                }
                out.push(c);
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(close);
                } else {
                    indent += 1;
                    newline(out, indent);
                }
            }
            '}' | ']' => {
                indent = indent.saturating_sub(1);
                newline(out, indent);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(out, indent);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
}

/// The text inside the top-level `"items": [...]` array of a list answer
/// (without the brackets), so that pages can be merged verbatim. Expects
/// valid JSON; `None` when there is no such array.
pub fn items_text(raw: &str) -> Option<&str> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut string_start = 0usize;
    let mut last_key: &str = "";
    let mut start: Option<usize> = None;
    for (i, c) in raw.char_indices() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
                if depth == 1 && start.is_none() {
                    last_key = &raw[string_start..i];
                }
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                string_start = i + 1;
            }
            '{' | '[' => {
                if c == '[' && depth == 1 && last_key == "items" && start.is_none() {
                    start = Some(i + 1);
                }
                depth += 1;
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                if let Some(s) = start
                    && depth == 1
                {
                    return Some(&raw[s..i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// An RFC 3339 time without its fraction of a second.
pub fn short_time_str(s: &str) -> String {
    match s.find('.') {
        Some(dot) if s.len() > 19 => {
            let tail_start = s[dot + 1..]
                .find(|c: char| !c.is_ascii_digit())
                .map(|i| dot + 1 + i)
                .unwrap_or(s.len());
            format!("{}{}", &s[..dot], &s[tail_start..])
        }
        _ => s.to_string(),
    }
}

/// A command line as a shell would read it: words with spaces or special
/// characters are single-quoted.
pub fn shell_join_words(words: &[String]) -> String {
    words
        .iter()
        .map(|s| {
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c));
            if plain {
                s.clone()
            } else {
                format!("'{}'", s.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {

    /// Pages pretty-printed one by one, joined as `gigafab jobs --all`
    /// streams them, read exactly as the merged document pretty-printed.
    #[test]
    fn pages_pretty_printed_apart_read_as_the_whole() {
        let pages = [
            r#"{"items":[{"id":3,"a":[1,{"b":"x,]}"}],"e":{}},{"id":2,"a":[]}],"next":2}"#,
            r#"{"items":[],"next":2}"#,
            r#"{"items":[{"id":1,"s":"q\"{"}],"next":null}"#,
        ];
        let texts: Vec<&str> = pages
            .iter()
            .map(|p| items_text(p).unwrap().trim())
            .collect();
        let whole = format!(
            "{{\"items\":[{}],\"next\":null}}",
            texts
                .iter()
                .filter(|t| !t.is_empty())
                .cloned()
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut streamed = String::new();
        let mut wrote = false;
        for t in texts.iter().filter(|t| !t.is_empty()) {
            streamed.push_str(if wrote {
                ",\n    "
            } else {
                "{\n  \"items\": [\n    "
            });
            pretty_into(t, 2, &mut streamed);
            wrote = true;
        }
        streamed.push_str("\n  ],\n  \"next\": null\n}");
        assert_eq!(streamed, pretty_json(&whole));
    }

    /// Later pages of a table line up with the first, widen where a cell
    /// needs it, and carry no header.
    #[test]
    fn table_pages_share_their_widths() {
        let mut widths = Vec::new();
        let mut a = Table::new(&["ID", "NAME"]).right_align(&[0]);
        a.row(["10", "x"]);
        let mut b = Table::new(&["ID", "NAME"]).right_align(&[0]);
        b.row(["9", "longer"]);
        let text = a.render_page(&mut widths, true) + &b.render_page(&mut widths, false);
        assert_eq!(text, "ID  NAME\n10  x\n 9  longer\n");
    }

    use super::*;
    use serde_json::Value;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["ID", "STATE", "NAME"]).right_align(&[0]);
        t.row(["1", "running", "train"]);
        t.row(["12", "queued", "x"]);
        assert_eq!(
            t.render(),
            "ID  STATE    NAME\n 1  running  train\n12  queued   x\n"
        );
    }

    #[test]
    fn table_counts_characters_not_bytes() {
        let mut t = Table::new(&["A", "B"]);
        t.row(["2×h100", "x"]);
        t.row(["ab", "y"]);
        assert_eq!(t.render(), "A       B\n2×h100  x\nab      y\n");
    }

    #[test]
    fn table_handles_ragged_and_empty() {
        let t = Table::new(&["ID", "NAME"]);
        assert_eq!(t.render(), "ID  NAME\n");
        let mut b = Table::bare();
        b.row(["id:", "12"]);
        b.row(["command:", "python train.py", "extra"]);
        b.row(["x:"]);
        assert_eq!(
            b.render(),
            "id:       12\ncommand:  python train.py  extra\nx:\n"
        );
        assert_eq!(Table::bare().render(), "");
    }

    #[test]
    fn truncation() {
        assert_eq!(truncate("hello", 5), "hello");
        assert_eq!(truncate("hello world", 6), "hello…");
        assert_eq!(truncate("a\nb", 5), "a b");
        assert_eq!(truncate("héllo", 3), "hé…");
        assert_eq!(truncate("abc", 0), "");
    }

    #[test]
    fn pretty_json_keeps_order_and_numbers() {
        let raw = r#"{"z":1,"a":[1.50,2],"s":"a,b:{\"c\"}","e":{},"l":[ ],"n":null}"#;
        let want = "{\n  \"z\": 1,\n  \"a\": [\n    1.50,\n    2\n  ],\n  \
                    \"s\": \"a,b:{\\\"c\\\"}\",\n  \"e\": {},\n  \"l\": [],\n  \"n\": null\n}";
        assert_eq!(pretty_json(raw), want);
        // Same value as the input.
        let a: Value = serde_json::from_str(raw).unwrap();
        let b: Value = serde_json::from_str(&pretty_json(raw)).unwrap();
        assert_eq!(a, b);
        // Already pretty input is re-indented the same way.
        assert_eq!(pretty_json(&pretty_json(raw)), want);
        assert_eq!(pretty_json(" 42 "), "42");
    }

    #[test]
    fn items_of_list_answers() {
        let raw = r#"{"x":"items","items":[{"b":1,"a":[2]}, {"s":"]\"["}],"next":"items"}"#;
        assert_eq!(items_text(raw), Some(r#"{"b":1,"a":[2]}, {"s":"]\"["}"#));
        assert_eq!(items_text(r#"{"next":null,"items":[ ]}"#), Some(" "));
        assert_eq!(items_text(r#"{"a":{"items":[1]}}"#), None);
        assert_eq!(items_text(r#"{"items":null}"#), None);
        assert_eq!(items_text("[1]"), None);
    }

    #[test]
    fn times_and_numbers() {
        assert_eq!(
            short_time_str("2026-11-21T09:30:00.123Z"),
            "2026-11-21T09:30:00Z"
        );
        assert_eq!(
            short_time_str("2026-11-21T09:30:00.5+01:00"),
            "2026-11-21T09:30:00+01:00"
        );
        assert_eq!(
            short_time_str("2026-11-21T09:30:00Z"),
            "2026-11-21T09:30:00Z"
        );
    }
}
