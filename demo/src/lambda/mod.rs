//! A Lambda-level harness: the functions' real release binaries run as AWS Lambda runs
//! them, fed the way the template says they are fed.
//!
//! * [`runtime_api`]: the Lambda Runtime API of one execution environment.
//! * [`process`]: execution environments as processes (cold starts, warm reuse,
//!   crashes, timeouts, injected faults) and the function that owns them.
//! * [`template`]: `template.yaml` evaluated for a local stack (parameters, conditions,
//!   intrinsic functions, SAM globals).
//! * [`filter`]: Lambda event filtering (`FilterCriteria`).
//! * [`esm`]: the DynamoDB stream event source mapping (batching, filtering, partial
//!   batch responses, bisection, retries, record age, the `OnFailure` queue).
//! * [`schedule`]: the EventBridge schedule of a function.
//! * [`stack`]: the whole stack on moto and the Concur sandbox, and the verdict.
//! * [`cargo`]: building the release binaries.

pub mod cargo;
pub mod esm;
pub mod filter;
pub mod process;
pub mod runtime_api;
pub mod schedule;
pub mod stack;
pub mod template;

/// Lock a mutex, recovering the data from a poisoned one (a panicking holder leaves
/// counters and queues usable).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
