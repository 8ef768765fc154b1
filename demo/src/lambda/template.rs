//! The SAM template, read the way CloudFormation and SAM would read it for one local
//! stack: parameters from their defaults with `--parameter-overrides`, conditions,
//! the intrinsic functions (`Ref`, `Fn::GetAtt`, `Fn::Sub`, `Fn::If`, `Fn::Equals`,
//! `Fn::Not`, `Fn::And`, `Fn::Or`, `Condition`, `Fn::Join`, `Fn::Select`), SAM's
//! `Globals`, and the local values of the resources the functions refer to (table
//! names, stream ARN, KMS key, queue) supplied by whoever created them.
//!
//! Nothing is hard-coded about this project's template: the functions' variables,
//! timeouts, memory and events come from the file as it is when the test runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Number, Value};

/// Why the template cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read the template {path}: {message}")]
    Read { path: String, message: String },
    #[error("the template is not valid YAML: {0}")]
    Yaml(String),
    #[error("parameter {name}: {message}")]
    Parameter { name: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> TemplateError {
    TemplateError::Invalid(message.into())
}

/// A parsed template, CloudFormation's short tags (`!Ref X`, `!GetAtt A.B`, `!Sub ...`)
/// turned into their long forms (`{"Ref": "X"}`, `{"Fn::GetAtt": ["A", "B"]}`, ...).
#[derive(Debug, Clone)]
pub struct Template {
    root: Value,
}

fn yaml_to_json(value: serde_norway::Value) -> Result<Value, TemplateError> {
    use serde_norway::Value as Y;
    Ok(match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Number(i.into())
            } else if let Some(u) = n.as_u64() {
                Value::Number(u.into())
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                Value::Number(
                    Number::from_f64(f)
                        .ok_or_else(|| invalid(format!("number {n} is not finite")))?,
                )
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(
            items
                .into_iter()
                .map(yaml_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(mapping) => {
            let mut object = Map::new();
            for (key, value) in mapping {
                let key = match key {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => return Err(invalid(format!("unsupported mapping key {other:?}"))),
                };
                object.insert(key, yaml_to_json(value)?);
            }
            Value::Object(object)
        }
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = yaml_to_json(tagged.value)?;
            let (key, inner) = match name {
                "Ref" | "Condition" => (name.to_owned(), inner),
                "GetAtt" => {
                    let inner = match inner {
                        Value::String(s) => match s.split_once('.') {
                            Some((resource, attribute)) => Value::Array(vec![
                                Value::String(resource.to_owned()),
                                Value::String(attribute.to_owned()),
                            ]),
                            None => return Err(invalid(format!("!GetAtt {s}: expected A.B"))),
                        },
                        other => other,
                    };
                    ("Fn::GetAtt".to_owned(), inner)
                }
                other => (format!("Fn::{other}"), inner),
            };
            let mut object = Map::new();
            object.insert(key, inner);
            Value::Object(object)
        }
    })
}

impl Template {
    /// Read a template file.
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|e| TemplateError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text)
    }

    /// Parse template text.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let yaml: serde_norway::Value =
            serde_norway::from_str(text).map_err(|e| TemplateError::Yaml(e.to_string()))?;
        Ok(Self {
            root: yaml_to_json(yaml)?,
        })
    }

    /// The template as JSON (long forms of the intrinsic functions).
    pub fn root(&self) -> &Value {
        &self.root
    }

    /// The declaration of a resource.
    pub fn resource(&self, logical_id: &str) -> Option<&Value> {
        self.root.get("Resources")?.get(logical_id)
    }

    /// Instantiate the template as one stack, as `sam deploy --parameter-overrides`
    /// would: every parameter is its override or its default, checked against the
    /// declared `AllowedValues`, `MinValue`/`MaxValue` and `MinLength`/`MaxLength`
    /// (`AllowedPattern` is not checked).
    pub fn stack(
        &self,
        settings: StackSettings,
        overrides: &[(String, String)],
        resources: BTreeMap<String, LocalResource>,
    ) -> Result<Stack<'_>, TemplateError> {
        let declared = self
            .root
            .get("Parameters")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut parameters = BTreeMap::new();
        for (name, _) in overrides {
            if !declared.contains_key(name) {
                return Err(TemplateError::Parameter {
                    name: name.clone(),
                    message: "the template declares no such parameter".into(),
                });
            }
        }
        for (name, declaration) in &declared {
            let value = match overrides.iter().rev().find(|(n, _)| n == name) {
                Some((_, value)) => value.clone(),
                None => match declaration.get("Default") {
                    Some(default) => {
                        scalar_string(default).ok_or_else(|| TemplateError::Parameter {
                            name: name.clone(),
                            message: "the default is not a scalar".into(),
                        })?
                    }
                    None => {
                        return Err(TemplateError::Parameter {
                            name: name.clone(),
                            message: "no default and no override".into(),
                        })
                    }
                },
            };
            check_parameter(name, declaration, &value)?;
            parameters.insert(name.clone(), value);
        }
        Ok(Stack {
            template: self,
            settings,
            parameters,
            resources,
        })
    }
}

fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn check_parameter(name: &str, declaration: &Value, value: &str) -> Result<(), TemplateError> {
    let fail = |message: String| TemplateError::Parameter {
        name: name.to_owned(),
        message,
    };
    if let Some(allowed) = declaration.get("AllowedValues").and_then(Value::as_array) {
        let allowed: Vec<String> = allowed.iter().filter_map(scalar_string).collect();
        if !allowed.iter().any(|a| a == value) {
            return Err(fail(format!("{value:?} is not one of {allowed:?}")));
        }
    }
    let kind = declaration
        .get("Type")
        .and_then(Value::as_str)
        .unwrap_or("String");
    if kind == "Number" {
        let number: f64 = value
            .trim()
            .parse()
            .map_err(|_| fail(format!("{value:?} is not a number")))?;
        let bound = |key: &str| declaration.get(key).and_then(Value::as_f64);
        if let Some(min) = bound("MinValue") {
            if number < min {
                return Err(fail(format!("{value} is below MinValue {min}")));
            }
        }
        if let Some(max) = bound("MaxValue") {
            if number > max {
                return Err(fail(format!("{value} is above MaxValue {max}")));
            }
        }
    } else {
        let length = value.chars().count() as u64;
        if let Some(min) = declaration.get("MinLength").and_then(Value::as_u64) {
            if length < min {
                return Err(fail(format!("shorter than MinLength {min}")));
            }
        }
        if let Some(max) = declaration.get("MaxLength").and_then(Value::as_u64) {
            if length > max {
                return Err(fail(format!("longer than MaxLength {max}")));
            }
        }
    }
    Ok(())
}

/// The pseudo parameters of the stack.
#[derive(Debug, Clone)]
pub struct StackSettings {
    pub stack_name: String,
    pub region: String,
    pub account_id: String,
}

/// What a resource is locally: the value of its `Ref` and of its attributes
/// (`Fn::GetAtt`), e.g. a table's name, `Arn` and `StreamArn`.
#[derive(Debug, Clone, Default)]
pub struct LocalResource {
    pub reference: String,
    pub attributes: BTreeMap<String, String>,
}

impl LocalResource {
    pub fn new(reference: impl Into<String>) -> Self {
        Self {
            reference: reference.into(),
            attributes: BTreeMap::new(),
        }
    }

    pub fn with(mut self, attribute: &str, value: impl Into<String>) -> Self {
        self.attributes.insert(attribute.to_owned(), value.into());
        self
    }
}

/// One instance of the template.
#[derive(Debug, Clone)]
pub struct Stack<'t> {
    template: &'t Template,
    pub settings: StackSettings,
    pub parameters: BTreeMap<String, String>,
    resources: BTreeMap<String, LocalResource>,
}

/// A function as the stack defines it (SAM `Globals` applied).
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub logical_id: String,
    pub function_name: String,
    pub function_arn: String,
    pub handler: String,
    pub runtime: String,
    pub timeout: Duration,
    pub memory_mb: u32,
    /// `Environment.Variables`, evaluated (`AWS::NoValue` entries left out).
    pub environment: BTreeMap<String, String>,
    /// `LoggingConfig.LogGroup`, or `/aws/lambda/<function name>`.
    pub log_group: String,
    /// `LoggingConfig.LogFormat` (`Text` when absent).
    pub log_format: String,
    pub reserved_concurrency: Option<u32>,
    /// `Events`: each event's `Type` and evaluated `Properties`.
    pub events: BTreeMap<String, EventSpec>,
}

#[derive(Debug, Clone)]
pub struct EventSpec {
    pub kind: String,
    pub properties: Value,
}

const INTRINSICS: [&str; 10] = [
    "Ref",
    "Fn::GetAtt",
    "Fn::Sub",
    "Fn::If",
    "Fn::Equals",
    "Fn::Not",
    "Fn::And",
    "Fn::Or",
    "Fn::Join",
    "Fn::Select",
];

impl Stack<'_> {
    /// The value of a resolved parameter.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    fn pseudo(&self, name: &str) -> Option<String> {
        Some(match name {
            "AWS::StackName" => self.settings.stack_name.clone(),
            "AWS::Region" => self.settings.region.clone(),
            "AWS::AccountId" => self.settings.account_id.clone(),
            "AWS::Partition" => "aws".into(),
            "AWS::URLSuffix" => "amazonaws.com".into(),
            "AWS::StackId" => format!(
                "arn:aws:cloudformation:{}:{}:stack/{}/00000000-0000-0000-0000-000000000000",
                self.settings.region, self.settings.account_id, self.settings.stack_name
            ),
            _ => return None,
        })
    }

    fn resource_type(&self, logical_id: &str) -> Option<&str> {
        self.template.resource(logical_id)?.get("Type")?.as_str()
    }

    /// `Ref` of a resource: its local value, or what CloudFormation derives for the
    /// resources that are named by their own properties (functions, log groups).
    fn reference(&self, logical_id: &str) -> Result<String, TemplateError> {
        if let Some(local) = self.resources.get(logical_id) {
            return Ok(local.reference.clone());
        }
        match self.resource_type(logical_id) {
            Some("AWS::Serverless::Function") | Some("AWS::Lambda::Function") => {
                self.function_name(logical_id)
            }
            Some("AWS::Logs::LogGroup") => self.string_property(logical_id, "LogGroupName"),
            Some(kind) => Err(invalid(format!(
                "Ref {logical_id} ({kind}): no local value was given for this resource"
            ))),
            None => Err(invalid(format!(
                "Ref {logical_id}: neither a parameter nor a resource"
            ))),
        }
    }

    fn attribute(&self, logical_id: &str, attribute: &str) -> Result<String, TemplateError> {
        if let Some(value) = self
            .resources
            .get(logical_id)
            .and_then(|r| r.attributes.get(attribute))
        {
            return Ok(value.clone());
        }
        match (self.resource_type(logical_id), attribute) {
            (Some("AWS::Serverless::Function" | "AWS::Lambda::Function"), "Arn") => Ok(format!(
                "arn:aws:lambda:{}:{}:function:{}",
                self.settings.region,
                self.settings.account_id,
                self.function_name(logical_id)?
            )),
            (Some("AWS::Logs::LogGroup"), "Arn") => Ok(format!(
                "arn:aws:logs:{}:{}:log-group:{}:*",
                self.settings.region,
                self.settings.account_id,
                self.reference(logical_id)?
            )),
            _ => Err(invalid(format!(
                "Fn::GetAtt {logical_id}.{attribute}: no local value was given"
            ))),
        }
    }

    fn string_property(&self, logical_id: &str, property: &str) -> Result<String, TemplateError> {
        let raw = self
            .template
            .resource(logical_id)
            .and_then(|r| r.get("Properties"))
            .and_then(|p| p.get(property))
            .ok_or_else(|| invalid(format!("{logical_id} has no {property}")))?;
        self.evaluate_string(raw)
    }

    fn function_name(&self, logical_id: &str) -> Result<String, TemplateError> {
        let declared = self
            .template
            .resource(logical_id)
            .and_then(|r| r.get("Properties"))
            .and_then(|p| p.get("FunctionName"));
        match declared {
            Some(name) => self.evaluate_string(name),
            // CloudFormation's generated name: stack, logical id, a random suffix.
            None => Ok(format!("{}-{logical_id}-LOCAL", self.settings.stack_name)),
        }
    }

    /// Evaluate a condition of the template's `Conditions`.
    pub fn condition(&self, name: &str) -> Result<bool, TemplateError> {
        self.condition_guarded(name, &mut BTreeSet::new())
    }

    fn condition_guarded(
        &self,
        name: &str,
        seen: &mut BTreeSet<String>,
    ) -> Result<bool, TemplateError> {
        if !seen.insert(name.to_owned()) {
            return Err(invalid(format!("condition {name} refers to itself")));
        }
        let declared = self
            .template
            .root
            .get("Conditions")
            .and_then(|c| c.get(name))
            .ok_or_else(|| invalid(format!("no condition {name}")))?;
        let value = self.evaluate_inner(declared, seen)?;
        seen.remove(name);
        match value {
            Some(Value::Bool(b)) => Ok(b),
            other => Err(invalid(format!(
                "condition {name} is not a boolean: {other:?}"
            ))),
        }
    }

    /// Evaluate a template fragment; `None` is `AWS::NoValue`.
    pub fn evaluate(&self, value: &Value) -> Result<Option<Value>, TemplateError> {
        self.evaluate_inner(value, &mut BTreeSet::new())
    }

    /// Evaluate a fragment that must be a scalar, as a string.
    pub fn evaluate_string(&self, value: &Value) -> Result<String, TemplateError> {
        match self.evaluate(value)? {
            Some(v) => scalar_string(&v).ok_or_else(|| invalid(format!("{v} is not a scalar"))),
            None => Err(invalid("AWS::NoValue where a value is needed")),
        }
    }

    fn evaluate_inner(
        &self,
        value: &Value,
        seen: &mut BTreeSet<String>,
    ) -> Result<Option<Value>, TemplateError> {
        match value {
            Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    if let Some(v) = self.evaluate_inner(item, seen)? {
                        out.push(v);
                    }
                }
                Ok(Some(Value::Array(out)))
            }
            Value::Object(object) => {
                if object.len() == 1 {
                    if let Some((key, argument)) = object.iter().next() {
                        if INTRINSICS.contains(&key.as_str()) || key == "Condition" {
                            return self.intrinsic(key, argument, seen);
                        }
                        if key.starts_with("Fn::") {
                            return Err(invalid(format!("unsupported intrinsic function {key}")));
                        }
                    }
                }
                let mut out = Map::new();
                for (key, v) in object {
                    if let Some(v) = self.evaluate_inner(v, seen)? {
                        out.insert(key.clone(), v);
                    }
                }
                Ok(Some(Value::Object(out)))
            }
            other => Ok(Some(other.clone())),
        }
    }

    fn evaluated_string(
        &self,
        value: &Value,
        seen: &mut BTreeSet<String>,
    ) -> Result<String, TemplateError> {
        match self.evaluate_inner(value, seen)? {
            Some(v) => scalar_string(&v).ok_or_else(|| invalid(format!("{v} is not a scalar"))),
            None => Err(invalid("AWS::NoValue where a value is needed")),
        }
    }

    fn boolean(&self, value: &Value, seen: &mut BTreeSet<String>) -> Result<bool, TemplateError> {
        match self.evaluate_inner(value, seen)? {
            Some(Value::Bool(b)) => Ok(b),
            other => Err(invalid(format!("expected a condition, got {other:?}"))),
        }
    }

    fn intrinsic(
        &self,
        name: &str,
        argument: &Value,
        seen: &mut BTreeSet<String>,
    ) -> Result<Option<Value>, TemplateError> {
        let list = |n: usize| -> Result<&Vec<Value>, TemplateError> {
            match argument.as_array() {
                Some(items) if items.len() == n => Ok(items),
                _ => Err(invalid(format!("{name} expects {n} arguments: {argument}"))),
            }
        };
        let string = |v: String| Ok(Some(Value::String(v)));
        match name {
            "Ref" => {
                let target = argument
                    .as_str()
                    .ok_or_else(|| invalid(format!("Ref of a non-string {argument}")))?;
                if target == "AWS::NoValue" {
                    return Ok(None);
                }
                if let Some(value) = self.parameters.get(target) {
                    return string(value.clone());
                }
                if let Some(value) = self.pseudo(target) {
                    return string(value);
                }
                string(self.reference(target)?)
            }
            "Fn::GetAtt" => {
                let items = list(2)?;
                let resource = self.evaluated_string(&items[0], seen)?;
                let attribute = self.evaluated_string(&items[1], seen)?;
                string(self.attribute(&resource, &attribute)?)
            }
            "Condition" => {
                let target = argument
                    .as_str()
                    .ok_or_else(|| invalid(format!("Condition of a non-string {argument}")))?;
                Ok(Some(Value::Bool(self.condition_guarded(target, seen)?)))
            }
            "Fn::If" => {
                let items = list(3)?;
                let condition = items[0]
                    .as_str()
                    .ok_or_else(|| invalid("Fn::If needs a condition name"))?;
                let branch = if self.condition_guarded(condition, seen)? {
                    &items[1]
                } else {
                    &items[2]
                };
                self.evaluate_inner(branch, seen)
            }
            "Fn::Equals" => {
                let items = list(2)?;
                let a = self.evaluated_string(&items[0], seen)?;
                let b = self.evaluated_string(&items[1], seen)?;
                Ok(Some(Value::Bool(a == b)))
            }
            "Fn::Not" => {
                let items = list(1)?;
                Ok(Some(Value::Bool(!self.boolean(&items[0], seen)?)))
            }
            "Fn::And" | "Fn::Or" => {
                let items = argument
                    .as_array()
                    .ok_or_else(|| invalid(format!("{name} expects a list")))?;
                let mut values = Vec::new();
                for item in items {
                    values.push(self.boolean(item, seen)?);
                }
                let result = if name == "Fn::And" {
                    values.iter().all(|b| *b)
                } else {
                    values.iter().any(|b| *b)
                };
                Ok(Some(Value::Bool(result)))
            }
            "Fn::Join" => {
                let items = list(2)?;
                let delimiter = self.evaluated_string(&items[0], seen)?;
                let parts = match self.evaluate_inner(&items[1], seen)? {
                    Some(Value::Array(parts)) => parts,
                    other => return Err(invalid(format!("Fn::Join of {other:?}"))),
                };
                let parts: Vec<String> = parts.iter().filter_map(scalar_string).collect();
                string(parts.join(&delimiter))
            }
            "Fn::Select" => {
                let items = list(2)?;
                let index: usize = self
                    .evaluated_string(&items[0], seen)?
                    .parse()
                    .map_err(|_| invalid("Fn::Select needs a number"))?;
                match self.evaluate_inner(&items[1], seen)? {
                    Some(Value::Array(parts)) => parts
                        .get(index)
                        .cloned()
                        .map(Some)
                        .ok_or_else(|| invalid("Fn::Select out of range")),
                    other => Err(invalid(format!("Fn::Select of {other:?}"))),
                }
            }
            "Fn::Sub" => {
                let (text, variables) = match argument {
                    Value::String(text) => (text.clone(), Map::new()),
                    Value::Array(items) if items.len() == 2 => {
                        let text = items[0]
                            .as_str()
                            .ok_or_else(|| invalid("Fn::Sub needs a string"))?
                            .to_owned();
                        let mut variables = Map::new();
                        if let Some(object) = items[1].as_object() {
                            for (key, v) in object {
                                variables.insert(
                                    key.clone(),
                                    Value::String(self.evaluated_string(v, seen)?),
                                );
                            }
                        }
                        (text, variables)
                    }
                    other => return Err(invalid(format!("Fn::Sub of {other}"))),
                };
                string(self.substitute(&text, &variables)?)
            }
            other => Err(invalid(format!("unsupported intrinsic function {other}"))),
        }
    }

    fn substitute(
        &self,
        text: &str,
        variables: &Map<String, Value>,
    ) -> Result<String, TemplateError> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| invalid(format!("Fn::Sub: unclosed ${{ in {text:?}")))?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(value) = variables.get(name).and_then(Value::as_str) {
                out.push_str(value);
            } else if let Some(value) = self.parameters.get(name) {
                out.push_str(value);
            } else if let Some(value) = self.pseudo(name) {
                out.push_str(&value);
            } else if let Some((resource, attribute)) = name.split_once('.') {
                out.push_str(&self.attribute(resource, attribute)?);
            } else {
                out.push_str(&self.reference(name)?);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A function with SAM's `Globals.Function` applied (function-level properties
    /// win; `Environment.Variables` are merged, the function's winning).
    pub fn function(&self, logical_id: &str) -> Result<FunctionSpec, TemplateError> {
        let resource = self
            .template
            .resource(logical_id)
            .ok_or_else(|| invalid(format!("no resource {logical_id}")))?;
        let kind = resource.get("Type").and_then(Value::as_str).unwrap_or("");
        if kind != "AWS::Serverless::Function" {
            return Err(invalid(format!(
                "{logical_id} is a {kind}, not an AWS::Serverless::Function"
            )));
        }
        let empty = Value::Object(Map::new());
        let own = resource.get("Properties").unwrap_or(&empty);
        let globals = self
            .template
            .root
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .unwrap_or(&empty);
        let property = |name: &str| own.get(name).or_else(|| globals.get(name));
        let evaluated = |name: &str| -> Result<Option<String>, TemplateError> {
            property(name).map(|v| self.evaluate_string(v)).transpose()
        };

        let mut environment = BTreeMap::new();
        for source in [globals, own] {
            let variables = source
                .get("Environment")
                .and_then(|e| e.get("Variables"))
                .map(|v| self.evaluate(v))
                .transpose()?
                .flatten();
            if let Some(Value::Object(variables)) = variables {
                for (key, value) in variables {
                    let value = scalar_string(&value).ok_or_else(|| {
                        invalid(format!("{logical_id}: variable {key} is not a scalar"))
                    })?;
                    environment.insert(key, value);
                }
            }
        }

        let function_name = self.function_name(logical_id)?;
        let timeout: f64 = evaluated("Timeout")?
            .unwrap_or_else(|| "3".into())
            .parse()
            .map_err(|_| invalid(format!("{logical_id}: Timeout is not a number")))?;
        let memory_mb: u32 = evaluated("MemorySize")?
            .unwrap_or_else(|| "128".into())
            .parse()
            .map_err(|_| invalid(format!("{logical_id}: MemorySize is not a number")))?;
        let logging = property("LoggingConfig")
            .map(|v| self.evaluate(v))
            .transpose()?
            .flatten()
            .unwrap_or(Value::Null);
        let log_group = match logging.get("LogGroup").and_then(scalar_string) {
            Some(group) => group,
            None => format!("/aws/lambda/{function_name}"),
        };
        let log_format = logging
            .get("LogFormat")
            .and_then(Value::as_str)
            .unwrap_or("Text")
            .to_owned();
        let reserved_concurrency = evaluated("ReservedConcurrentExecutions")?
            .map(|v| {
                v.parse()
                    .map_err(|_| invalid(format!("{logical_id}: bad ReservedConcurrentExecutions")))
            })
            .transpose()?;

        let mut events = BTreeMap::new();
        if let Some(declared) = own.get("Events").and_then(Value::as_object) {
            for (name, event) in declared {
                let kind = event
                    .get("Type")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("{logical_id}.{name}: no Type")))?
                    .to_owned();
                let properties = event
                    .get("Properties")
                    .map(|p| self.evaluate(p))
                    .transpose()?
                    .flatten()
                    .unwrap_or(Value::Null);
                events.insert(name.clone(), EventSpec { kind, properties });
            }
        }

        Ok(FunctionSpec {
            logical_id: logical_id.to_owned(),
            function_arn: self.attribute(logical_id, "Arn")?,
            function_name,
            handler: evaluated("Handler")?.unwrap_or_default(),
            runtime: evaluated("Runtime")?.unwrap_or_default(),
            timeout: Duration::from_secs_f64(timeout),
            memory_mb,
            environment,
            log_group,
            log_format,
            reserved_concurrency,
            events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"
Parameters:
  Name:
    Type: String
  Timeout:
    Type: Number
    Default: 60
    MinValue: 10
    MaxValue: 900
  Mode:
    Type: String
    Default: a
    AllowedValues: [a, b]
  Local:
    Type: String
    Default: ""
Conditions:
  IsLocal: !Not [!Equals [!Ref Local, ""]]
  Both: !And [!Condition IsLocal, !Equals [!Ref Mode, b]]
Globals:
  Function:
    Handler: bootstrap
    Timeout: 3
    Environment:
      Variables:
        TABLE: !Ref Table
        KEY: !GetAtt Key.Arn
        SOURCE: !Sub
          - "x:${Arn}"
          - Arn: !If [IsLocal, !Ref Local, !Sub "${AWS::Region}-${Name}"]
        GONE: !If [Both, "yes", !Ref AWS::NoValue]
        LITERAL: !Sub "${!Keep}-${AWS::StackName}"
Resources:
  Table:
    Type: AWS::DynamoDB::Table
  Key:
    Type: AWS::KMS::Key
  Logs:
    Type: AWS::Logs::LogGroup
    Properties:
      LogGroupName: !Sub /aws/lambda/${AWS::StackName}-fn
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: !Sub ${AWS::StackName}-fn
      Timeout: !Ref Timeout
      MemorySize: 256
      ReservedConcurrentExecutions: 1
      LoggingConfig:
        LogFormat: JSON
        LogGroup: !Ref Logs
      Environment:
        Variables:
          OWN: own
      Events:
        Stream:
          Type: DynamoDB
          Properties:
            Stream: !GetAtt Table.StreamArn
            BatchSize: 5
"#;

    fn resources() -> BTreeMap<String, LocalResource> {
        BTreeMap::from([
            (
                "Table".to_owned(),
                LocalResource::new("t1").with("StreamArn", "arn:stream"),
            ),
            (
                "Key".to_owned(),
                LocalResource::new("k").with("Arn", "arn:key"),
            ),
        ])
    }

    fn settings() -> StackSettings {
        StackSettings {
            stack_name: "s".into(),
            region: "r".into(),
            account_id: "1".into(),
        }
    }

    #[test]
    fn functions_get_globals_parameters_conditions_and_resources() {
        let template = Template::parse(TEMPLATE).unwrap();
        let stack = template
            .stack(settings(), &[("Name".into(), "n".into())], resources())
            .unwrap();
        let f = stack.function("Fn").unwrap();
        assert_eq!(f.function_name, "s-fn");
        assert_eq!(f.function_arn, "arn:aws:lambda:r:1:function:s-fn");
        assert_eq!(f.handler, "bootstrap");
        assert_eq!(f.timeout, Duration::from_secs(60));
        assert_eq!(f.memory_mb, 256);
        assert_eq!(f.reserved_concurrency, Some(1));
        assert_eq!(f.log_group, "/aws/lambda/s-fn");
        assert_eq!(f.log_format, "JSON");
        let env: Vec<(&str, &str)> = f
            .environment
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            env,
            [
                ("KEY", "arn:key"),
                ("LITERAL", "${Keep}-s"),
                ("OWN", "own"),
                ("SOURCE", "x:r-n"),
                ("TABLE", "t1"),
            ]
        );
        assert_eq!(f.events["Stream"].kind, "DynamoDB");
        assert_eq!(f.events["Stream"].properties["Stream"], "arn:stream");
        assert_eq!(f.events["Stream"].properties["BatchSize"], 5);

        let local = template
            .stack(
                settings(),
                &[
                    ("Name".into(), "n".into()),
                    ("Local".into(), "L".into()),
                    ("Mode".into(), "b".into()),
                ],
                resources(),
            )
            .unwrap();
        let f = local.function("Fn").unwrap();
        assert_eq!(f.environment["SOURCE"], "x:L");
        assert_eq!(f.environment["GONE"], "yes");
    }

    #[test]
    fn parameters_are_checked_like_cloudformation_does() {
        let template = Template::parse(TEMPLATE).unwrap();
        let name = ("Name".to_owned(), "n".to_owned());
        let fails = |overrides: Vec<(String, String)>| {
            template
                .stack(settings(), &overrides, resources())
                .unwrap_err()
                .to_string()
        };
        assert!(fails(vec![]).contains("Name"), "required parameter");
        assert!(fails(vec![name.clone(), ("Timeout".into(), "5".into())]).contains("MinValue"));
        assert!(fails(vec![name.clone(), ("Mode".into(), "c".into())]).contains("is not one of"));
        assert!(fails(vec![name, ("Nope".into(), "1".into())]).contains("no such parameter"));
    }

    #[test]
    fn the_project_template_is_read() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
        let template = Template::load(&path).unwrap();
        assert!(template.resource("WorkerFunction").is_some());
        assert!(template.resource("PollerFunction").is_some());
    }
}
