//! Cold-start failures, reported where Lambda shows them.
//!
//! A function whose initialisation fails tells the Lambda Runtime API
//! (`POST http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/init/error`, body
//! `{"errorType", "errorMessage"}`, header `Lambda-Runtime-Function-Error-Type`) and exits;
//! Lambda then answers the invocation with that error type and message instead of a bare
//! "Runtime exited" (`lambda_runtime` reports init errors itself only for SnapStart hooks,
//! so the functions' `main` does it through [`or_report`]). Outside Lambda (no
//! `AWS_LAMBDA_RUNTIME_API`) nothing is sent: the error is only returned.
//!
//! Messages are configuration errors: they name variables and references to secrets
//! (`secretsmanager:…`), never a secret's value.

use std::fmt::Display;
use std::time::Duration;

use serde_json::json;

use crate::config::{ConfigError, Env};

/// The message of the line logged when a cold start fails: the template's
/// `init-errors` metric filters count it (`{ $.message = "…" }`).
pub const INIT_ERROR_MESSAGE: &str = "the function cannot start";

/// The Runtime API path of an initialisation error.
pub const INIT_ERROR_PATH: &str = "/2018-06-01/runtime/init/error";

/// An error a cold start can end in.
pub trait InitFailure: Display {
    /// `errorType` (`Category.Reason`).
    fn error_type(&self) -> &'static str;
}

impl InitFailure for ConfigError {
    fn error_type(&self) -> &'static str {
        ConfigError::error_type(self)
    }
}

/// Post the error to the Runtime API's `/runtime/init/error`. `Ok(false)` when not in
/// Lambda (no `AWS_LAMBDA_RUNTIME_API`).
pub async fn report_init_error(
    env: &impl Env,
    error_type: &str,
    error_message: &str,
) -> Result<bool, String> {
    let Some(api) = env.get("AWS_LAMBDA_RUNTIME_API") else {
        return Ok(false);
    };
    // The shared stack: reqwest's own default needs a process-wide crypto provider.
    let http = crate::http::client_builder()?
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let response = http
        .post(format!("http://{}{INIT_ERROR_PATH}", api.trim()))
        .header("Lambda-Runtime-Function-Error-Type", error_type)
        .json(&json!({
            "errorType": error_type,
            "errorMessage": error_message,
            "stackTrace": [],
        }))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(true)
    } else {
        Err(format!("the Runtime API answered {}", response.status()))
    }
}

/// The cold start's result, its error logged and reported to the Runtime API first.
pub async fn or_report<T, E: InitFailure>(env: &impl Env, result: Result<T, E>) -> Result<T, E> {
    let error = match result {
        Ok(value) => return Ok(value),
        Err(error) => error,
    };
    let message = error.to_string();
    tracing::error!(
        error_type = error.error_type(),
        error = %message,
        "{INIT_ERROR_MESSAGE}"
    );
    if let Err(e) = report_init_error(env, error.error_type(), &message).await {
        tracing::error!(error = %e, "could not report the init error to the Runtime API");
    }
    Err(error)
}
