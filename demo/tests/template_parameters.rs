//! Every value `template.yaml` allows a parameter to take is accepted by the code that
//! reads the variable it becomes: each numeric parameter at its `MinValue` and
//! `MaxValue`, each value of an `AllowedValues` list, through the functions'
//! configuration parsers (the ones their `main` calls at cold start). A deploy the
//! template accepts must never crash every cold start.

use std::collections::{BTreeMap, HashMap};

use demo::lambda::cargo::workspace_root;
use demo::lambda::template::{LocalResource, StackSettings, Template};
use poller::PollerSettings;
use triplink_shared::config::ConcurSettings;
use worker::WorkerSettings;

fn resources() -> BTreeMap<String, LocalResource> {
    let table = |name: &str| {
        LocalResource::new(name)
            .with(
                "Arn",
                format!("arn:aws:dynamodb:us-east-1:123456789012:table/{name}"),
            )
            .with(
                "StreamArn",
                format!("arn:aws:dynamodb:us-east-1:123456789012:table/{name}/stream/x"),
            )
    };
    BTreeMap::from([
        ("RequestsTable".to_owned(), table("requests")),
        ("MembersTable".to_owned(), table("members")),
        ("ConnectionsTable".to_owned(), table("connections")),
        (
            "ConnectorKey".to_owned(),
            LocalResource::new("key-id")
                .with("Arn", "arn:aws:kms:us-east-1:123456789012:key/key-id"),
        ),
        (
            "ConcurClientSecret".to_owned(),
            LocalResource::new("arn:aws:secretsmanager:us-east-1:123456789012:secret:concur"),
        ),
        (
            "WorkerDeadLetterQueue".to_owned(),
            LocalResource::new("https://sqs.us-east-1.amazonaws.com/123456789012/dlq")
                .with("Arn", "arn:aws:sqs:us-east-1:123456789012:dlq")
                .with("QueueName", "dlq"),
        ),
        (
            "UnlinkDeadLetterQueue".to_owned(),
            LocalResource::new("https://sqs.us-east-1.amazonaws.com/123456789012/unlink")
                .with("Arn", "arn:aws:sqs:us-east-1:123456789012:unlink")
                .with("QueueName", "unlink"),
        ),
    ])
}

/// Every (parameter, value) the template allows at its bounds.
fn allowed_values(template: &Template) -> Vec<(String, String)> {
    let mut cases = Vec::new();
    let parameters = template.root()["Parameters"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (name, declaration) in parameters {
        for bound in ["MinValue", "MaxValue"] {
            if let Some(value) = declaration.get(bound) {
                let value = value
                    .as_i64()
                    .map(|n| n.to_string())
                    .or_else(|| value.as_str().map(str::to_owned))
                    .unwrap_or_else(|| panic!("{name}.{bound} is not a number"));
                cases.push((name.clone(), value));
            }
        }
        for value in declaration
            .get("AllowedValues")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
        {
            let value = value
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            cases.push((name.clone(), value));
        }
    }
    cases
}

#[test]
fn every_value_a_parameter_allows_is_accepted_at_cold_start() {
    let template = Template::load(&workspace_root().join("template.yaml")).unwrap();
    let cases = allowed_values(&template);
    assert!(
        cases.iter().any(|(name, _)| name == "PollPageLimit"),
        "the bounds are read: {cases:?}"
    );
    let settings = StackSettings {
        stack_name: "triplink".into(),
        region: "us-east-1".into(),
        account_id: "123456789012".into(),
    };
    let mut checked = 0;
    for (name, value) in &cases {
        // The one parameter without a default.
        let mut overrides = vec![("ConcurClientId".to_owned(), "client-id".to_owned())];
        overrides.push((name.clone(), value.clone()));
        // A parameter whose value asks for a companion (the HTTP member directory needs
        // its URL) gets one, as the README says to deploy it.
        if name == "MemberDirectory" && value == "http" {
            overrides.push((
                "MemberServiceUrl".into(),
                "https://members.example.com".into(),
            ));
        }
        let stack = template
            .stack(settings.clone(), &overrides, resources())
            .unwrap_or_else(|e| panic!("{name}={value}: the template refuses it: {e}"));
        for function in ["PollerFunction", "WorkerFunction"] {
            let env: HashMap<String, String> = stack
                .function(function)
                .unwrap_or_else(|e| panic!("{function}: {e}"))
                .environment
                .into_iter()
                .collect();
            let what = format!("{function} with {name}={value}");
            ConcurSettings::for_functions(&env).unwrap_or_else(|e| panic!("{what}: {e}"));
            if function == "PollerFunction" {
                PollerSettings::from_env(&env).unwrap_or_else(|e| panic!("{what}: {e}"));
            } else {
                WorkerSettings::from_env(&env).unwrap_or_else(|e| panic!("{what}: {e}"));
            }
            checked += 1;
        }
    }
    assert!(checked >= 2 * cases.len(), "{checked}");
}

/// A deploy with the template's defaults reaches no traveller: the poller's schedule
/// is disabled, the worker is live only once `DryRun=false` (the default) is kept
/// explicitly, and the alarms that say why nothing happens exist.
#[test]
fn the_default_deploy_is_safe_until_enabled() {
    let template = Template::load(&workspace_root().join("template.yaml")).unwrap();
    let settings = StackSettings {
        stack_name: "triplink".into(),
        region: "us-east-1".into(),
        account_id: "123456789012".into(),
    };
    let overrides = [("ConcurClientId".to_owned(), "client-id".to_owned())];
    let stack = template
        .stack(settings.clone(), &overrides, resources())
        .unwrap();
    let poller = stack.function("PollerFunction").unwrap();
    let states: Vec<String> = poller
        .events
        .values()
        .filter(|e| e.kind == "Schedule" || e.kind == "ScheduleV2")
        .map(|e| {
            e.properties["State"]
                .as_str()
                .unwrap_or("ENABLED")
                .to_owned()
        })
        .collect();
    assert_eq!(states, ["DISABLED"], "the schedule starts disabled");

    // DryRun reaches the worker as DRY_RUN, and the parser reads it.
    for (value, dry_run) in [("true", true), ("false", false)] {
        let overrides = [
            ("ConcurClientId".to_owned(), "client-id".to_owned()),
            ("DryRun".to_owned(), value.to_owned()),
        ];
        let stack = template
            .stack(settings.clone(), &overrides, resources())
            .unwrap();
        let env: HashMap<String, String> = stack
            .function("WorkerFunction")
            .unwrap()
            .environment
            .into_iter()
            .collect();
        assert_eq!(WorkerSettings::from_env(&env).unwrap().dry_run, dry_run);
    }

    // Every metric the safety guards emit has an alarm.
    let alarmed: Vec<String> = template.root()["Resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::CloudWatch::Alarm")
        .filter_map(|r| r["Properties"]["MetricName"].as_str().map(str::to_owned))
        .collect();
    for metric in [
        "DirectoryNotReady",
        "BreakerOpened",
        "Retried",
        "WorkerErrors",
        "StuckPastLease",
        "AppCredentialsRejected",
        "InitErrors",
        "Quarantined",
    ] {
        assert!(
            alarmed.iter().any(|m| m == metric),
            "no alarm on {metric}: {alarmed:?}"
        );
    }
}

/// The `env:` secret source is allowed only to a local stack: the template gives
/// `TRIPLINK_ALLOW_ENV_SECRETS=1` only with `LocalAwsEndpointUrl`, and a function of a
/// deployed stack (in a Lambda environment) refuses `env:`.
#[test]
fn only_a_local_stack_may_read_its_secret_from_a_variable() {
    let template = Template::load(&workspace_root().join("template.yaml")).unwrap();
    let settings = StackSettings {
        stack_name: "triplink".into(),
        region: "us-east-1".into(),
        account_id: "123456789012".into(),
    };
    let environment = |overrides: &[(&str, &str)]| {
        let mut all = vec![("ConcurClientId".to_owned(), "client-id".to_owned())];
        all.extend(
            overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let stack = template.stack(settings.clone(), &all, resources()).unwrap();
        let mut env: HashMap<String, String> = stack
            .function("WorkerFunction")
            .unwrap()
            .environment
            .into_iter()
            .collect();
        // As Lambda (or sam local, or cargo lambda watch) runs it, the secret from a variable.
        env.insert("AWS_LAMBDA_FUNCTION_NAME".into(), "triplink-worker".into());
        env.insert(
            "CONCUR_CLIENT_SECRET_SOURCE".into(),
            "env:CONCUR_CLIENT_SECRET".into(),
        );
        env
    };
    let deployed = environment(&[]);
    assert_eq!(deployed.get("TRIPLINK_ALLOW_ENV_SECRETS"), None);
    let err = ConcurSettings::for_functions(&deployed).unwrap_err();
    assert!(
        err.to_string().contains("TRIPLINK_ALLOW_ENV_SECRETS"),
        "{err}"
    );

    let local = environment(&[("LocalAwsEndpointUrl", "http://127.0.0.1:5000")]);
    assert_eq!(
        local.get("TRIPLINK_ALLOW_ENV_SECRETS").map(String::as_str),
        Some("1")
    );
    ConcurSettings::for_functions(&local).unwrap();
}

/// An AWS call's whole budget (the SDK's operation timeout, retries included) fits the
/// deadlines of a default deploy: a call the poller starts before it stops paging ends
/// before its Lambda deadline, and the smallest timeout the template allows leaves the
/// worker time for a call after its own margin.
#[test]
fn an_aws_call_fits_within_the_functions_deadlines() {
    use std::time::Duration;
    use triplink_shared::config::{lambda_sdk_config, SDK_OPERATION_TIMEOUT};

    let template = Template::load(&workspace_root().join("template.yaml")).unwrap();
    let settings = StackSettings {
        stack_name: "triplink".into(),
        region: "us-east-1".into(),
        account_id: "123456789012".into(),
    };
    let overrides = [("ConcurClientId".to_owned(), "client-id".to_owned())];
    let stack = template.stack(settings, &overrides, resources()).unwrap();
    let env = |function: &str| -> HashMap<String, String> {
        let mut env: HashMap<String, String> = stack
            .function(function)
            .unwrap()
            .environment
            .into_iter()
            .collect();
        env.insert("AWS_REGION".into(), "us-east-1".into());
        env
    };
    let operation = lambda_sdk_config(&env("PollerFunction"))
        .unwrap()
        .timeout_config()
        .and_then(|t| t.operation_timeout())
        .expect("an operation timeout");
    assert_eq!(operation, SDK_OPERATION_TIMEOUT);

    let poller = PollerSettings::from_env(&env("PollerFunction")).unwrap();
    assert!(
        operation <= poller.deadline_margin,
        "{operation:?} > the poller's margin {:?}",
        poller.deadline_margin
    );
    let worker = WorkerSettings::from_env(&env("WorkerFunction")).unwrap();
    let smallest = |parameter: &str| {
        let seconds = template.root()["Parameters"][parameter]["MinValue"]
            .as_u64()
            .unwrap_or_else(|| panic!("{parameter} has no MinValue"));
        Duration::from_secs(seconds)
    };
    assert!(smallest("WorkerTimeoutSeconds") >= worker.deadline_margin + operation);
    assert!(smallest("PollerTimeoutSeconds") >= poller.deadline_margin + operation);
}
