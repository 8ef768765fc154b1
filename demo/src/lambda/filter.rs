//! Lambda event filtering (`FilterCriteria`) for stream records, as Lambda applies it
//! to a DynamoDB stream: each filter's `Pattern` is matched against the record as it
//! would be sent (`eventName`, `dynamodb.Keys`, `dynamodb.NewImage`, ...); a record is
//! delivered when any filter matches, and dropped (the checkpoint moves past it) when
//! none does.
//!
//! The pattern syntax is EventBridge's: nested objects narrow down to fields, a field
//! holds a list of matchers of which one must match (all fields must). Supported
//! matchers: literal strings, numbers, booleans and `null` (exact match), `exists`,
//! `anything-but` (a value or a list), `prefix`, `suffix`, `equals-ignore-case`, and
//! `numeric` comparisons. Anything else is refused when the filter is read, so a
//! template using more than this fails loudly instead of filtering wrongly.

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
#[error("filter pattern {pattern}: {message}")]
pub struct FilterError {
    pattern: String,
    message: String,
}

/// One matcher of a field's list.
#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    Equals(Value),
    Exists(bool),
    AnythingBut(Vec<Value>),
    Prefix(String),
    Suffix(String),
    EqualsIgnoreCase(String),
    Numeric(Vec<(String, f64)>),
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Object(Vec<(String, Node)>),
    Leaf(Vec<Matcher>),
}

/// One compiled `Pattern`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    root: Node,
    source: String,
}

fn compile_node(value: &Value, fail: &dyn Fn(String) -> FilterError) -> Result<Node, FilterError> {
    match value {
        Value::Object(object) => {
            let mut fields = Vec::new();
            for (key, value) in object {
                fields.push((key.clone(), compile_node(value, fail)?));
            }
            Ok(Node::Object(fields))
        }
        Value::Array(items) => {
            let mut matchers = Vec::new();
            for item in items {
                matchers.push(compile_matcher(item, fail)?);
            }
            if matchers.is_empty() {
                return Err(fail("an empty list matches nothing".into()));
            }
            Ok(Node::Leaf(matchers))
        }
        other => Err(fail(format!(
            "{other} must be inside a list (for example [{other}])"
        ))),
    }
}

fn compile_matcher(
    item: &Value,
    fail: &dyn Fn(String) -> FilterError,
) -> Result<Matcher, FilterError> {
    let object = match item {
        Value::Object(object) => object,
        Value::Array(_) => return Err(fail("nested lists are not allowed".into())),
        literal => return Ok(Matcher::Equals(literal.clone())),
    };
    if object.len() != 1 {
        return Err(fail(format!("{item}: one operator per matcher")));
    }
    let Some((operator, argument)) = object.iter().next() else {
        return Err(fail("empty matcher".into()));
    };
    let text = |a: &Value| {
        a.as_str()
            .map(str::to_owned)
            .ok_or_else(|| fail(format!("{operator} needs a string")))
    };
    Ok(match operator.as_str() {
        "exists" => Matcher::Exists(
            argument
                .as_bool()
                .ok_or_else(|| fail("exists needs true or false".into()))?,
        ),
        "anything-but" => match argument {
            Value::Array(values) => Matcher::AnythingBut(values.clone()),
            Value::Object(_) => {
                return Err(fail(format!("anything-but {argument} is not supported")))
            }
            value => Matcher::AnythingBut(vec![value.clone()]),
        },
        "prefix" => Matcher::Prefix(text(argument)?),
        "suffix" => Matcher::Suffix(text(argument)?),
        "equals-ignore-case" => Matcher::EqualsIgnoreCase(text(argument)?),
        "numeric" => {
            let parts = argument
                .as_array()
                .ok_or_else(|| fail("numeric needs a list".into()))?;
            if parts.is_empty() || parts.len() % 2 != 0 {
                return Err(fail("numeric needs operator/value pairs".into()));
            }
            let mut comparisons = Vec::new();
            for pair in parts.chunks(2) {
                let op = pair[0]
                    .as_str()
                    .filter(|op| ["=", "<", "<=", ">", ">="].contains(op))
                    .ok_or_else(|| fail(format!("numeric operator {}", pair[0])))?;
                let value = pair[1]
                    .as_f64()
                    .ok_or_else(|| fail(format!("numeric value {}", pair[1])))?;
                comparisons.push((op.to_owned(), value));
            }
            Matcher::Numeric(comparisons)
        }
        other => return Err(fail(format!("unsupported operator {other:?}"))),
    })
}

fn number_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        // DynamoDB's N values are strings in the record.
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn equal(pattern: &Value, value: &Value) -> bool {
    match (pattern, value) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

impl Matcher {
    /// Whether one (non-array) present value matches.
    fn matches_value(&self, value: &Value) -> bool {
        match self {
            Matcher::Equals(expected) => equal(expected, value),
            Matcher::Exists(present) => *present,
            Matcher::AnythingBut(excluded) => !excluded.iter().any(|e| equal(e, value)),
            Matcher::Prefix(prefix) => value.as_str().is_some_and(|s| s.starts_with(prefix)),
            Matcher::Suffix(suffix) => value.as_str().is_some_and(|s| s.ends_with(suffix)),
            Matcher::EqualsIgnoreCase(expected) => value
                .as_str()
                .is_some_and(|s| s.to_lowercase() == expected.to_lowercase()),
            Matcher::Numeric(comparisons) => match number_of(value) {
                Some(n) => comparisons.iter().all(|(op, v)| match op.as_str() {
                    "=" => n == *v,
                    "<" => n < *v,
                    "<=" => n <= *v,
                    ">" => n > *v,
                    _ => n >= *v,
                }),
                None => false,
            },
        }
    }

    fn matches(&self, value: Option<&Value>) -> bool {
        match (self, value) {
            (Matcher::Exists(present), None) => !present,
            (_, None) => false,
            (Matcher::Exists(present), Some(_)) => *present,
            // A list in the record matches when one of its elements does.
            (Matcher::AnythingBut(_), Some(Value::Array(items))) => {
                items.iter().all(|item| self.matches_value(item))
            }
            (_, Some(Value::Array(items))) => items.iter().any(|item| self.matches_value(item)),
            (_, Some(value)) => self.matches_value(value),
        }
    }
}

fn node_matches(node: &Node, value: Option<&Value>) -> bool {
    match node {
        Node::Leaf(matchers) => matchers.iter().any(|m| m.matches(value)),
        // Every field must match; a missing object leaves its fields missing, which
        // only `exists: false` accepts.
        Node::Object(fields) => fields
            .iter()
            .all(|(key, child)| node_matches(child, value.and_then(|v| v.get(key)))),
    }
}

impl Pattern {
    /// Read a `Pattern` (the JSON text of the template).
    pub fn parse(source: &str) -> Result<Self, FilterError> {
        let fail = |message: String| FilterError {
            pattern: source.to_owned(),
            message,
        };
        let value: Value = serde_json::from_str(source).map_err(|e| fail(e.to_string()))?;
        if !value.is_object() {
            return Err(fail("a pattern is a JSON object".into()));
        }
        Ok(Self {
            root: compile_node(&value, &fail)?,
            source: source.to_owned(),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the record (as sent to the function) matches.
    pub fn matches(&self, record: &Value) -> bool {
        node_matches(&self.root, Some(record))
    }
}

/// A mapping's `FilterCriteria`: no filter passes everything; otherwise any one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilterCriteria {
    pub patterns: Vec<Pattern>,
}

impl FilterCriteria {
    /// From the `FilterCriteria` property (`{"Filters": [{"Pattern": "..."}]}`).
    pub fn from_property(property: Option<&Value>) -> Result<Self, FilterError> {
        let mut patterns = Vec::new();
        let filters = property
            .and_then(|p| p.get("Filters"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for filter in filters {
            let source = match filter.get("Pattern") {
                Some(Value::String(s)) => s.clone(),
                // A pattern written as YAML rather than as a JSON string.
                Some(other) => other.to_string(),
                None => {
                    return Err(FilterError {
                        pattern: filter.to_string(),
                        message: "a filter without Pattern".into(),
                    })
                }
            };
            patterns.push(Pattern::parse(&source)?);
        }
        Ok(Self { patterns })
    }

    pub fn matches(&self, record: &Value) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(event: &str, state: Option<&str>, old_state: Option<&str>) -> Value {
        let mut dynamodb = json!({"Keys": {"request_id": {"S": "r1"}}, "SequenceNumber": "1"});
        if let Some(state) = state {
            dynamodb["NewImage"] =
                json!({"request_id": {"S": "r1"}, "state": {"S": state}, "attempt": {"N": "2"}});
        }
        if let Some(state) = old_state {
            dynamodb["OldImage"] = json!({"request_id": {"S": "r1"}, "state": {"S": state}});
        }
        json!({"eventName": event, "eventSource": "aws:dynamodb", "dynamodb": dynamodb})
    }

    #[test]
    fn the_templates_filter_passes_received_new_images_only() {
        let filter =
            Pattern::parse(r#"{"dynamodb": {"NewImage": {"state": {"S": ["received"]}}}}"#)
                .unwrap();
        assert!(filter.matches(&record("INSERT", Some("received"), None)));
        assert!(filter.matches(&record("MODIFY", Some("received"), Some("reported"))));
        assert!(!filter.matches(&record("MODIFY", Some("working"), Some("received"))));
        assert!(!filter.matches(&record("REMOVE", None, Some("reported"))));
    }

    #[test]
    fn operators_and_or() {
        let criteria = FilterCriteria::from_property(Some(&json!({"Filters": [
            {"Pattern": r#"{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"state": {"S": [{"anything-but": ["working", "decided"]}]}}}}"#},
            {"Pattern": r#"{"eventName": ["MODIFY"], "dynamodb": {"OldImage": {"state": {"S": [{"exists": false}]}}, "NewImage": {"attempt": {"N": [{"numeric": [">", 1]}]}}}}"#},
            {"Pattern": r#"{"eventName": [{"prefix": "REM"}], "dynamodb": {"Keys": {"request_id": {"S": [{"equals-ignore-case": "R1"}]}}}}"#}
        ]}))).unwrap();
        assert!(criteria.matches(&record("INSERT", Some("received"), None)));
        assert!(!criteria.matches(&record("INSERT", Some("working"), None)));
        assert!(
            !criteria.matches(&record("INSERT", None, None)),
            "anything-but needs the field"
        );
        assert!(criteria.matches(&record("MODIFY", Some("received"), None)));
        assert!(!criteria.matches(&record("MODIFY", Some("received"), Some("x"))));
        assert!(criteria.matches(&record("REMOVE", None, Some("reported"))));
        assert!(FilterCriteria::default().matches(&record("REMOVE", None, None)));
    }

    #[test]
    fn unsupported_syntax_is_refused() {
        for bad in [
            r#"{"eventName": "INSERT"}"#,
            r#"{"eventName": [{"wildcard": "IN*"}]}"#,
            r#"{"eventName": []}"#,
            r#"["INSERT"]"#,
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }
}
