//! `triplink members import FILE`: bulk-load members into the members table.
//!
//! Accepted files (see `cli/README.md`):
//! * a JSON array of member objects (the sandbox's members file);
//! * JSON Lines, one member object per line;
//! * CSV with the header `memberId,loyaltyNumber,firstName,lastName,emails,status`,
//!   e-mails separated by `;`.
//!
//! Member objects are camelCase: `memberId`, `loyaltyNumber` (or null), `firstName`,
//! `lastName`, `emails` (array), `status` (`active`, `closed`, `locked`, `unverified`);
//! other fields are ignored. Every record is validated before anything is written; one
//! invalid record and nothing is imported. Messages name records by line and never quote
//! names, loyalty numbers or e-mail addresses.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::Path;

use clap::ValueEnum;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::{Map, Value};
use triplink_shared::matching::{Member, MemberStatus};
use triplink_shared::members::{DirectoryError, DynamoMemberDirectory};
use triplink_shared::store::layout::members::EMAIL_POINTER_PREFIX;

use crate::output::{fields, Render, Table};
use crate::CliError;

/// At most this many validation errors are listed.
pub const MAX_LISTED_ERRORS: usize = 20;
/// The most distinct e-mail addresses one member may have (one transaction).
pub const MAX_EMAILS: usize = 99;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// From the file name (.csv, .jsonl/.ndjson, .json), else from the content.
    Auto,
    /// A JSON array of member objects.
    Json,
    /// JSON Lines: one member object per line.
    Jsonl,
    /// CSV with a header line.
    Csv,
}

/// Where the members go.
pub trait MemberSink: Send + Sync {
    fn put_member(
        &self,
        member: &Member,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;
}

impl MemberSink for DynamoMemberDirectory {
    fn put_member(
        &self,
        member: &Member,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send {
        DynamoMemberDirectory::put_member(self, member)
    }
}

/// A valid record and where it came from.
#[derive(Debug, Clone)]
pub struct Record {
    /// 1-based position among the file's records.
    pub record: usize,
    /// 1-based line where the record starts.
    pub line: usize,
    pub member: Member,
}

/// An invalid record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invalid {
    pub record: Option<usize>,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.record, self.line) {
            (Some(record), Some(line)) => write!(f, "record {record} (line {line})")?,
            (None, Some(line)) => write!(f, "line {line}")?,
            (Some(record), None) => write!(f, "record {record}")?,
            (None, None) => f.write_str("file")?,
        }
        write!(f, ": {}", self.message)
    }
}

/// The file's records: all valid, or the problems found.
#[derive(Debug, Default)]
pub struct Parsed {
    pub records: usize,
    pub valid: Vec<Record>,
    pub invalid: Vec<Invalid>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Byte offsets of the elements of a top-level JSON array.
fn array_element_offsets(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut depth, mut in_string, mut escaped, mut expect) = (0i64, false, false, false);
    for (i, b) in text.bytes().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        if expect && !b.is_ascii_whitespace() {
            if b != b']' {
                out.push(i);
            }
            expect = false;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth == 1 && b == b'[' {
                    expect = true;
                }
            }
            b']' | b'}' => depth -= 1,
            b',' if depth == 1 => expect = true,
            _ => {}
        }
    }
    out
}

fn text_field(
    object: &Map<String, Value>,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    match object.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => {
            problems.push(format!("{key} must be a string"));
            None
        }
    }
}

/// A member from one JSON object (or a CSV row turned into one), or its problems.
pub fn member_from_json(value: &Value) -> Result<Member, Vec<String>> {
    let Some(object) = value.as_object() else {
        return Err(vec!["not a JSON object".into()]);
    };
    let mut problems = Vec::new();
    let member_id = text_field(object, "memberId", &mut problems);
    match &member_id {
        None if !problems.iter().any(|p| p.starts_with("memberId")) => {
            problems.push("memberId is missing".into())
        }
        Some(id) if id.starts_with(EMAIL_POINTER_PREFIX) => problems.push(format!(
            "memberId must not start with {EMAIL_POINTER_PREFIX:?}"
        )),
        _ => {}
    }
    let loyalty_number = text_field(object, "loyaltyNumber", &mut problems);
    let first_name = text_field(object, "firstName", &mut problems);
    let last_name = text_field(object, "lastName", &mut problems);
    if last_name.is_none() && !problems.iter().any(|p| p.starts_with("lastName")) {
        problems.push("lastName is missing".into());
    }
    let mut emails = Vec::new();
    match object.get("emails") {
        None | Some(Value::Null) => {}
        Some(Value::Array(values)) => {
            for (i, value) in values.iter().enumerate() {
                match value {
                    Value::String(email) => {
                        let email = email.trim();
                        if email.is_empty() {
                            continue;
                        }
                        if !email.contains('@') {
                            problems
                                .push(format!("e-mail {} is not an e-mail address (no @)", i + 1));
                        }
                        emails.push(email.to_owned());
                    }
                    _ => problems.push(format!("e-mail {} must be a string", i + 1)),
                }
            }
            let distinct: BTreeSet<String> = emails.iter().map(|e| e.to_lowercase()).collect();
            if distinct.len() > MAX_EMAILS {
                problems.push(format!(
                    "{} e-mail addresses; at most {MAX_EMAILS} are supported",
                    distinct.len()
                ));
            }
        }
        Some(_) => problems.push("emails must be an array of strings".into()),
    }
    let status = match object.get("status") {
        None | Some(Value::Null) => {
            problems.push("status is missing".into());
            None
        }
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "active" => Some(MemberStatus::Active),
            "closed" => Some(MemberStatus::Closed),
            "locked" => Some(MemberStatus::Locked),
            "unverified" => Some(MemberStatus::Unverified),
            other => {
                problems.push(format!(
                    "status {other:?} is not one of active, closed, locked, unverified"
                ));
                None
            }
        },
        Some(_) => {
            problems.push("status must be a string".into());
            None
        }
    };
    match (member_id, last_name, status, problems.is_empty()) {
        (Some(member_id), Some(last_name), Some(status), true) => Ok(Member {
            member_id,
            loyalty_number,
            first_name,
            last_name,
            emails,
            status,
        }),
        _ => Err(problems),
    }
}

impl Parsed {
    fn add(&mut self, record: usize, line: usize, value: &Value) {
        self.records += 1;
        match member_from_json(value) {
            Ok(member) => self.valid.push(Record {
                record,
                line,
                member,
            }),
            Err(problems) => self.invalid.push(Invalid {
                record: Some(record),
                line: Some(line),
                message: problems.join("; "),
            }),
        }
    }

    fn file_error(message: String, line: Option<usize>) -> Self {
        Self {
            invalid: vec![Invalid {
                record: None,
                line,
                message,
            }],
            ..Self::default()
        }
    }

    /// Duplicate member ids: the later records are invalid.
    fn check_duplicates(&mut self) {
        let mut first: HashMap<String, usize> = HashMap::new();
        let mut duplicates = Vec::new();
        self.valid.retain(|r| match first.get(&r.member.member_id) {
            Some(line) => {
                duplicates.push(Invalid {
                    record: Some(r.record),
                    line: Some(r.line),
                    message: format!(
                        "duplicate memberId {:?} (first on line {line})",
                        r.member.member_id
                    ),
                });
                false
            }
            None => {
                first.insert(r.member.member_id.clone(), r.line);
                true
            }
        });
        self.invalid.extend(duplicates);
        self.invalid
            .sort_by_key(|i| (i.line.unwrap_or(0), i.record.unwrap_or(0)));
    }
}

/// Parse a JSON array of member objects.
pub fn parse_json_array(text: &str) -> Parsed {
    let values: Vec<Value> = match serde_json::from_str(text) {
        Ok(values) => values,
        Err(e) => {
            return Parsed::file_error(
                format!("not a JSON array of member objects: {}", strip_position(&e)),
                Some(e.line()),
            )
        }
    };
    let offsets = array_element_offsets(text);
    let mut parsed = Parsed::default();
    for (i, value) in values.iter().enumerate() {
        let line = offsets.get(i).map(|o| line_of(text, *o)).unwrap_or(0);
        parsed.add(i + 1, line, value);
    }
    parsed
}

fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// Parse JSON Lines: one member object per non-blank line.
pub fn parse_json_lines(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record = parsed.records + 1;
        match serde_json::from_str::<Value>(line) {
            Ok(value) => parsed.add(record, i + 1, &value),
            Err(e) => {
                parsed.records += 1;
                parsed.invalid.push(Invalid {
                    record: Some(record),
                    line: Some(i + 1),
                    message: format!("not valid JSON: {}", strip_position(&e)),
                });
            }
        }
    }
    parsed
}

/// The CSV columns, as named in the header.
const CSV_COLUMNS: [&str; 6] = [
    "memberId",
    "loyaltyNumber",
    "firstName",
    "lastName",
    "emails",
    "status",
];

/// Parse CSV with a header line; e-mails separated by `;`.
pub fn parse_csv(text: &str) -> Parsed {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(headers) => headers.clone(),
        Err(e) => return Parsed::file_error(format!("cannot read the CSV header: {e}"), Some(1)),
    };
    let mut index: HashMap<&'static str, usize> = HashMap::new();
    for (i, name) in headers.iter().enumerate() {
        if let Some(column) = CSV_COLUMNS
            .iter()
            .find(|c| c.eq_ignore_ascii_case(name.trim()))
        {
            index.insert(column, i);
        }
    }
    let missing: Vec<&str> = ["memberId", "lastName", "status"]
        .into_iter()
        .filter(|c| !index.contains_key(c))
        .collect();
    if !missing.is_empty() {
        return Parsed::file_error(
            format!(
                "the CSV header lacks {}; expected {}",
                missing.join(", "),
                CSV_COLUMNS.join(",")
            ),
            Some(1),
        );
    }
    let mut parsed = Parsed::default();
    for row in reader.records() {
        let record = parsed.records + 1;
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                parsed.records += 1;
                let line = e.position().map(|p| p.line() as usize);
                parsed.invalid.push(Invalid {
                    record: Some(record),
                    line,
                    message: format!("unreadable CSV row: {}", csv_error_kind(&e)),
                });
                continue;
            }
        };
        let line = row.position().map(|p| p.line() as usize).unwrap_or(0);
        let cell = |column: &str| -> Value {
            index
                .get(column)
                .and_then(|i| row.get(*i))
                .filter(|v| !v.is_empty())
                .map(|v| Value::String(v.to_owned()))
                .unwrap_or(Value::Null)
        };
        let emails: Vec<Value> = index
            .get("emails")
            .and_then(|i| row.get(*i))
            .map(|cell| {
                cell.split(';')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(|e| Value::String(e.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let mut object = Map::new();
        for column in [
            "memberId",
            "loyaltyNumber",
            "firstName",
            "lastName",
            "status",
        ] {
            object.insert(column.to_owned(), cell(column));
        }
        object.insert("emails".to_owned(), Value::Array(emails));
        parsed.add(record, line, &Value::Object(object));
    }
    parsed
}

fn csv_error_kind(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields where the header has {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".into(),
        _ => "malformed CSV".into(),
    }
}

/// Which format a file is in.
pub fn detect(path: &Path, text: &str, format: Format) -> Format {
    if format != Format::Auto {
        return format;
    }
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let first = text.trim_start().chars().next();
    match extension.as_deref() {
        Some("csv") => Format::Csv,
        Some("jsonl" | "ndjson") => Format::Jsonl,
        _ => match first {
            Some('[') => Format::Json,
            Some('{') => Format::Jsonl,
            _ => Format::Csv,
        },
    }
}

/// Parse and validate a whole file's text.
pub fn parse(text: &str, format: Format) -> Parsed {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parsed = match format {
        Format::Json | Format::Auto => parse_json_array(text),
        Format::Jsonl => parse_json_lines(text),
        Format::Csv => parse_csv(text),
    };
    parsed.check_duplicates();
    if parsed.records == 0 && parsed.invalid.is_empty() {
        parsed.invalid.push(Invalid {
            record: None,
            line: None,
            message: "the file holds no member records".into(),
        });
    }
    parsed
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedMember {
    pub member_id: String,
    pub line: usize,
    pub error: String,
}

/// What an import did.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub file: String,
    pub format: Format,
    pub table: String,
    pub dry_run: bool,
    pub records: usize,
    pub imported: usize,
    /// Valid records not written (a dry run, or an invalid file).
    pub skipped: usize,
    pub failed: Vec<FailedMember>,
    pub invalid_count: usize,
    /// The first invalid records (at most 20).
    pub invalid: Vec<Invalid>,
    /// Members the table holds after the import, as written to its manifest (the
    /// worker's health gate reads it); `None` when nothing was written.
    pub manifest_members: Option<u64>,
    /// Why the manifest could not be written (the import then does not succeed).
    pub manifest_error: Option<String>,
}

pub struct ImportOptions {
    pub dry_run: bool,
    pub format: Format,
    pub concurrency: usize,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

fn progress_bar(total: usize, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} importing [{bar:40}] {pos}/{len} members ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Validate `text` and, if every record is valid, write the members (`concurrency` at
/// once). A member that fails to write is reported; the others are still written.
pub async fn import<S: MemberSink>(
    sink: &S,
    text: &str,
    file: &str,
    table: &str,
    options: &ImportOptions,
) -> ImportReport {
    let format = detect(Path::new(file), text, options.format);
    let parsed = parse(text, format);
    let mut report = ImportReport {
        file: file.to_owned(),
        format,
        table: table.to_owned(),
        dry_run: options.dry_run,
        records: parsed.records,
        imported: 0,
        skipped: 0,
        failed: Vec::new(),
        invalid_count: parsed.invalid.len(),
        invalid: parsed
            .invalid
            .iter()
            .take(MAX_LISTED_ERRORS)
            .cloned()
            .collect(),
        manifest_members: None,
        manifest_error: None,
    };
    if !parsed.invalid.is_empty() || options.dry_run {
        report.skipped = parsed.valid.len();
        return report;
    }
    let bar = progress_bar(parsed.valid.len(), options.progress);
    let results: Vec<(Record, Result<(), DirectoryError>)> = futures::stream::iter(parsed.valid)
        .map(|record| {
            let bar = &bar;
            async move {
                let result = sink.put_member(&record.member).await;
                bar.inc(1);
                (record, result)
            }
        })
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    for (record, result) in results {
        match result {
            Ok(()) => report.imported += 1,
            Err(e) => report.failed.push(FailedMember {
                member_id: record.member.member_id,
                line: record.line,
                error: e.to_string(),
            }),
        }
    }
    report.failed.sort_by_key(|f| f.line);
    report
}

/// Read `path` and [`import`] it into the directory's table.
pub async fn import_file(
    directory: &DynamoMemberDirectory,
    path: &Path,
    options: &ImportOptions,
) -> Result<ImportReport, CliError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError(format!("cannot read {}: {e}", path.display())))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| CliError(format!("{} is not UTF-8 text", path.display())))?;
    let mut report = import(
        directory,
        &text,
        &path.display().to_string(),
        &directory.table,
        options,
    )
    .await;
    if report.invalid_count == 0 && !options.dry_run {
        // The manifest counts what the table holds now, whatever failed above.
        match directory.refresh_manifest(chrono::Utc::now()).await {
            Ok(members) => report.manifest_members = Some(members),
            Err(e) => report.manifest_error = Some(e.to_string()),
        }
    }
    Ok(report)
}

impl Render for ImportReport {
    fn render(&self) -> String {
        let mut out = String::new();
        if self.invalid_count > 0 {
            out.push_str(&format!(
                "{}: {} invalid record(s); nothing imported.\n",
                self.file, self.invalid_count
            ));
            for invalid in &self.invalid {
                out.push_str(&format!("  {invalid}\n"));
            }
            if self.invalid_count > self.invalid.len() {
                out.push_str(&format!(
                    "  ... and {} more\n",
                    self.invalid_count - self.invalid.len()
                ));
            }
            return out;
        }
        out.push_str(&fields(&[
            (
                "file",
                format!("{} ({:?})", self.file, self.format).to_lowercase(),
            ),
            ("table", self.table.clone()),
            ("records", self.records.to_string()),
            ("imported", self.imported.to_string()),
            (
                "skipped",
                format!(
                    "{}{}",
                    self.skipped,
                    if self.dry_run { " (dry run)" } else { "" }
                ),
            ),
            ("failed", self.failed.len().to_string()),
            (
                "directory",
                match (&self.manifest_members, &self.manifest_error) {
                    (Some(members), _) => format!("{members} members (manifest written)"),
                    (None, Some(error)) => format!("manifest NOT written: {error}"),
                    (None, None) => "manifest unchanged".to_owned(),
                },
            ),
        ]));
        if !self.failed.is_empty() {
            let mut table = Table::new(["line", "member id", "error"]);
            for failed in &self.failed {
                table.row([
                    failed.line.to_string(),
                    failed.member_id.clone(),
                    failed.error.clone(),
                ]);
            }
            out.push('\n');
            out.push_str(&table.render());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_elements_are_found_with_their_lines() {
        let text = "[\n  {\"a\": \"x,]\\\"\"},\n  {\"b\": [1, 2]}\n  ,\n\n {}\n]";
        let offsets = array_element_offsets(text);
        let lines: Vec<usize> = offsets.iter().map(|o| line_of(text, *o)).collect();
        assert_eq!(lines, [2, 3, 6]);
        assert!(array_element_offsets("[]").is_empty());
    }

    #[test]
    fn validation_names_every_problem_without_quoting_personal_data() {
        let problems = member_from_json(&serde_json::json!({
            "loyaltyNumber": 12, "emails": ["secret.example.com"], "status": "gone"
        }))
        .unwrap_err();
        let text = problems.join("; ");
        assert!(text.contains("memberId is missing"), "{text}");
        assert!(text.contains("lastName is missing"), "{text}");
        assert!(text.contains("no @"), "{text}");
        assert!(text.contains("\"gone\""), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}
