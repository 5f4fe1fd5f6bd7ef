//! Workload readers and generators.
//!
//! Every reader returns jobs sorted by submission time (stable for ties) or a
//! [`WorkloadError`] naming the file, line and field; none panics on bad input.

pub mod alibaba;
pub mod gavel;
pub mod mixed;
pub mod native;
pub mod requests;
pub mod sacct;
pub mod swf;
pub mod synth;
pub mod throughputs;

use std::fmt;

/// Longest field name an error quotes, characters.
pub const MAX_FIELD_CHARS: usize = 64;
/// Longest message of an error, characters.
pub const MAX_MESSAGE_CHARS: usize = 512;

/// An error in a workload or throughput file.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadError {
    /// File the error is in.
    pub file: String,
    /// 1-based line, 0 when the error is not tied to a line.
    pub line: usize,
    /// Field (column) name, empty when not tied to a field.
    pub field: String,
    pub message: String,
}

impl WorkloadError {
    /// The field and the message are cut to a bounded excerpt: they may
    /// quote untrusted input of any size (a 10-million-tab line).
    pub fn new(file: &str, line: usize, field: &str, message: impl Into<String>) -> WorkloadError {
        use gigafab_core::time::excerpt;
        WorkloadError {
            file: excerpt(file, 256),
            line,
            field: excerpt(field, MAX_FIELD_CHARS),
            message: excerpt(&message.into(), MAX_MESSAGE_CHARS),
        }
    }
}

impl fmt::Display for WorkloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.field.is_empty() {
            write!(f, ": field `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for WorkloadError {}

/// A reader of CSV rows without a fixed header or width (the readers
/// check both themselves, to name the line and the column).
pub(crate) fn csv_rows(text: &str) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes())
}

/// A header row's columns: where each of `required` is (names matched
/// trimmed and without case), and the header's width. A missing one is an
/// error naming it, with `needs` saying what the format needs.
pub(crate) fn header_columns(
    record: &csv::StringRecord,
    required: &[&str],
    file: &str,
    line: usize,
    needs: &str,
) -> Result<(Vec<usize>, usize), WorkloadError> {
    let names: Vec<String> = record
        .iter()
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let mut cols = Vec::with_capacity(required.len());
    for &name in required {
        let i = names.iter().position(|n| n == name).ok_or_else(|| {
            WorkloadError::new(
                file,
                line,
                name,
                format!("missing column `{name}` ({needs})"),
            )
        })?;
        cols.push(i);
    }
    Ok((cols, names.len()))
}

/// A data row must be as wide as its header: else an error naming the
/// first required column it lacks.
pub(crate) fn check_width(
    record: &csv::StringRecord,
    (cols, width): (&[usize], usize),
    required: &[&str],
    file: &str,
    line: usize,
) -> Result<(), WorkloadError> {
    if record.len() == width {
        return Ok(());
    }
    let missing = cols
        .iter()
        .enumerate()
        .find(|&(_, &i)| i >= record.len())
        .map(|(k, _)| required[k]);
    Err(width_error(file, line, record.len(), width, missing))
}

/// Reads the next non-blank CSV row into `record`; returns its 1-based line,
/// or `None` at the end of the input.
pub(crate) fn next_row<R: std::io::Read>(
    rdr: &mut csv::Reader<R>,
    record: &mut csv::StringRecord,
    file: &str,
) -> Result<Option<usize>, WorkloadError> {
    loop {
        let more = rdr.read_record(record).map_err(|e| {
            let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
            WorkloadError::new(file, line, "", format!("malformed CSV: {e}"))
        })?;
        if !more {
            return Ok(None);
        }
        let blank = record.len() <= 1 && record.iter().all(|c| c.trim().is_empty());
        if !blank {
            return Ok(Some(
                record.position().map(|p| p.line() as usize).unwrap_or(0),
            ));
        }
    }
}

/// The error for a CSV row whose cell count differs from the header's: it
/// names the first missing column (`missing`), or the first extra cell.
pub(crate) fn width_error(
    file: &str,
    line: usize,
    cells: usize,
    width: usize,
    missing: Option<&str>,
) -> WorkloadError {
    let field = if cells < width {
        missing.unwrap_or("").to_string()
    } else {
        format!("cell {}", width + 1)
    };
    WorkloadError::new(
        file,
        line,
        &field,
        format!("row has {cells} cells but the header has {width} columns"),
    )
}

/// Workload file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Native,
    Swf,
    Alibaba,
    Gavel,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "native" => Some(Format::Native),
            "swf" => Some(Format::Swf),
            "alibaba" => Some(Format::Alibaba),
            "gavel" => Some(Format::Gavel),
            _ => None,
        }
    }
}
