//! IAM least privilege: each function's role in `template.yaml` grants exactly the AWS
//! operations its binary calls.
//!
//! The operations come from the source, not from a list kept beside it. The function's
//! crate (`functions/<name>/src`, test modules left out) is read, and every function of
//! `shared/src` it reaches by name, transitively; in each function body reached, the AWS
//! SDK's fluent operation calls (`.get_item()`, `.update_item()`, `.encrypt()`,
//! `.get_secret_value()`, ...) are collected. The shared module an operation is called
//! in says which resource it touches (the vault: the connections table, the store: the
//! requests table, the member directory: the members table). Resolution by name
//! over-approximates (a `get` reaches every `get` of `shared`), never under-approximates,
//! so an operation added to a path a function can take fails this test until the role
//! grants it. A per-module list of operations would not do: `shared` modules also serve
//! the operator CLI (member import, token revoke), whose writes the functions must not
//! be granted.
//!
//! Both directions are checked: every operation used is granted, and every grant of the
//! roles' policies is used, except the statements named in [`EXCEPTIONS`], each with the
//! reason it is not an SDK call of the function.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use demo::lambda::cargo::workspace_root;
use demo::lambda::template::{LocalResource, StackSettings, Template};
use serde_json::Value;

/// Statements of the roles that grant what no SDK call of the function's code makes:
/// each with the only actions it may hold and why. Those naming `kms:` actions must also
/// restrict them to use through a service (`kms:ViaService`).
const EXCEPTIONS: &[(&str, &[&str], &str)] = &[
    (
        "Logs",
        &["logs:CreateLogStream", "logs:PutLogEvents"],
        "Lambda writes the function's log lines with the execution role",
    ),
    (
        "XRay",
        &["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
        "Lambda sends the active-tracing segments (Tracing: Active) with the execution role",
    ),
    (
        "RequestsStream",
        &[
            "dynamodb:DescribeStream",
            "dynamodb:GetRecords",
            "dynamodb:GetShardIterator",
        ],
        "Lambda's event source mapping reads the requests stream with the worker's role",
    ),
    (
        "ListStreams",
        &["dynamodb:ListStreams"],
        "Lambda's event source mapping lists the table's streams (no resource-level permission)",
    ),
    (
        "DeadLetterQueue",
        &["sqs:SendMessage"],
        "Lambda's event source mapping sends failed batches' metadata to the on-failure queue",
    ),
    (
        "KeyThroughServices",
        &["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"],
        "DynamoDB, SQS and Secrets Manager use the connector key on the worker's behalf \
         (server-side encryption: kms:ViaService only)",
    ),
    (
        "KeyThroughDynamoDbAndSecretsManager",
        &["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"],
        "DynamoDB and Secrets Manager use the connector key on the poller's behalf \
         (server-side encryption: kms:ViaService only)",
    ),
    (
        "ExistingSecretKey",
        &["kms:Decrypt"],
        "Secrets Manager decrypts an existing secret with its own key (kms:ViaService only)",
    ),
];

/// Operations the source can reach that no deployment of this template performs.
const NOT_DEPLOYED: &[(&str, &str)] = &[(
    "ssm:GetParameter",
    "only with a secret source ssm:NAME; the template always configures secretsmanager:",
)];

/// The SDK operations the connector may call, as fluent method, IAM action.
const SDK_OPERATIONS: &[(&str, &str)] = &[
    ("get_item", "dynamodb:GetItem"),
    ("put_item", "dynamodb:PutItem"),
    ("update_item", "dynamodb:UpdateItem"),
    ("delete_item", "dynamodb:DeleteItem"),
    ("query", "dynamodb:Query"),
    ("scan", "dynamodb:Scan"),
    ("batch_get_item", "dynamodb:BatchGetItem"),
    ("batch_write_item", "dynamodb:BatchWriteItem"),
    ("transact_write_items", "dynamodb:TransactWriteItems"),
    ("transact_get_items", "dynamodb:TransactGetItems"),
    ("describe_table", "dynamodb:DescribeTable"),
    ("create_table", "dynamodb:CreateTable"),
    ("describe_stream", "dynamodb:DescribeStream"),
    ("get_records", "dynamodb:GetRecords"),
    ("get_shard_iterator", "dynamodb:GetShardIterator"),
    ("list_streams", "dynamodb:ListStreams"),
    ("encrypt", "kms:Encrypt"),
    ("decrypt", "kms:Decrypt"),
    ("generate_data_key", "kms:GenerateDataKey"),
    ("re_encrypt", "kms:ReEncrypt"),
    ("describe_key", "kms:DescribeKey"),
    ("create_key", "kms:CreateKey"),
    ("get_secret_value", "secretsmanager:GetSecretValue"),
    ("put_secret_value", "secretsmanager:PutSecretValue"),
    ("get_parameter", "ssm:GetParameter"),
    ("send_message", "sqs:SendMessage"),
    ("receive_message", "sqs:ReceiveMessage"),
    ("delete_message", "sqs:DeleteMessage"),
];

/// The resource a shared module's DynamoDB, KMS or secret calls touch (template
/// logical ids; a DynamoDB index counts as its table).
fn resource_of(file: &str, action: &str) -> &'static str {
    let service = action.split(':').next().unwrap_or_default();
    match (service, file) {
        ("kms", _) => "ConnectorKey",
        ("secretsmanager", _) => "ConcurClientSecret",
        ("ssm", _) => "*",
        ("dynamodb", f) if f.ends_with("vault.rs") => "ConnectionsTable",
        ("dynamodb", f) if f.contains("/store/") => "RequestsTable",
        ("dynamodb", f) if f.contains("/members/") => "MembersTable",
        _ => panic!("{file} calls {action}: say which resource of the template it touches"),
    }
}

/// Method names of the standard library the functions call that a `shared` function
/// also bears; resolving them would reach that function from every iterator or string.
const STD_METHODS: &[(&str, &str)] = &[(
    "count",
    "Iterator::count in the worker's breaker; the member directory's count (a table \
     scan) serves the CLI's status",
)];

// --- A small Rust reader: enough to find functions, their bodies and their calls ----

/// The text with comments, string and character literals blanked (same length, so
/// offsets stay), so that braces and names inside them do not count.
fn blank(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = bytes.to_vec();
    let mut i = 0;
    let clear = |out: &mut Vec<u8>, from: usize, to: usize| {
        for b in &mut out[from..to.min(bytes.len())] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    };
    while i < bytes.len() {
        let rest = &bytes[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            clear(&mut out, i, i + end);
            i += end;
        } else if rest.starts_with(b"/*") {
            let end = source[i + 2..].find("*/").map_or(rest.len(), |e| e + 4);
            clear(&mut out, i, i + end);
            i += end;
        } else if rest.starts_with(b"r#") || rest.starts_with(b"r\"") {
            let hashes = rest[1..].iter().take_while(|&&b| b == b'#').count();
            if rest.get(1 + hashes) != Some(&b'"') {
                i += 1;
                continue;
            }
            let close = format!("\"{}", "#".repeat(hashes));
            let start = i + 2 + hashes;
            let end = source[start..]
                .find(&close)
                .map_or(bytes.len(), |e| start + e + close.len());
            clear(&mut out, i, end);
            i = end;
        } else if rest[0] == b'"' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            clear(&mut out, i, j + 1);
            i = j + 1;
        } else if rest[0] == b'\'' {
            // A character literal ('x', '\n', '\u{..}'), not a lifetime ('a).
            let end = if rest.get(1) == Some(&b'\\') {
                rest.iter().skip(2).position(|&b| b == b'\'').map(|p| p + 3)
            } else {
                let c = source[i + 1..].chars().next().map_or(1, char::len_utf8);
                (rest.get(1 + c) == Some(&b'\'')).then_some(c + 2)
            };
            match end {
                Some(end) => {
                    clear(&mut out, i, i + end);
                    i += end;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|e| panic!("blanked source: {e}"))
}

/// The offset just past the brace that closes the one at `open`.
fn closing(text: &str, open: usize) -> usize {
    let mut depth = 0usize;
    for (i, b) in text.bytes().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    text.len()
}

/// The text without `#[cfg(test)]` items (the unit tests' modules and helpers).
fn without_tests(text: &str) -> String {
    let mut out = text.to_owned();
    let mut from = 0;
    while let Some(at) = out[from..].find("#[cfg(test)]").map(|a| a + from) {
        let after = at + "#[cfg(test)]".len();
        let brace = out[after..].find('{').map(|b| b + after);
        let semi = out[after..].find(';').map(|s| s + after);
        let end = match (brace, semi) {
            (Some(b), Some(s)) if s < b => s + 1,
            (Some(b), _) => closing(&out, b),
            (None, Some(s)) => s + 1,
            (None, None) => out.len(),
        };
        out.replace_range(at..end, &" ".repeat(end - at));
        from = end;
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A function with a body.
#[derive(Debug)]
struct FnBody {
    file: String,
    name: String,
    body: String,
}

/// Every function with a body in a (blanked) file: free functions, methods, trait
/// methods with a default body. Declarations without a body are left out.
fn functions(file: &str, text: &str) -> Vec<FnBody> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("fn ").map(|a| a + from) {
        from = at + 3;
        if at > 0 && is_ident(bytes[at - 1]) {
            continue;
        }
        let name: String = text[at + 3..]
            .trim_start()
            .bytes()
            .take_while(|&b| is_ident(b))
            .map(char::from)
            .collect();
        if name.is_empty() {
            continue;
        }
        // The body's brace, or the `;` of a declaration, outside () and [].
        let mut depth = 0i32;
        let mut open = None;
        for (i, b) in bytes.iter().enumerate().skip(at) {
            match b {
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth -= 1,
                b'{' if depth == 0 => {
                    open = Some(i);
                    break;
                }
                b';' if depth == 0 => break,
                _ => {}
            }
        }
        if let Some(open) = open {
            let end = closing(text, open);
            found.push(FnBody {
                file: file.to_owned(),
                name,
                body: text[open..end].to_owned(),
            });
        }
    }
    found
}

/// Names a body calls (`name(`, `.name(`, `name::<T>(`) or refers to as a path
/// (`Type::name`), except those under a module path that is not one of `shared`'s
/// (`lambda_runtime::run(..)`, `std::mem::take(..)`): `modules` are `shared`'s.
fn called_names_outside(body: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    called_names(body)
        .into_iter()
        .filter(|entry| match entry.rsplit_once("::") {
            None => true,
            Some((module, _)) => {
                let module = module.rsplit("::").next().unwrap_or(module);
                module.starts_with(|c: char| c.is_ascii_uppercase())
                    || ["self", "super", "crate", "triplink_shared", "Self"].contains(&module)
                    || modules.contains(module)
            }
        })
        .map(|entry| entry.rsplit("::").next().unwrap_or(&entry).to_owned())
        .collect()
}

/// Names a body calls or refers to as a path, each with its module path when it has
/// one (`lambda_runtime::run`, `TokenVault::store_connection`).
fn called_names(body: &str) -> BTreeSet<String> {
    let bytes = body.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        if is_ident(bytes[i]) && (i == 0 || !is_ident(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && is_ident(bytes[i]) {
                i += 1;
            }
            let after = body[i..].trim_start();
            let path = body[..start].ends_with("::");
            if after.starts_with("::") && !after.starts_with("::<") {
                // A path segment: the name is what it leads to.
                continue;
            }
            if path || after.starts_with('(') || after.starts_with("::<") {
                // With the module path in front, if any (`a::b::name`).
                let mut head = start;
                while body[..head].ends_with("::") {
                    let segment_end = head - 2;
                    let segment_start = body[..segment_end]
                        .rfind(|c: char| !is_ident(c as u8))
                        .map_or(0, |p| p + 1);
                    if segment_start == segment_end {
                        break;
                    }
                    head = segment_start;
                }
                names.insert(body[head..i].to_owned());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The first setter an SDK operation's fluent builder is given (besides `set_*`): what
/// tells `client.query().table_name(..)` from `url.query().is_some()`.
const SDK_SETTERS: &[&str] = &[
    "table_name",
    "key_id",
    "secret_id",
    "name",
    "transact_items",
    "request_items",
    "queue_url",
    "stream_arn",
    "shard_iterator",
    "message_body",
];

/// The SDK operations a body calls: `.op()`, nothing between the parentheses, then one
/// of the operation input's setters.
fn sdk_calls(body: &str) -> BTreeSet<&'static str> {
    let mut calls = BTreeSet::new();
    for (method, action) in SDK_OPERATIONS {
        let needle = format!(".{method}(");
        let mut from = 0;
        while let Some(at) = body[from..].find(&needle).map(|a| a + from) {
            from = at + needle.len();
            let Some(rest) = body[from..].trim_start().strip_prefix(')') else {
                continue;
            };
            let Some(next) = rest.trim_start().strip_prefix('.') else {
                continue;
            };
            let setter: String = next
                .trim_start()
                .bytes()
                .take_while(|&b| is_ident(b))
                .map(char::from)
                .collect();
            if setter.starts_with("set_") || SDK_SETTERS.contains(&setter.as_str()) {
                calls.insert(*action);
            }
        }
    }
    calls
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn read_functions(root: &Path, dir: &str, skip: &[&str]) -> Vec<FnBody> {
    let mut all = Vec::new();
    for path in rust_files(&root.join(dir)) {
        let relative = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        if skip.iter().any(|s| relative.ends_with(s)) {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        all.extend(functions(&relative, &without_tests(&blank(&text))));
    }
    all
}

/// (IAM action, resource logical id) pairs the function's binary can call, each with
/// the call chains (by name, from the function's crate) that reach it.
fn operations_used(root: &Path, function: &str) -> BTreeMap<(String, String), BTreeSet<String>> {
    // The test support and the fault proxy are compiled only with the `testing` feature.
    let shared = read_functions(root, "shared/src", &["testing.rs", "fault_proxy.rs"]);
    let own = read_functions(root, &format!("functions/{function}/src"), &[]);
    assert!(
        own.iter().any(|f| f.name == "main"),
        "{function}: the reader found no main: {:?}",
        own.iter().map(|f| &f.name).collect::<Vec<_>>()
    );
    // `shared`'s module names: its files' and folders' names.
    let modules: BTreeSet<String> = rust_files(&root.join("shared/src"))
        .iter()
        .flat_map(|path| {
            path.strip_prefix(root.join("shared/src"))
                .unwrap_or(path)
                .with_extension("")
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut by_name: HashMap<&str, Vec<&FnBody>> = HashMap::new();
    for f in &shared {
        by_name.entry(f.name.as_str()).or_default().push(f);
    }
    // Each function reached, with the chain that reached it first.
    let label = |f: &FnBody| format!("{}::{}", f.file, f.name);
    let mut reached: Vec<(&FnBody, String)> = own.iter().map(|f| (f, label(f))).collect();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut queue = reached.clone();
    while let Some((f, chain)) = queue.pop() {
        let mut names = called_names_outside(&f.body, &modules);
        for (name, _) in STD_METHODS {
            names.remove(*name);
        }
        for name in names {
            for target in by_name.get(name.as_str()).into_iter().flatten() {
                if seen.insert((target.file.clone(), target.name.clone())) {
                    let chain = format!("{chain} -> {}", label(target));
                    reached.push((target, chain.clone()));
                    queue.push((target, chain));
                }
            }
        }
    }
    let mut used: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (f, chain) in reached {
        for action in sdk_calls(&f.body) {
            let resource = resource_of(&f.file, action);
            used.entry((action.to_owned(), resource.to_owned()))
                .or_default()
                .insert(chain.clone());
        }
    }
    used
}

// --- The template's grants -------------------------------------------------------

fn arn_resources() -> BTreeMap<String, LocalResource> {
    let arn =
        |service: &str, rest: &str| format!("arn:aws:{service}:us-east-1:123456789012:{rest}");
    let table = |name: &str| {
        LocalResource::new(name)
            .with("Arn", arn("dynamodb", &format!("table/{name}")))
            .with(
                "StreamArn",
                arn("dynamodb", &format!("table/{name}/stream/x")),
            )
    };
    let group = |name: &str| {
        LocalResource::new(name).with("Arn", arn("logs", &format!("log-group:{name}:*")))
    };
    BTreeMap::from([
        ("RequestsTable".to_owned(), table("RequestsTable")),
        ("MembersTable".to_owned(), table("MembersTable")),
        ("ConnectionsTable".to_owned(), table("ConnectionsTable")),
        (
            "ConnectorKey".to_owned(),
            LocalResource::new("key").with("Arn", arn("kms", "key/ConnectorKey")),
        ),
        (
            "ConcurClientSecret".to_owned(),
            LocalResource::new(arn("secretsmanager", "secret:ConcurClientSecret")),
        ),
        (
            "WorkerDeadLetterQueue".to_owned(),
            LocalResource::new("https://sqs.example/dlq")
                .with("Arn", arn("sqs", "WorkerDeadLetterQueue"))
                .with("QueueName", "dlq"),
        ),
        (
            "UnlinkDeadLetterQueue".to_owned(),
            LocalResource::new("https://sqs.example/unlink")
                .with("Arn", arn("sqs", "UnlinkDeadLetterQueue"))
                .with("QueueName", "unlink"),
        ),
        ("PollerLogGroup".to_owned(), group("PollerLogGroup")),
        ("WorkerLogGroup".to_owned(), group("WorkerLogGroup")),
    ])
}

/// A resource ARN of [`arn_resources`] as its logical id; an index or stream counts as
/// its table.
fn logical(arn: &str) -> String {
    if arn == "*" {
        return arn.to_owned();
    }
    let known = arn_resources();
    // Anything else (an existing secret's key given as a parameter) stays its ARN.
    arn.split([':', '/'])
        .find(|part| known.contains_key(*part))
        .map_or_else(|| arn.to_owned(), str::to_owned)
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        other => panic!("expected a string or a list: {other}"),
    }
}

/// Statement Sid → its (action, resource) pairs and its condition, for a role of a stack
/// deployed with these parameters (besides the client id).
fn statements(
    role: &str,
    parameters: &[(&str, &str)],
) -> BTreeMap<String, (BTreeSet<(String, String)>, Value)> {
    let template = Template::load(&workspace_root().join("template.yaml")).unwrap();
    let settings = StackSettings {
        stack_name: "triplink".into(),
        region: "us-east-1".into(),
        account_id: "123456789012".into(),
    };
    let mut overrides = vec![("ConcurClientId".to_owned(), "client-id".to_owned())];
    overrides.extend(
        parameters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let stack = template
        .stack(settings, &overrides, arn_resources())
        .unwrap();
    let declaration = template
        .resource(role)
        .unwrap_or_else(|| panic!("no {role} in the template"));
    assert_eq!(
        declaration["Properties"].get("ManagedPolicyArns"),
        None,
        "{role}: managed policies are not checked here"
    );
    let mut by_sid = BTreeMap::new();
    for policy in declaration["Properties"]["Policies"].as_array().unwrap() {
        let statements = stack
            .evaluate(&policy["PolicyDocument"]["Statement"])
            .unwrap()
            .unwrap_or(Value::Array(Vec::new()));
        for statement in statements.as_array().unwrap() {
            if statement.is_null() {
                continue;
            }
            assert_eq!(statement["Effect"], "Allow", "{role}: {statement}");
            let sid = statement["Sid"]
                .as_str()
                .unwrap_or_else(|| panic!("{role}: a statement without a Sid: {statement}"))
                .to_owned();
            let pairs: BTreeSet<(String, String)> = strings(&statement["Action"])
                .into_iter()
                .flat_map(|action| {
                    strings(&statement["Resource"])
                        .into_iter()
                        .map(move |arn| (action.clone(), logical(&arn)))
                })
                .collect();
            let condition = statement.get("Condition").cloned().unwrap_or(Value::Null);
            assert!(
                by_sid.insert(sid.clone(), (pairs, condition)).is_none(),
                "{role}: Sid {sid} twice"
            );
        }
    }
    by_sid
}

/// Statement Sid → its (action, resource) pairs.
fn grants(role: &str, parameters: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<(String, String)>> {
    statements(role, parameters)
        .into_iter()
        .map(|(sid, (pairs, _))| (sid, pairs))
        .collect()
}

fn check(function: &str, role: &str) -> BTreeSet<(String, String)> {
    let root = workspace_root();
    let used = operations_used(&root, function);
    let grants = grants(role, &[]);
    let exception = |sid: &str| EXCEPTIONS.iter().any(|(s, _, _)| *s == sid);
    let granted: BTreeSet<(String, String)> = grants
        .iter()
        .filter(|(sid, _)| !exception(sid))
        .flat_map(|(_, pairs)| pairs.iter().cloned())
        .collect();
    let not_deployed = |action: &str| NOT_DEPLOYED.iter().any(|(a, _)| *a == action);

    let missing: Vec<_> = used
        .iter()
        .filter(|((action, _), _)| !not_deployed(action))
        .filter(|(pair, _)| !granted.contains(pair))
        .collect();
    assert!(
        missing.is_empty(),
        "{role} lacks what the {function} calls (operation, resource: called in): {missing:#?}"
    );
    let unused: Vec<_> = granted
        .iter()
        .filter(|pair| !used.contains_key(*pair))
        .collect();
    assert!(
        unused.is_empty(),
        "{role} grants what the {function} never calls: {unused:#?}\n(used: {:#?})",
        used.keys().collect::<Vec<_>>()
    );
    used.into_keys().collect()
}

/// No exception is stale: each names a statement of a role.
#[test]
fn every_exception_names_a_statement_of_a_role() {
    // An existing secret with its own key: the statement only that deploy has.
    let existing_secret = [
        (
            "ExistingConcurSecretArn",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:concur",
        ),
        (
            "ExistingConcurSecretKmsKeyArn",
            "arn:aws:kms:us-east-1:123456789012:key/secret-key",
        ),
    ];
    let sids: BTreeSet<String> = ["PollerRole", "WorkerRole"]
        .into_iter()
        .flat_map(|role| {
            let mut sids: Vec<String> = grants(role, &[]).into_keys().collect();
            sids.extend(grants(role, &existing_secret).into_keys());
            sids
        })
        .collect();
    for (sid, _, reason) in EXCEPTIONS {
        assert!(
            sids.contains(*sid),
            "exception {sid} ({reason}) names no statement: {sids:?}"
        );
    }
}

/// An exception grants only the actions it names, and a key it names only through a
/// service: it is no back door for what the code calls.
#[test]
fn exceptions_grant_only_what_they_name() {
    let existing_secret = [
        (
            "ExistingConcurSecretArn",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:concur",
        ),
        (
            "ExistingConcurSecretKmsKeyArn",
            "arn:aws:kms:us-east-1:123456789012:key/secret-key",
        ),
    ];
    for role in ["PollerRole", "WorkerRole"] {
        for parameters in [&[][..], &existing_secret[..]] {
            for (sid, (pairs, condition)) in statements(role, parameters) {
                let Some((_, allowed, _)) = EXCEPTIONS.iter().find(|(s, _, _)| *s == sid) else {
                    continue;
                };
                for (action, _) in &pairs {
                    assert!(
                        allowed.contains(&action.as_str()),
                        "{role} {sid}: {action} is not among {allowed:?}"
                    );
                    if action.starts_with("kms:") {
                        let via = &condition["StringEquals"]["kms:ViaService"];
                        assert!(
                            via.is_string() || via.is_array(),
                            "{role} {sid}: {action} without kms:ViaService: {condition}"
                        );
                    }
                }
            }
        }
    }
}

fn pair(action: &str, resource: &str) -> (String, String) {
    (action.to_owned(), resource.to_owned())
}

#[test]
fn the_poller_role_grants_exactly_what_the_poller_calls() {
    let used = check("poller", "PollerRole");
    // The reader sees the paths known to exist (it must not go blind).
    for expected in [
        pair("dynamodb:PutItem", "RequestsTable"),
        pair("dynamodb:Query", "RequestsTable"),
        pair("dynamodb:Query", "ConnectionsTable"),
        pair("dynamodb:DeleteItem", "ConnectionsTable"),
        pair("kms:Decrypt", "ConnectorKey"),
        pair("secretsmanager:GetSecretValue", "ConcurClientSecret"),
    ] {
        assert!(used.contains(&expected), "{expected:?} not seen: {used:?}");
    }
    assert!(!used.iter().any(|(_, r)| r == "MembersTable"), "{used:?}");
}

#[test]
fn the_worker_role_grants_exactly_what_the_worker_calls() {
    let used = check("worker", "WorkerRole");
    for expected in [
        pair("dynamodb:UpdateItem", "RequestsTable"),
        pair("dynamodb:Query", "MembersTable"),
        pair("dynamodb:PutItem", "ConnectionsTable"),
        // The unlink hook: revoke, then delete.
        pair("dynamodb:DeleteItem", "ConnectionsTable"),
        pair("kms:Encrypt", "ConnectorKey"),
        pair("secretsmanager:GetSecretValue", "ConcurClientSecret"),
    ] {
        assert!(used.contains(&expected), "{expected:?} not seen: {used:?}");
    }
    // The member import's writes are the CLI's.
    assert!(
        !used.contains(&pair("dynamodb:TransactWriteItems", "MembersTable")),
        "{used:?}"
    );
}

/// The reader itself: literals and comments hide their braces and names, test modules
/// are left out, declarations without a body are not functions, and only empty-argument
/// SDK calls count.
#[test]
fn the_source_reader_finds_bodies_calls_and_operations() {
    let source = r#"
        // fn commented() { x.delete_item() }
        trait T { fn declared(&self) -> u8; fn defaulted(&self) { self.declared(); } }
        fn one(a: [u8; 2]) -> u8 {
            let s = "}{ .scan() ";
            let c = '}';
            helper::<u8>(a); Store::write; client.get_item().table_name("t"); self.get_item(id);
            url.query().is_some(); lambda_runtime::run(f); vault::take(x);
            0
        }
        #[cfg(test)]
        mod tests { fn hidden() { c.put_item() } }
        fn two<'a>(x: &'a str) { x.len(); }
    "#;
    let text = without_tests(&blank(source));
    let found = functions("f.rs", &text);
    let names: Vec<_> = found.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["defaulted", "one", "two"]);
    let one = &found[1];
    assert_eq!(
        sdk_calls(&one.body),
        BTreeSet::from(["dynamodb:GetItem"]),
        "{}",
        one.body
    );
    let called = called_names(&one.body);
    for name in [
        "helper",
        "Store::write",
        "get_item",
        "table_name",
        "lambda_runtime::run",
    ] {
        assert!(called.contains(name), "{name}: {called:?}");
    }
    let modules = BTreeSet::from(["vault".to_owned()]);
    let resolved = called_names_outside(&one.body, &modules);
    for name in ["helper", "write", "get_item", "take"] {
        assert!(resolved.contains(name), "{name}: {resolved:?}");
    }
    assert!(
        !resolved.contains("run"),
        "another crate's function: {resolved:?}"
    );
    assert!(!called.contains("len"), "{called:?}");
    assert!(sdk_calls(&found[2].body).is_empty());
}
