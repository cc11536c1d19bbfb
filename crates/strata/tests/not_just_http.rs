//! The core is not tied to HTTP: a background-job pipeline runs through the same `Stack`, with
//! struct and `from_fn` middlewares, short-circuits and panic recovery.

use std::sync::{Arc, Mutex};

use strata::{FromPanic, Middleware, Next, Panic, Stack, from_fn};

/// A job to run.
#[derive(Clone, Debug)]
struct Job {
    name: String,
    attempts_left: u32,
    tenant: Option<String>,
}

/// What became of a job.
#[derive(Debug, PartialEq)]
enum Outcome {
    Done(String),
    Rejected(&'static str),
    Crashed { layer: String },
}

impl FromPanic for Outcome {
    fn from_panic(panic: &Panic<'_>) -> Self {
        Outcome::Crashed { layer: panic.layer.to_string() }
    }
}

/// Rejects jobs without a tenant (a short-circuit).
struct RequireTenant;

impl Middleware<Job, Outcome> for RequireTenant {
    async fn handle(&self, job: Job, next: Next<Job, Outcome>) -> Outcome {
        if job.tenant.is_none() {
            return Outcome::Rejected("no tenant");
        }
        next.run(job).await
    }
}

/// Retries a crashed job while it has attempts left: it needs `Next` more than once, so it re-runs
/// the inner stack through a cloned service instead.
struct Retry {
    inner: strata::Service<Job, Outcome>,
}

impl Middleware<Job, Outcome> for Retry {
    async fn handle(&self, mut job: Job, _next: Next<Job, Outcome>) -> Outcome {
        loop {
            let outcome = self.inner.call(job.clone()).await;
            match outcome {
                Outcome::Crashed { .. } if job.attempts_left > 0 => job.attempts_left -= 1,
                other => return other,
            }
        }
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

#[test]
fn a_job_pipeline_runs_through_the_same_onion() {
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let audit_log = log.clone();
    let runs = Arc::new(Mutex::new(0u32));
    let worker_runs = runs.clone();
    // The worker crashes on its first run, then succeeds.
    let worker = Stack::new().serve(move |job: Job| {
        let runs = worker_runs.clone();
        async move {
            let n = {
                let mut r = runs.lock().unwrap();
                *r += 1;
                *r
            };
            if n == 1 {
                panic!("flaky worker");
            }
            Outcome::Done(format!("{} for {}", job.name, job.tenant.unwrap_or_default()))
        }
    });
    let pipeline = Stack::new()
        .with_named(
            "audit",
            from_fn(move |job: Job, next: Next<Job, Outcome>| {
                let log = audit_log.clone();
                async move {
                    log.lock().unwrap().push(format!("start {}", job.name));
                    let outcome = next.run(job).await;
                    log.lock().unwrap().push(format!("end {outcome:?}"));
                    outcome
                }
            }),
        )
        .with(RequireTenant)
        .with(Retry { inner: worker })
        .serve(|_job: Job| async { Outcome::Rejected("unreachable: Retry answers") });

    let ok = block_on(pipeline.call(Job { name: "resize".into(), attempts_left: 2, tenant: Some("acme".into()) }));
    assert_eq!(ok, Outcome::Done("resize for acme".into()));
    assert_eq!(*runs.lock().unwrap(), 2, "crashed once, retried once");

    let rejected = block_on(pipeline.call(Job { name: "orphan".into(), attempts_left: 0, tenant: None }));
    assert_eq!(rejected, Outcome::Rejected("no tenant"));
    assert_eq!(
        *log.lock().unwrap(),
        ["start resize", "end Done(\"resize for acme\")", "start orphan", "end Rejected(\"no tenant\")"]
    );
    let names: Vec<_> = pipeline.layers().iter().map(|l| l.name()).collect();
    assert_eq!(names, ["audit", "RequireTenant", "Retry"]);
}

#[test]
fn a_crash_with_no_retries_left_is_an_outcome_not_a_panic() {
    let pipeline = Stack::new().with(RequireTenant).serve(|_job: Job| async {
        if true {
            panic!("always fails");
        }
        Outcome::Done(String::new())
    });
    let out = block_on(pipeline.call(Job { name: "x".into(), attempts_left: 0, tenant: Some("t".into()) }));
    assert_eq!(out, Outcome::Crashed { layer: "app".into() });
}
