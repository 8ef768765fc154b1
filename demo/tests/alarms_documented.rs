//! The README's Operations / Alarms table names every alarm of `template.yaml`, and
//! nothing else, each with when it fires and what to do; and each alarm in the template
//! says what it means (`AlarmDescription`) and notifies the alarm topic.

use std::collections::BTreeSet;

use demo::lambda::cargo::workspace_root;
use demo::lambda::template::Template;
use serde_json::Value;

/// The alarms of the template, by the name they get (`<stack>-...`).
fn template_alarms() -> Vec<(String, Value)> {
    let template = Template::load(&workspace_root().join("template.yaml")).unwrap();
    let resources = template.root()["Resources"].as_object().unwrap().clone();
    resources
        .into_iter()
        .filter(|(_, r)| r["Type"] == "AWS::CloudWatch::Alarm")
        .map(|(id, r)| {
            let name = r["Properties"]["AlarmName"]["Fn::Sub"]
                .as_str()
                .unwrap_or_else(|| panic!("{id}: AlarmName is not !Sub ${{AWS::StackName}}-..."))
                .replace("${AWS::StackName}", "<stack>");
            (name, r["Properties"].clone())
        })
        .collect()
}

/// The rows of the README's alarm table: (alarm, fires when, what to do).
fn readme_rows() -> Vec<(String, String, String)> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let section = readme
        .split("\n### Alarms\n")
        .nth(1)
        .expect("README has an Alarms section");
    let section = section.split("\n#").next().unwrap_or(section);
    section
        .lines()
        .filter(|line| line.starts_with("| `<stack>-"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 3, "alarm, fires when, what to do: {line}");
            (
                cells[0].trim_matches('`').to_owned(),
                cells[1].to_owned(),
                cells[2].to_owned(),
            )
        })
        .collect()
}

#[test]
fn every_alarm_is_in_the_readme_with_what_to_do() {
    let alarms = template_alarms();
    let rows = readme_rows();
    assert!(
        alarms.len() >= 10 && rows.len() >= 10,
        "{alarms:?} {rows:?}"
    );
    let in_template: BTreeSet<&str> = alarms.iter().map(|(n, _)| n.as_str()).collect();
    let in_readme: BTreeSet<&str> = rows.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        in_template.difference(&in_readme).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "alarms the README does not list"
    );
    assert_eq!(
        in_readme.difference(&in_template).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "README rows of alarms the template does not have"
    );
    assert_eq!(rows.len(), in_readme.len(), "an alarm listed twice");
    for (name, fires, todo) in &rows {
        assert!(fires.len() > 30, "{name}: when does it fire? {fires:?}");
        assert!(todo.len() > 30, "{name}: what to do? {todo:?}");
    }
}

#[test]
fn every_alarm_explains_itself_and_notifies_the_topic() {
    for (name, properties) in template_alarms() {
        let description = properties["AlarmDescription"].as_str().unwrap_or("");
        assert!(description.len() > 40, "{name}: {description:?}");
        for actions in ["AlarmActions", "OKActions"] {
            assert!(
                properties[actions].to_string().contains("AlarmTopicArn"),
                "{name}: {actions} {}",
                properties[actions]
            );
        }
    }
}

/// The guards' metrics that must page someone have an alarm (issue 13, point 8).
#[test]
fn the_operational_failures_are_alarmed() {
    let alarmed: BTreeSet<String> = template_alarms()
        .into_iter()
        .flat_map(|(_, p)| {
            let mut metrics = vec![p["MetricName"].as_str().unwrap_or("").to_owned()];
            for metric in p["Metrics"].as_array().cloned().unwrap_or_default() {
                if let Some(name) = metric["MetricStat"]["Metric"]["MetricName"].as_str() {
                    metrics.push(name.to_owned());
                }
            }
            metrics
        })
        .collect();
    for metric in [
        "StuckPastLease",
        "Quarantined",
        "BreakerOpened",
        "TokenRenewFailed",
        "RotatedTokenNotStored",
        "ApproximateNumberOfMessagesVisible",
        "InitErrors",
    ] {
        assert!(
            alarmed.contains(metric),
            "no alarm on {metric}: {alarmed:?}"
        );
    }
}
