//! A function on the real `lambda_runtime` client, for the harness's own tests. Its
//! event says what to do: `{"action": "echo"}` answers with the invocation's context,
//! `"error"` fails, `"exit"` exits the process mid-invocation, `"sleep"` sleeps `ms`
//! milliseconds first. `FIXTURE_INIT=fail` makes the initialisation fail.

use std::time::Duration;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, context) = event.into_parts();
    if let Some(ms) = payload.get("ms").and_then(Value::as_u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    match payload.get("action").and_then(Value::as_str) {
        Some("error") => Err("the fixture was asked to fail".into()),
        Some("exit") => std::process::exit(3),
        _ => Ok(json!({
            "request_id": context.request_id,
            "deadline": context.deadline,
            "function_arn": context.invoked_function_arn,
            "trace_id": context.xray_trace_id,
            "function_name": std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok(),
            "memory": std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").ok(),
            "handler": std::env::var("_HANDLER").ok(),
            "own": std::env::var("FIXTURE_OWN").ok(),
            "pid": std::process::id(),
            "payload": payload,
        })),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    if std::env::var("FIXTURE_INIT").as_deref() == Ok("fail") {
        return Err("the fixture's initialisation failed".into());
    }
    lambda_runtime::run(service_fn(handle)).await
}
