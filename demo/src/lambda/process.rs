//! Functions as Lambda runs them: each execution environment is a real process (the
//! function's release `bootstrap`) with its own Runtime API, started on demand (a cold
//! start) with the environment a deployed function gets, reused while warm, and
//! thrown away when it crashes, fails its initialisation or overruns its deadline
//! (Lambda kills it; the next invocation cold-starts a new one).
//!
//! What the process prints on stdout and stderr goes to one file per environment in
//! the log directory (CloudWatch's log stream); the caller owns that directory.
//! Every process is killed when its environment is dropped, including on a panic.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::lock;
use super::runtime_api::{QueuedInvocation, RuntimeApi, RuntimeEvent};
use super::template::FunctionSpec;

/// Lambda's limit on the initialisation phase of an on-demand environment.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    #[error("{0}")]
    Config(String),
}

/// Everything needed to run a function.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    pub name: String,
    pub arn: String,
    /// The `bootstrap`: a release binary of the function.
    pub binary: PathBuf,
    pub handler: String,
    pub timeout: Duration,
    pub memory_mb: u32,
    /// The function's own variables (the template's, with local overrides).
    pub environment: BTreeMap<String, String>,
    pub region: String,
    pub log_group: String,
    pub log_format: String,
    /// `ReservedConcurrentExecutions`: invocations beyond it are throttled.
    pub reserved_concurrency: Option<u32>,
    /// Where each environment's output goes.
    pub log_dir: PathBuf,
    pub init_timeout: Duration,
}

impl FunctionConfig {
    /// A function of the stack, run from `binary`, with `overrides` applied to its
    /// variables the way `sam local invoke --env-vars` applies them: only variables
    /// the template declares for the function may be overridden (anything else is an
    /// error here, where SAM would silently drop it).
    pub fn from_spec(
        spec: &FunctionSpec,
        region: &str,
        binary: PathBuf,
        overrides: &[(String, String)],
        log_dir: PathBuf,
    ) -> Result<Self, FunctionError> {
        let mut environment = spec.environment.clone();
        for (key, value) in overrides {
            match environment.get_mut(key) {
                Some(slot) => *slot = value.clone(),
                None => {
                    return Err(FunctionError::Config(format!(
                        "{}: the template declares no variable {key} to override",
                        spec.logical_id
                    )))
                }
            }
        }
        Ok(Self {
            name: spec.function_name.clone(),
            arn: spec.function_arn.clone(),
            binary,
            handler: spec.handler.clone(),
            timeout: spec.timeout,
            memory_mb: spec.memory_mb,
            environment,
            region: region.to_owned(),
            log_group: spec.log_group.clone(),
            log_format: spec.log_format.clone(),
            reserved_concurrency: spec.reserved_concurrency,
            log_dir,
            init_timeout: INIT_TIMEOUT,
        })
    }

    /// The process environment of one execution environment: the variables Lambda
    /// defines for a `provided.al2023` function, then the function's own.
    pub fn process_environment(
        &self,
        runtime_api: &str,
        log_stream: &str,
    ) -> Vec<(String, String)> {
        let task_root = self
            .binary
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| ".".into());
        let mut vars: Vec<(String, String)> = vec![
            ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
            ("AWS_LAMBDA_FUNCTION_NAME", self.name.clone()),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                self.memory_mb.to_string(),
            ),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", self.log_group.clone()),
            ("AWS_LAMBDA_LOG_STREAM_NAME", log_stream.to_owned()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_DEFAULT_REGION", self.region.clone()),
            // The execution role's temporary credentials (moto accepts any).
            ("AWS_ACCESS_KEY_ID", "ASIALOCALLAMBDAROLE0".into()),
            ("AWS_SECRET_ACCESS_KEY", "local-lambda-secret".into()),
            ("AWS_SESSION_TOKEN", "local-lambda-session".into()),
            ("_HANDLER", self.handler.clone()),
            ("LAMBDA_TASK_ROOT", task_root),
            ("LAMBDA_RUNTIME_DIR", "/var/runtime".into()),
            ("TZ", ":UTC".into()),
            ("LANG", "en_US.UTF-8".into()),
            ("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin".into()),
            // What `sam local invoke` adds. (The `env:` secret source needs
            // TRIPLINK_ALLOW_ENV_SECRETS=1, which the template sets for a local stack.)
            ("AWS_SAM_LOCAL", "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if self.log_format.eq_ignore_ascii_case("JSON") {
            vars.push(("AWS_LAMBDA_LOG_FORMAT".into(), "JSON".into()));
        }
        for (key, value) in &self.environment {
            vars.push((key.clone(), value.clone()));
        }
        vars
    }
}

/// A fault to inject into a coming invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chaos {
    /// SIGKILL the process this long after the runtime took the event (a crash).
    Kill { after: Duration },
    /// SIGSTOP the process this long after the runtime took the event: a hung
    /// function, which overruns its deadline and is killed by Lambda (a timeout).
    Freeze { after: Duration },
}

impl Chaos {
    fn after(&self) -> Duration {
        match self {
            Chaos::Kill { after } | Chaos::Freeze { after } => *after,
        }
    }
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `POST .../response`: the function's result.
    Success(Bytes),
    /// `POST .../error`, or a response Lambda refused (too large).
    FunctionError {
        error_type: String,
        error_message: String,
    },
    /// The process exited during the invocation (`Runtime.ExitError`).
    Crashed { detail: String },
    /// The deadline passed; Lambda killed the environment (`Sandbox.Timedout`).
    TimedOut,
    /// The runtime never took the event: it exited, reported an init error, or
    /// exceeded the initialisation limit (`Runtime.InitError` / `Runtime.ExitError`).
    InitFailed { detail: String },
    /// Reserved concurrency reached (`TooManyRequestsException`); never ran.
    Throttled,
}

impl Outcome {
    /// An invocation that failed as a whole, as an event source mapping sees it.
    pub fn is_function_error(&self) -> bool {
        !matches!(self, Outcome::Success(_) | Outcome::Throttled)
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Success(_) => "success",
            Outcome::FunctionError { .. } => "function_error",
            Outcome::Crashed { .. } => "crashed",
            Outcome::TimedOut => "timed_out",
            Outcome::InitFailed { .. } => "init_failed",
            Outcome::Throttled => "throttled",
        }
    }
}

/// One invocation, as the caller sees it.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    pub environment: u64,
    pub cold_start: bool,
    pub outcome: Outcome,
    pub duration: Duration,
    /// From the runtime taking the event (`next` answered) to its answer: the handler's
    /// time, without the environment's start. `None` when the event was never taken.
    pub handler: Option<Duration>,
    /// The environment process's peak resident set (`VmHWM`, KiB) after the invocation,
    /// while it is still alive.
    pub peak_rss_kib: Option<u64>,
    /// The fault injected into it, if any.
    pub chaos: Option<Chaos>,
}

/// Counters of a function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionStats {
    pub invocations: u64,
    pub cold_starts: u64,
    pub successes: u64,
    pub function_errors: u64,
    pub crashes: u64,
    pub timeouts: u64,
    pub init_failures: u64,
    pub throttles: u64,
    pub kills_injected: u64,
    pub freezes_injected: u64,
    /// Calls the Runtime API refused (a runtime protocol error).
    pub runtime_api_refusals: u64,
}

struct Environment {
    id: u64,
    api: RuntimeApi,
    child: Child,
    pid: Option<u32>,
    spawned_at: Instant,
    initialized: bool,
    dead: bool,
    refusals: u64,
    /// When the runtime took the current invocation.
    delivered_at: Option<Instant>,
}

impl Environment {
    async fn spawn(config: &FunctionConfig, id: u64) -> Result<Self, String> {
        let api = RuntimeApi::start()
            .await
            .map_err(|e| format!("Runtime API: {e}"))?;
        let log_path = config.log_dir.join(format!("{}-env{id}.log", config.name));
        let stdout =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let stderr = stdout.try_clone().map_err(|e| e.to_string())?;
        let log_stream = format!(
            "{}/[$LATEST]{}",
            chrono::Utc::now().format("%Y/%m/%d"),
            uuid::Uuid::new_v4().simple()
        );
        let mut command = Command::new(&config.binary);
        command
            .env_clear()
            .envs(config.process_environment(&api.endpoint(), &log_stream))
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        if let Some(root) = config.binary.parent() {
            command.current_dir(root);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", config.binary.display()))?;
        Ok(Self {
            id,
            pid: child.id(),
            api,
            child,
            spawned_at: Instant::now(),
            initialized: false,
            dead: false,
            refusals: 0,
            delivered_at: None,
        })
    }

    /// `VmHWM` of the process, in KiB (Linux).
    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    }

    fn alive(&mut self) -> bool {
        !self.dead && matches!(self.child.try_wait(), Ok(None))
    }

    fn kill(&mut self) {
        self.dead = true;
        let _ = self.child.start_kill();
    }

    fn freeze(&self) {
        if let Some(pid) = self.pid {
            let _ = std::process::Command::new("kill")
                .args(["-STOP", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Run one invocation to its end.
    async fn invoke(
        &mut self,
        queued: QueuedInvocation,
        init_timeout: Duration,
        chaos: &Mutex<VecDeque<(u64, Chaos)>>,
        applied: &mut Option<Chaos>,
    ) -> Outcome {
        let request_id = queued.request_id.clone();
        if let Err(e) = self.api.queue(queued).await {
            self.kill();
            return Outcome::InitFailed { detail: e };
        }
        let init_deadline = (!self.initialized).then(|| self.spawned_at + init_timeout);
        let mut deadline: Option<Instant> = None;
        let mut chaos_due: Option<(Instant, u64, Chaos)> = None;
        loop {
            let until_deadline = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let until_init_limit = async {
                match (deadline, init_deadline) {
                    (None, Some(at)) => tokio::time::sleep_until(at).await,
                    _ => std::future::pending().await,
                }
            };
            let until_chaos = async {
                match chaos_due {
                    Some((at, _, _)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let Self { api, child, .. } = self;
            tokio::select! {
                event = api.event() => match event {
                    Some(RuntimeEvent::Delivered { request_id: id, deadline_ms }) if id == request_id => {
                        self.initialized = true;
                        self.delivered_at = Some(Instant::now());
                        let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
                        deadline = Some(Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms)));
                        if let Some((chaos_id, planned)) = lock(chaos).front().copied() {
                            chaos_due = Some((Instant::now() + planned.after(), chaos_id, planned));
                        }
                    }
                    Some(RuntimeEvent::Response { request_id: id, body }) if id == request_id => {
                        return Outcome::Success(body);
                    }
                    Some(RuntimeEvent::ResponseTooLarge { request_id: id, bytes }) if id == request_id => {
                        return Outcome::FunctionError {
                            error_type: "Function.ResponseSizeTooLarge".into(),
                            error_message: format!("response of {bytes} bytes"),
                        };
                    }
                    Some(RuntimeEvent::Error { request_id: id, error_type, error_message }) if id == request_id => {
                        return Outcome::FunctionError { error_type, error_message };
                    }
                    Some(RuntimeEvent::InitError { error_type, error_message }) => {
                        self.kill();
                        return Outcome::InitFailed { detail: format!("{error_type}: {error_message}") };
                    }
                    Some(RuntimeEvent::Refused { .. }) => self.refusals += 1,
                    Some(_) => {}
                    None => {
                        self.kill();
                        return Outcome::Crashed { detail: "the Runtime API stopped".into() };
                    }
                },
                status = child.wait() => {
                    self.dead = true;
                    let detail = match status {
                        Ok(status) => format!("Runtime.ExitError: {status}"),
                        Err(e) => format!("Runtime.ExitError: {e}"),
                    };
                    return if deadline.is_some() {
                        Outcome::Crashed { detail }
                    } else {
                        Outcome::InitFailed { detail }
                    };
                }
                _ = until_deadline => {
                    self.kill();
                    let _ = self.child.wait().await;
                    return Outcome::TimedOut;
                }
                _ = until_init_limit => {
                    self.kill();
                    let _ = self.child.wait().await;
                    return Outcome::InitFailed { detail: format!("the init phase exceeded {} s", init_timeout.as_secs()) };
                }
                _ = until_chaos => {
                    if let Some((_, chaos_id, planned)) = chaos_due.take() {
                        let mut queue = lock(chaos);
                        // Applied once: only if no other invocation used it meanwhile.
                        if let Some(index) = queue.iter().position(|(id, _)| *id == chaos_id) {
                            queue.remove(index);
                            drop(queue);
                            *applied = Some(planned);
                            match planned {
                                Chaos::Kill { .. } => self.kill(),
                                Chaos::Freeze { .. } => self.freeze(),
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A function: its configuration, its warm environments, its counters.
pub struct LambdaFunction {
    config: FunctionConfig,
    idle: Mutex<Vec<Environment>>,
    running: AtomicU32,
    next_environment: AtomicU64,
    next_chaos: AtomicU64,
    chaos: Mutex<VecDeque<(u64, Chaos)>>,
    stats: Mutex<FunctionStats>,
    history: Mutex<Vec<Invocation>>,
}

struct RunningGuard<'a>(&'a AtomicU32);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn trace_id() -> String {
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let root = uuid::Uuid::new_v4().simple().to_string();
    let parent = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "Root=1-{now:08x}-{};Parent={};Sampled=0",
        &root[..24],
        &parent[..16]
    )
}

impl LambdaFunction {
    pub fn new(config: FunctionConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            idle: Mutex::new(Vec::new()),
            running: AtomicU32::new(0),
            next_environment: AtomicU64::new(1),
            next_chaos: AtomicU64::new(1),
            chaos: Mutex::new(VecDeque::new()),
            stats: Mutex::new(FunctionStats::default()),
            history: Mutex::new(Vec::new()),
        })
    }

    pub fn config(&self) -> &FunctionConfig {
        &self.config
    }

    /// Invocations in progress.
    pub fn running(&self) -> u32 {
        self.running.load(Ordering::SeqCst)
    }

    pub fn stats(&self) -> FunctionStats {
        lock(&self.stats).clone()
    }

    /// Every invocation so far, oldest first.
    pub fn history(&self) -> Vec<Invocation> {
        lock(&self.history).clone()
    }

    /// Inject a fault into the first coming invocation still running `after` its
    /// delivery (an invocation that ends sooner leaves it armed for the next).
    pub fn arm(&self, chaos: Chaos) {
        let id = self.next_chaos.fetch_add(1, Ordering::SeqCst);
        lock(&self.chaos).push_back((id, chaos));
    }

    /// Faults armed and not yet applied.
    pub fn armed(&self) -> usize {
        lock(&self.chaos).len()
    }

    fn take_idle(&self) -> Option<Environment> {
        let mut idle = lock(&self.idle);
        while let Some(mut environment) = idle.pop() {
            if environment.alive() {
                return Some(environment);
            }
        }
        None
    }

    /// Kill every warm environment (as Lambda recycles them).
    pub fn recycle(&self) {
        let drained: Vec<Environment> = lock(&self.idle).drain(..).collect();
        for mut environment in drained {
            environment.kill();
        }
    }

    /// Invoke synchronously (`RequestResponse`), as an event source mapping or a
    /// scheduler does.
    pub async fn invoke(&self, payload: Bytes) -> Invocation {
        let started = Instant::now();
        let request_id = uuid::Uuid::new_v4().to_string();
        let before = self.running.fetch_add(1, Ordering::SeqCst);
        let _running = RunningGuard(&self.running);
        if self
            .config
            .reserved_concurrency
            .is_some_and(|max| before >= max)
        {
            return self.finish(Invocation {
                request_id,
                environment: 0,
                cold_start: false,
                outcome: Outcome::Throttled,
                duration: started.elapsed(),
                handler: None,
                peak_rss_kib: None,
                chaos: None,
            });
        }
        let (mut environment, cold_start) = match self.take_idle() {
            Some(environment) => (environment, false),
            None => {
                let id = self.next_environment.fetch_add(1, Ordering::SeqCst);
                match Environment::spawn(&self.config, id).await {
                    Ok(environment) => (environment, true),
                    Err(detail) => {
                        return self.finish(Invocation {
                            request_id,
                            environment: id,
                            cold_start: true,
                            outcome: Outcome::InitFailed { detail },
                            duration: started.elapsed(),
                            handler: None,
                            peak_rss_kib: None,
                            chaos: None,
                        })
                    }
                }
            }
        };
        let queued = QueuedInvocation {
            request_id: request_id.clone(),
            payload,
            timeout: self.config.timeout,
            invoked_function_arn: self.config.arn.clone(),
            trace_id: trace_id(),
        };
        let mut applied = None;
        environment.delivered_at = None;
        let outcome = environment
            .invoke(queued, self.config.init_timeout, &self.chaos, &mut applied)
            .await;
        let handler = environment.delivered_at.take().map(|at| at.elapsed());
        let peak_rss_kib = if environment.alive() {
            environment.peak_rss_kib()
        } else {
            None
        };
        let invocation = Invocation {
            request_id,
            environment: environment.id,
            cold_start,
            outcome,
            duration: started.elapsed(),
            handler,
            peak_rss_kib,
            chaos: applied,
        };
        {
            let mut stats = lock(&self.stats);
            stats.runtime_api_refusals += std::mem::take(&mut environment.refusals);
        }
        let reusable = matches!(
            invocation.outcome,
            Outcome::Success(_) | Outcome::FunctionError { .. }
        ) && environment.alive();
        if reusable {
            lock(&self.idle).push(environment);
        } else {
            environment.kill();
        }
        self.finish(invocation)
    }

    fn finish(&self, invocation: Invocation) -> Invocation {
        {
            let mut stats = lock(&self.stats);
            stats.invocations += 1;
            if invocation.cold_start {
                stats.cold_starts += 1;
            }
            match &invocation.outcome {
                Outcome::Success(_) => stats.successes += 1,
                Outcome::FunctionError { .. } => stats.function_errors += 1,
                Outcome::Crashed { .. } => stats.crashes += 1,
                Outcome::TimedOut => stats.timeouts += 1,
                Outcome::InitFailed { .. } => stats.init_failures += 1,
                Outcome::Throttled => stats.throttles += 1,
            }
            match invocation.chaos {
                Some(Chaos::Kill { .. }) => stats.kills_injected += 1,
                Some(Chaos::Freeze { .. }) => stats.freezes_injected += 1,
                None => {}
            }
        }
        lock(&self.history).push(invocation.clone());
        invocation
    }
}

impl Drop for LambdaFunction {
    fn drop(&mut self) {
        self.recycle();
    }
}
