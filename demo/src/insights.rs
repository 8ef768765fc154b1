//! CloudWatch Logs Insights, the part of its query language that the template's saved
//! queries use, run over log events captured locally: the saved queries are tested
//! against what the functions really print (`tests/insights_queries.rs`).
//!
//! * [`LogEvent`]: one log event as CloudWatch keeps it (`@timestamp`, `@log`,
//!   `@message`); a JSON message's fields are discovered as Insights discovers them
//!   (nested objects by dotted names: `span.requestId`, `_aws.Timestamp`; array
//!   elements by index).
//! * [`Query::parse`]: comments (`#`), `fields` (fields and `coalesce(…) as alias`),
//!   `filter` (`=`, `!=`, `and`, `or`, `not`, `ispresent(x)`, parentheses, string and
//!   number literals), `stats count(*) as x by y, …`, `sort x asc|desc`, `limit n`.
//!   Anything else is an error, never ignored.
//! * [`LogCapture`]: a file of captured events (`triplink-demo --capture-logs FILE`).
//!
//! Semantics kept: a comparison with a missing field is false (`!=` too), so the event
//! is filtered out; JSON `null` counts as missing; `=` compares numbers as numbers and
//! anything else as text; `sort` is stable and puts missing values last; `stats`
//! groups in order of first appearance; without `fields` the columns are `@timestamp`
//! and `@message`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use triplink_shared::telemetry::LineSink;

/// The stack name `triplink-demo` plays.
pub const DEMO_STACK: &str = "triplink-demo";

/// A function's log group, as the template names it (`/aws/lambda/${AWS::StackName}-poller`).
pub fn log_group_name(stack: &str, function: &str) -> String {
    format!("/aws/lambda/{stack}-{function}")
}

/// One log event as CloudWatch stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEvent {
    /// `@timestamp`: milliseconds since the epoch, when the line was printed.
    #[serde(rename = "@timestamp")]
    pub timestamp_ms: i64,
    /// `@log`: the log group.
    #[serde(rename = "@log")]
    pub log: String,
    /// `@message`: the line as printed.
    #[serde(rename = "@message")]
    pub message: String,
}

/// A query that could not be parsed or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Logs Insights query: {0}")]
pub struct QueryError(String);

fn err<T>(message: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError(message.into()))
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Num(f64),
    Pipe,
    Open,
    Close,
    Comma,
    Eq,
    Ne,
    Star,
}

fn tokenize(text: &str) -> Result<Vec<Token>, QueryError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '|' => {
                tokens.push(Token::Pipe);
                i += 1;
            }
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            '*' => {
                tokens.push(Token::Star);
                i += 1;
            }
            '=' => {
                tokens.push(Token::Eq);
                i += 1;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                tokens.push(Token::Ne);
                i += 2;
            }
            '"' | '\'' => {
                let quote = c;
                let mut value = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return err("a string literal is not closed"),
                        Some('\\') => {
                            match chars.get(i + 1) {
                                Some(escaped) => value.push(*escaped),
                                None => return err("a string literal is not closed"),
                            }
                            i += 2;
                        }
                        Some(&q) if q == quote => {
                            i += 1;
                            break;
                        }
                        Some(other) => {
                            value.push(*other);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token::Str(value));
            }
            c if c.is_ascii_digit() => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                match text.parse() {
                    Ok(n) => tokens.push(Token::Num(n)),
                    Err(_) => return err(format!("not a number: {text}")),
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == '@' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '.' | '@'))
                {
                    i += 1;
                }
                tokens.push(Token::Word(chars[start..i].iter().collect()));
            }
            other => return err(format!("unsupported character {other:?}")),
        }
    }
    Ok(tokens)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    Coalesce,
    IsPresent,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Field(String),
    Str(String),
    Num(f64),
    Call(Function, Vec<Expr>),
    Eq(Box<Expr>, Box<Expr>),
    Ne(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

impl Expr {
    fn is_boolean(&self) -> bool {
        matches!(
            self,
            Self::Call(Function::IsPresent, _)
                | Self::Eq(..)
                | Self::Ne(..)
                | Self::And(..)
                | Self::Or(..)
                | Self::Not(..)
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Command {
    Fields(Vec<(Expr, String)>),
    Filter(Expr),
    /// `count(*)` aliases, then the `by` fields.
    Stats {
        counts: Vec<String>,
        by: Vec<String>,
    },
    Sort {
        key: Expr,
        descending: bool,
    },
    Limit(usize),
}

const KEYWORDS: &[&str] = &[
    "fields", "filter", "stats", "sort", "limit", "as", "by", "and", "or", "not", "asc", "desc",
];

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w == word)
    }

    fn expect(&mut self, token: Token) -> Result<(), QueryError> {
        match self.next() {
            Some(t) if t == token => Ok(()),
            other => err(format!("expected {token:?}, found {other:?}")),
        }
    }

    fn word(&mut self) -> Result<String, QueryError> {
        match self.next() {
            Some(Token::Word(w)) => Ok(w),
            other => err(format!("expected a name, found {other:?}")),
        }
    }

    fn field_name(&mut self) -> Result<String, QueryError> {
        let name = self.word()?;
        if KEYWORDS.contains(&name.as_str()) {
            return err(format!("expected a field name, found the keyword {name}"));
        }
        Ok(name)
    }

    fn command(&mut self) -> Result<Command, QueryError> {
        let name = self.word()?;
        match name.as_str() {
            "fields" => {
                let mut projections = Vec::new();
                loop {
                    let expr = self.expr()?;
                    let name = if self.is_word("as") {
                        self.at += 1;
                        self.field_name()?
                    } else {
                        match &expr {
                            Expr::Field(f) => f.clone(),
                            other => return err(format!("{other:?} needs an alias (`as name`)")),
                        }
                    };
                    projections.push((expr, name));
                    if self.peek() != Some(&Token::Comma) {
                        break;
                    }
                    self.at += 1;
                }
                Ok(Command::Fields(projections))
            }
            "filter" => {
                let expr = self.expr()?;
                if !expr.is_boolean() {
                    return err(format!("filter needs a condition, not {expr:?}"));
                }
                Ok(Command::Filter(expr))
            }
            "stats" => {
                let mut counts = Vec::new();
                loop {
                    let function = self.word()?;
                    if function != "count" {
                        return err(format!("unsupported aggregate {function}"));
                    }
                    self.expect(Token::Open)?;
                    self.expect(Token::Star)?;
                    self.expect(Token::Close)?;
                    if !self.is_word("as") {
                        return err("count(*) needs an alias (`as name`)");
                    }
                    self.at += 1;
                    counts.push(self.field_name()?);
                    if self.peek() != Some(&Token::Comma) {
                        break;
                    }
                    self.at += 1;
                }
                let mut by = Vec::new();
                if self.is_word("by") {
                    self.at += 1;
                    loop {
                        by.push(self.field_name()?);
                        if self.peek() != Some(&Token::Comma) {
                            break;
                        }
                        self.at += 1;
                    }
                }
                Ok(Command::Stats { counts, by })
            }
            "sort" => {
                let key = self.expr()?;
                let descending = match self.next() {
                    Some(Token::Word(w)) if w == "asc" => false,
                    Some(Token::Word(w)) if w == "desc" => true,
                    other => return err(format!("sort needs asc or desc, found {other:?}")),
                };
                Ok(Command::Sort { key, descending })
            }
            "limit" => match self.next() {
                Some(Token::Num(n)) if n >= 1.0 && n.fract() == 0.0 => {
                    Ok(Command::Limit(n as usize))
                }
                other => err(format!(
                    "limit needs a positive whole number, found {other:?}"
                )),
            },
            other => err(format!("unsupported command {other}")),
        }
    }

    fn expr(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.and()?;
        while self.is_word("or") {
            self.at += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.not()?;
        while self.is_word("and") {
            self.at += 1;
            let right = self.not()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, QueryError> {
        if self.is_word("not") {
            self.at += 1;
            let inner = self.not()?;
            if !inner.is_boolean() {
                return err(format!("not needs a condition, not {inner:?}"));
            }
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, QueryError> {
        let left = self.primary()?;
        match self.peek() {
            Some(Token::Eq) => {
                self.at += 1;
                Ok(Expr::Eq(Box::new(left), Box::new(self.primary()?)))
            }
            Some(Token::Ne) => {
                self.at += 1;
                Ok(Expr::Ne(Box::new(left), Box::new(self.primary()?)))
            }
            _ => Ok(left),
        }
    }

    fn primary(&mut self) -> Result<Expr, QueryError> {
        match self.next() {
            Some(Token::Str(s)) => Ok(Expr::Str(s)),
            Some(Token::Num(n)) => Ok(Expr::Num(n)),
            Some(Token::Open) => {
                let inner = self.expr()?;
                self.expect(Token::Close)?;
                Ok(inner)
            }
            Some(Token::Word(w)) if self.peek() == Some(&Token::Open) => {
                let function = match w.as_str() {
                    "coalesce" => Function::Coalesce,
                    "ispresent" => Function::IsPresent,
                    other => return err(format!("unsupported function {other}")),
                };
                self.at += 1;
                let mut args = Vec::new();
                loop {
                    args.push(self.expr()?);
                    match self.next() {
                        Some(Token::Comma) => continue,
                        Some(Token::Close) => break,
                        other => return err(format!("expected , or ), found {other:?}")),
                    }
                }
                match (function, args.len()) {
                    (Function::IsPresent, 1) => {}
                    (Function::IsPresent, n) => {
                        return err(format!("ispresent takes one field, not {n}"))
                    }
                    (Function::Coalesce, _) => {}
                }
                Ok(Expr::Call(function, args))
            }
            Some(Token::Word(w)) if !KEYWORDS.contains(&w.as_str()) => Ok(Expr::Field(w)),
            other => err(format!("expected a value, found {other:?}")),
        }
    }
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    commands: Vec<Command>,
}

/// A query's result: its columns and one map per row (a missing value is absent).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<BTreeMap<String, Value>>,
}

struct Row<'a> {
    event: Option<(&'a LogEvent, Option<Value>)>,
    computed: BTreeMap<String, Value>,
}

impl Row<'_> {
    fn get(&self, name: &str) -> Option<Value> {
        if let Some(v) = self.computed.get(name) {
            return Some(v.clone());
        }
        let (event, json) = self.event.as_ref()?;
        match name {
            "@timestamp" => return Some(Value::from(event.timestamp_ms)),
            "@log" => return Some(Value::from(event.log.clone())),
            "@message" => return Some(Value::from(event.message.clone())),
            _ => {}
        }
        let mut at = json.as_ref()?;
        for part in name.split('.') {
            at = match at {
                Value::Object(map) => map.get(part)?,
                Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        (!at.is_null()).then(|| at.clone())
    }

    fn eval(&self, expr: &Expr) -> Option<Value> {
        match expr {
            Expr::Field(name) => self.get(name),
            Expr::Str(s) => Some(Value::from(s.clone())),
            Expr::Num(n) => Some(Value::from(*n)),
            Expr::Call(Function::Coalesce, args) => args.iter().find_map(|a| self.eval(a)),
            Expr::Call(Function::IsPresent, args) => {
                Some(Value::Bool(args.iter().all(|a| self.eval(a).is_some())))
            }
            Expr::Eq(a, b) => Some(Value::Bool(self.compare(a, b) == Some(Ordering::Equal))),
            Expr::Ne(a, b) => Some(Value::Bool(matches!(
                self.compare(a, b),
                Some(Ordering::Less | Ordering::Greater)
            ))),
            Expr::And(a, b) => Some(Value::Bool(self.holds(a) && self.holds(b))),
            Expr::Or(a, b) => Some(Value::Bool(self.holds(a) || self.holds(b))),
            Expr::Not(a) => Some(Value::Bool(!self.holds(a))),
        }
    }

    fn holds(&self, expr: &Expr) -> bool {
        self.eval(expr) == Some(Value::Bool(true))
    }

    /// `None` when either side is missing.
    fn compare(&self, a: &Expr, b: &Expr) -> Option<Ordering> {
        Some(order(&self.eval(a)?, &self.eval(b)?))
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn order(a: &Value, b: &Value) -> Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => text(a).cmp(&text(b)),
    }
}

impl Query {
    /// Parse a query (a saved query's `QueryString`).
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        let mut parser = Parser {
            tokens: tokenize(text)?,
            at: 0,
        };
        let mut commands = Vec::new();
        if parser.peek() == Some(&Token::Pipe) {
            parser.at += 1;
        }
        loop {
            commands.push(parser.command()?);
            match parser.next() {
                None => break,
                Some(Token::Pipe) => continue,
                Some(other) => return err(format!("unexpected {other:?} after a command")),
            }
        }
        Ok(Self { commands })
    }

    /// Run the query over `events` (all of the query's log groups, in any order).
    pub fn run(&self, events: &[LogEvent]) -> QueryResult {
        let mut rows: Vec<Row<'_>> = events
            .iter()
            .map(|e| Row {
                event: Some((e, serde_json::from_str::<Value>(&e.message).ok())),
                computed: BTreeMap::new(),
            })
            .collect();
        let mut columns: Vec<String> = Vec::new();
        for command in &self.commands {
            match command {
                Command::Fields(projections) => {
                    for row in &mut rows {
                        for (expr, name) in projections {
                            if let Some(v) = row.eval(expr) {
                                row.computed.insert(name.clone(), v);
                            }
                        }
                    }
                    for (_, name) in projections {
                        if !columns.contains(name) {
                            columns.push(name.clone());
                        }
                    }
                }
                Command::Filter(condition) => rows.retain(|row| row.holds(condition)),
                Command::Stats { counts, by } => {
                    let mut groups: Vec<(Vec<Option<Value>>, u64)> = Vec::new();
                    for row in &rows {
                        let key: Vec<Option<Value>> = by.iter().map(|f| row.get(f)).collect();
                        match groups.iter_mut().find(|(k, _)| *k == key) {
                            Some((_, n)) => *n += 1,
                            None => groups.push((key, 1)),
                        }
                    }
                    rows = groups
                        .into_iter()
                        .map(|(key, n)| {
                            let mut computed = BTreeMap::new();
                            for (name, value) in by.iter().zip(key) {
                                if let Some(value) = value {
                                    computed.insert(name.clone(), value);
                                }
                            }
                            for name in counts {
                                computed.insert(name.clone(), Value::from(n));
                            }
                            Row {
                                event: None,
                                computed,
                            }
                        })
                        .collect();
                    columns = by.iter().chain(counts).cloned().collect();
                }
                Command::Sort { key, descending } => {
                    rows.sort_by(|a, b| match (a.eval(key), b.eval(key)) {
                        (Some(x), Some(y)) if *descending => order(&y, &x),
                        (Some(x), Some(y)) => order(&x, &y),
                        (Some(_), None) => Ordering::Less,
                        (None, Some(_)) => Ordering::Greater,
                        (None, None) => Ordering::Equal,
                    });
                }
                Command::Limit(n) => rows.truncate(*n),
            }
        }
        if columns.is_empty() {
            columns = vec!["@timestamp".into(), "@message".into()];
        }
        let rows = rows
            .iter()
            .map(|row| {
                columns
                    .iter()
                    .filter_map(|c| row.get(c).map(|v| (c.clone(), v)))
                    .collect()
            })
            .collect();
        QueryResult { columns, rows }
    }
}

/// A file of captured log events, one JSON [`LogEvent`] per line, written as the lines
/// are printed. Each line goes to the current log group ([`LogCapture::set_log_group`]).
#[derive(Clone)]
pub struct LogCapture(Arc<Mutex<CaptureState>>);

struct CaptureState {
    group: String,
    out: std::fs::File,
}

impl LogCapture {
    pub fn create(path: &Path, group: &str) -> std::io::Result<Self> {
        Ok(Self(Arc::new(Mutex::new(CaptureState {
            group: group.to_owned(),
            out: std::fs::File::create(path)?,
        }))))
    }

    /// Where the following lines go (the function that runs now).
    pub fn set_log_group(&self, group: &str) {
        crate::lambda::lock(&self.0).group = group.to_owned();
    }

    /// Keep one printed line (an event stamped now).
    pub fn record(&self, line: &str) {
        let mut state = crate::lambda::lock(&self.0);
        let event = LogEvent {
            timestamp_ms: chrono::Utc::now().timestamp_millis(),
            log: state.group.clone(),
            message: line.to_owned(),
        };
        if let Ok(json) = serde_json::to_string(&event) {
            let _ = writeln!(state.out, "{json}");
        }
    }

    /// A sink for the log subscriber and the metrics that records every line here.
    pub fn sink(&self) -> LineSink {
        let capture = self.clone();
        LineSink::new(move |line| capture.record(line))
    }
}

/// The events of a [`LogCapture`] file.
pub fn read_events(path: &Path) -> std::io::Result<Vec<LogEvent>> {
    std::fs::read_to_string(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(std::io::Error::other))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(ms: i64, log: &str, message: Value) -> LogEvent {
        LogEvent {
            timestamp_ms: ms,
            log: log.into(),
            message: message.to_string(),
        }
    }

    fn events() -> Vec<LogEvent> {
        vec![
            event(
                3,
                "w",
                json!({"level": "INFO", "message": "request reported", "request_id": "r1", "outcome": "CRSUC",
                       "span": {"name": "Lambda runtime invoke", "requestId": "inv-1"}}),
            ),
            event(
                1,
                "w",
                json!({"_aws": {"Timestamp": 1, "CloudWatchMetrics": [{"Namespace": "TripLink"}]}, "request_id": "r1", "outcome": "CRSUC"}),
            ),
            event(
                2,
                "p",
                json!({"level": "WARN", "message": "slow", "fields": {"request_id": "r2", "outcome": "CREU1"}}),
            ),
            event(
                4,
                "w",
                json!({"level": "ERROR", "message": "boom", "outcome": null}),
            ),
            LogEvent {
                timestamp_ms: 5,
                log: "w".into(),
                message: "START RequestId: inv-1 Version: $LATEST".into(),
            },
        ]
    }

    fn run(query: &str) -> QueryResult {
        Query::parse(query).unwrap().run(&events())
    }

    #[test]
    fn fields_coalesce_nested_and_builtin_fields() {
        let result = run(
            "fields @timestamp, @log, coalesce(outcome, fields.outcome) as code, span.requestId \
                          | sort @timestamp asc",
        );
        assert_eq!(
            result.columns,
            ["@timestamp", "@log", "code", "span.requestId"]
        );
        assert_eq!(result.rows.len(), 5);
        assert_eq!(result.rows[0]["@timestamp"], 1);
        assert_eq!(result.rows[1]["code"], "CREU1");
        assert_eq!(result.rows[1]["@log"], "p");
        assert_eq!(result.rows[2]["span.requestId"], "inv-1");
        // JSON null is missing; a message that is not JSON has only the built-in fields.
        assert!(!result.rows[3].contains_key("code"));
        assert_eq!(result.rows[4].len(), 2);
    }

    #[test]
    fn filters_compare_and_combine() {
        let count = |q: &str| run(q).rows.len();
        assert_eq!(count(r#"filter level = "ERROR" or level = 'WARN'"#), 2);
        assert_eq!(
            count(r#"filter level != "INFO""#),
            2,
            "missing level is not != INFO"
        );
        assert_eq!(count("filter not ispresent(level)"), 2);
        assert_eq!(count("filter ispresent(_aws.Timestamp)"), 1);
        assert_eq!(
            count("filter _aws.CloudWatchMetrics.0.Namespace = 'TripLink'"),
            1
        );
        assert_eq!(count("filter _aws.Timestamp = 1"), 1);
        assert_eq!(
            count(r#"filter coalesce(request_id, fields.request_id) = "r2""#),
            1
        );
        assert_eq!(
            count(
                r#"filter ispresent(outcome) and not (ispresent(_aws.Timestamp) or level = "WARN")"#
            ),
            1
        );
        // `and` binds tighter than `or`.
        assert_eq!(
            count(r#"filter level = "WARN" or level = "INFO" and outcome = "x""#),
            1
        );
    }

    #[test]
    fn stats_sort_and_limit() {
        let result = run("# a comment | with a pipe\n\
             fields coalesce(outcome, fields.outcome) as code\n\
             | filter ispresent(code)\n\
             | stats count(*) as requests by code\n\
             | sort requests desc");
        assert_eq!(result.columns, ["code", "requests"]);
        assert_eq!(
            result.rows,
            [
                BTreeMap::from([
                    ("code".into(), json!("CRSUC")),
                    ("requests".into(), json!(2))
                ]),
                BTreeMap::from([
                    ("code".into(), json!("CREU1")),
                    ("requests".into(), json!(1))
                ]),
            ]
        );
        let newest = run("sort @timestamp desc | limit 2");
        assert_eq!(newest.columns, ["@timestamp", "@message"]);
        let times: Vec<_> = newest
            .rows
            .iter()
            .map(|r| r["@timestamp"].clone())
            .collect();
        assert_eq!(times, [json!(5), json!(4)]);
    }

    #[test]
    fn sort_is_stable_and_puts_missing_last() {
        let result = run("fields level | sort level asc");
        let levels: Vec<_> = result
            .rows
            .iter()
            .map(|r| r.get("level").cloned())
            .collect();
        assert_eq!(
            levels,
            [
                Some(json!("ERROR")),
                Some(json!("INFO")),
                Some(json!("WARN")),
                None,
                None
            ]
        );
        // Ties keep the events' order: the EMF line (ingested second) stays second.
        let ties = run("fields outcome | filter outcome = 'CRSUC' | sort outcome desc");
        assert_eq!(ties.rows.len(), 2);
    }

    #[test]
    fn unknown_syntax_is_an_error() {
        for query in [
            "display @message",
            "fields strlen(@message) as n",
            "fields coalesce(a, b)",
            "filter level like /ERR/",
            "filter level =~ 'x'",
            "filter level",
            "stats avg(latency_ms) as l by code",
            "stats count(*) by code",
            "sort @timestamp",
            "limit 0",
            "limit ten",
            "fields level | ",
            "filter level = \"open",
            "filter (level = 'x'",
            "fields `odd name`",
            "filter ispresent(a, b)",
            "fields level filter",
            "SOURCE 'group' | fields level",
            "parse @message 'x*y' as a, b",
        ] {
            assert!(Query::parse(query).is_err(), "{query} must not parse");
        }
    }

    #[test]
    fn a_capture_file_reads_back_as_events() {
        let dir = std::env::temp_dir().join(format!("insights-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let capture = LogCapture::create(&path, "/aws/lambda/p").unwrap();
        let sink = capture.sink();
        capture.record(r#"{"level":"INFO"}"#);
        capture.set_log_group("/aws/lambda/w");
        triplink_shared::telemetry::Metrics::disabled("worker")
            .printing_to(sink)
            .emit(&[], serde_json::Map::new());
        let events = read_events(&path).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].log, "/aws/lambda/p");
        assert_eq!(events[0].message, r#"{"level":"INFO"}"#);
        assert_eq!(events[1].log, "/aws/lambda/w");
        let doc: Value = serde_json::from_str(&events[1].message).unwrap();
        assert_eq!(doc["Service"], "worker");
        assert!(events[0].timestamp_ms <= events[1].timestamp_ms);
    }
}
