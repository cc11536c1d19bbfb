//! The onion's own tests: order, short circuits, panics, timing and inspection.

use super::*;
use std::sync::Mutex;
use std::time::Duration;

/// A response type for tests: the trail of layers plus the final answer.
#[derive(Debug, PartialEq)]
struct Reply(String);

impl FromPanic for Reply {
    fn from_panic(panic: &Panic<'_>) -> Self {
        Reply(format!("panic in {}", panic.layer))
    }
}

type Log = Arc<Mutex<Vec<String>>>;

struct Record {
    label: &'static str,
    log: Log,
}

impl Middleware<String, Reply> for Record {
    async fn handle(&self, req: String, next: Next<String, Reply>) -> Reply {
        self.log.lock().unwrap().push(format!("{} in", self.label));
        let res = next.run(req).await;
        self.log.lock().unwrap().push(format!("{} out", self.label));
        res
    }
}

struct ShortCircuit;

impl Middleware<String, Reply> for ShortCircuit {
    async fn handle(&self, _req: String, _next: Next<String, Reply>) -> Reply {
        Reply("rejected".into())
    }
}

fn app(log: Log) -> impl Endpoint<String, Reply> {
    move |req: String| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push("app".into());
            Reply(format!("app saw {req}"))
        }
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

#[test]
fn first_layer_added_is_outermost() {
    let log: Log = Default::default();
    let service = Stack::new()
        .with_named("A", Record { label: "A", log: log.clone() })
        .with_named("B", Record { label: "B", log: log.clone() })
        .with_named("C", Record { label: "C", log: log.clone() })
        .serve(app(log.clone()));
    let reply = block_on(service.call("req".into()));
    assert_eq!(reply, Reply("app saw req".into()));
    assert_eq!(*log.lock().unwrap(), ["A in", "B in", "C in", "app", "C out", "B out", "A out"]);
}

#[test]
fn short_circuit_stops_descent_but_outer_layers_see_the_response() {
    let log: Log = Default::default();
    let seen = Arc::new(Mutex::new(None));
    let seen_by_outer = seen.clone();
    let service = Stack::new()
        .with(Record { label: "A", log: log.clone() })
        .with(from_fn(move |req: String, next: Next<String, Reply>| {
            let seen = seen_by_outer.clone();
            async move {
                let res = next.run(req).await;
                *seen.lock().unwrap() = Some(res.0.clone());
                res
            }
        }))
        .with(ShortCircuit)
        .with(Record { label: "C", log: log.clone() })
        .serve(app(log.clone()));
    let reply = block_on(service.call("req".into()));
    assert_eq!(reply, Reply("rejected".into()));
    assert_eq!(*log.lock().unwrap(), ["A in", "A out"]);
    assert_eq!(seen.lock().unwrap().as_deref(), Some("rejected"));
}

#[test]
fn from_fn_layers_and_struct_layers_mix() {
    let service = Stack::new()
        .with(from_fn(|req: String, next: Next<String, Reply>| async move {
            let res = next.run(format!("{req}+outer")).await;
            Reply(format!("({})", res.0))
        }))
        .with(from_fn(|req: String, next: Next<String, Reply>| async move { next.run(format!("{req}+inner")).await }))
        .serve(|req: String| async move { Reply(req) });
    assert_eq!(block_on(service.call("r".into())), Reply("(r+outer+inner)".into()));
}

#[test]
fn a_panicking_app_becomes_a_response_that_outer_layers_still_see() {
    let log: Log = Default::default();
    let service = Stack::new().with(Record { label: "A", log: log.clone() }).serve(|_req: String| async move {
        if true {
            panic!("the app broke");
        }
        Reply(String::new())
    });
    assert_eq!(block_on(service.call("r".into())), Reply("panic in app".into()));
    assert_eq!(*log.lock().unwrap(), ["A in", "A out"]);
}

#[test]
fn a_panicking_layer_is_answered_at_its_own_boundary() {
    let log: Log = Default::default();
    let service = Stack::new()
        .with(Record { label: "A", log: log.clone() })
        .with_named(
            "boom",
            from_fn(|_req: String, _next: Next<String, Reply>| async move {
                if true {
                    panic!("layer broke");
                }
                Reply(String::new())
            }),
        )
        .with(Record { label: "C", log: log.clone() })
        .serve(app(log.clone()));
    assert_eq!(block_on(service.call("r".into())), Reply("panic in boom".into()));
    assert_eq!(*log.lock().unwrap(), ["A in", "A out"]);
}

/// A middleware whose `handle` panics before returning a future (not an `async fn`).
struct PanicsSynchronously;

impl Middleware<String, Reply> for PanicsSynchronously {
    #[allow(clippy::manual_async_fn)]
    fn handle(&self, _req: String, _next: Next<String, Reply>) -> impl Future<Output = Reply> + Send {
        if true {
            panic!("before any future exists");
        }
        async { Reply(String::new()) }
    }
}

#[test]
fn a_layer_panicking_before_its_future_exists_is_answered_in_its_own_name() {
    let log: Log = Default::default();
    let service = Stack::new().with(PanicsSynchronously).serve(app(log.clone()));
    // Caught by the `Run` around the layer, which creates the layer's future on its first poll.
    assert_eq!(block_on(service.call("r".into())), Reply("panic in PanicsSynchronously".into()));
    let outer = Stack::new()
        .with(Record { label: "A", log: log.clone() })
        .with_named("sync", PanicsSynchronously)
        .serve(app(log.clone()));
    assert_eq!(block_on(outer.call("r".into())), Reply("panic in sync".into()));
    assert_eq!(*log.lock().unwrap(), ["A in", "A out"]);
}

#[test]
fn the_stack_knows_its_layers_in_order() {
    let log: Log = Default::default();
    let stack = Stack::<String, Reply>::new()
        .with_named("outer", Record { label: "A", log: log.clone() })
        .with(ShortCircuit)
        .with(from_fn(|req: String, next: Next<String, Reply>| next.run(req)).with_kind("custom"));
    let names: Vec<_> = stack.layers().iter().map(|l| (l.name().to_string(), l.kind())).collect();
    assert_eq!(
        names,
        [
            ("outer".to_string(), "Record"),
            ("ShortCircuit".to_string(), "ShortCircuit"),
            ("custom".to_string(), "custom")
        ]
    );
}

#[test]
fn a_timed_next_reports_each_layer_alone() {
    fn sleeper(ms: u64) -> impl Middleware<String, Reply> {
        from_fn(move |req: String, next: Next<String, Reply>| async move {
            std::thread::sleep(Duration::from_millis(ms));
            next.run(req).await
        })
    }
    let timings = Arc::new(Mutex::new(Vec::new()));
    let seen = timings.clone();
    let service = Stack::new()
        .with_named(
            "timing",
            from_fn(move |req: String, next: Next<String, Reply>| {
                let seen = seen.clone();
                async move {
                    let (next, timer) = next.timed();
                    let res = next.run(req).await;
                    let mut seen = seen.lock().unwrap();
                    *seen = timer.exclusive().map(|(n, d)| (n.to_string(), d)).collect();
                    seen.push(("total".into(), timer.total()));
                    res
                }
            }),
        )
        .with_named("slow", sleeper(30))
        .with_named("fast", sleeper(0))
        .serve(|req: String| async move {
            std::thread::sleep(Duration::from_millis(15));
            Reply(req)
        });
    block_on(service.call("r".into()));
    let t = timings.lock().unwrap();
    let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["slow", "fast", "app", "total"]);
    let (slow, fast, app, total) = (t[0].1, t[1].1, t[2].1, t[3].1);
    // Lower bounds only: sleeps never end early, but a loaded machine may stretch them.
    assert!(slow >= Duration::from_millis(30), "slow alone: {slow:?}");
    assert!(app >= Duration::from_millis(15), "app: {app:?}");
    assert!(fast < slow, "fast alone: {fast:?}, slow alone: {slow:?}");
    // Each layer's time excludes the layers inside it, so the parts add up to the whole.
    assert_eq!(slow + fast + app, total);
}

#[test]
fn a_timed_call_sees_every_layer_and_which_one_answered() {
    let log: Log = Default::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let inner_view = seen.clone();
    let service = Stack::new()
        .with_named(
            "timing",
            from_fn(move |req: String, next: Next<String, Reply>| {
                let seen = inner_view.clone();
                async move {
                    // Below a timed call this is a view of the same timer, from this layer inward.
                    let (next, timer) = next.timed();
                    let res = next.run(req).await;
                    *seen.lock().unwrap() = timer.exclusive().map(|(n, _)| n.to_string()).collect();
                    res
                }
            }),
        )
        .with_named("outer", Record { label: "outer", log: log.clone() })
        .with_named(
            "guard",
            from_fn(|req: String, next: Next<String, Reply>| async move {
                if req == "deny" { Reply("denied".into()) } else { next.run(req).await }
            }),
        )
        .serve(app(log.clone()));

    let (run, timer) = service.call_timed("r".into());
    block_on(run);
    let names: Vec<&str> = timer.layers().map(|t| t.name).collect();
    assert_eq!(names, ["timing", "outer", "guard", "app"]);
    assert_eq!(*seen.lock().unwrap(), ["outer", "guard", "app"]);
    assert_eq!(timer.answered_by(), Some(3), "the app answered");
    let layers: Vec<LayerTime<'_>> = timer.layers().collect();
    assert!(layers.iter().all(|t| t.entered.is_some()));
    // Entered in onion order, and each layer's time holds the ones inside it.
    assert!(layers.windows(2).all(|w| w[0].entered <= w[1].entered && w[0].inclusive >= w[1].inclusive));
    assert_eq!(layers.iter().map(|t| t.exclusive).sum::<Duration>(), timer.total());

    let (run, timer) = service.call_timed("deny".into());
    assert_eq!(block_on(run), Reply("denied".into()));
    assert_eq!(timer.answered_by(), Some(2), "the guard answered by itself");
    let app = timer.layers().last().unwrap();
    assert_eq!((app.entered, app.inclusive), (None, Duration::ZERO));
}

/// Records every hook call as text.
#[derive(Default)]
struct Trail(Mutex<Vec<String>>);

impl Inspect<String, Reply> for Trail {
    fn request(&self, layer: usize, req: &String) {
        self.0.lock().unwrap().push(format!("{layer} got {req}"));
    }
    fn response(&self, layer: usize, res: &Reply) {
        self.0.lock().unwrap().push(format!("{layer} returned {}", res.0));
    }
}

fn appending(suffix: &'static str) -> impl Middleware<String, Reply> {
    from_fn(move |req: String, next: Next<String, Reply>| async move {
        let res = next.run(format!("{req}{suffix}")).await;
        Reply(format!("{}{suffix}", res.0))
    })
}

#[test]
fn an_inspected_call_shows_each_layer_its_request_and_its_response_in_onion_order() {
    let service = Stack::new()
        .with_named("a", appending("+a"))
        .with_named("b", appending("+b"))
        .serve(|req: String| async move { Reply(format!("app({req})")) });
    let trail = Arc::new(Trail::default());
    let (run, timer) = service.call_inspected("r".into(), trail.clone());
    assert_eq!(block_on(run), Reply("app(r+a+b)+b+a".into()));
    assert_eq!(
        *trail.0.lock().unwrap(),
        [
            "0 got r",
            "1 got r+a",
            "2 got r+a+b",
            "2 returned app(r+a+b)",
            "1 returned app(r+a+b)+b",
            "0 returned app(r+a+b)+b+a"
        ]
    );
    // The timer of the same call: every layer entered, the app answered.
    assert_eq!(timer.layers().map(|t| t.name).collect::<Vec<_>>(), ["a", "b", "app"]);
    assert_eq!(timer.answered_by(), Some(2));
}

#[test]
fn an_inspected_call_shows_a_short_circuit() {
    let log: Log = Default::default();
    let service = Stack::new()
        .with_named("a", appending("+a"))
        .with(ShortCircuit)
        .with(Record { label: "C", log: log.clone() })
        .serve(app(log.clone()));
    let trail = Arc::new(Trail::default());
    let (run, timer) = service.call_inspected("r".into(), trail.clone());
    assert_eq!(block_on(run), Reply("rejected+a".into()));
    assert_eq!(*trail.0.lock().unwrap(), ["0 got r", "1 got r+a", "1 returned rejected", "0 returned rejected+a"]);
    assert!(log.lock().unwrap().is_empty(), "nothing inside the short circuit ran");
    assert_eq!(timer.answered_by(), Some(1));
}

#[test]
fn an_inspected_call_sees_the_response_a_panic_became() {
    let service = Stack::new()
        .with_named("a", appending("+a"))
        .with_named(
            "boom",
            from_fn(|_req: String, _next: Next<String, Reply>| async move {
                if true {
                    panic!("layer broke");
                }
                Reply(String::new())
            }),
        )
        .with(PanicsSynchronously)
        .serve(|req: String| async move { Reply(req) });
    let trail = Arc::new(Trail::default());
    let (run, _timer) = service.call_inspected("r".into(), trail.clone());
    assert_eq!(block_on(run), Reply("panic in boom+a".into()));
    assert_eq!(
        *trail.0.lock().unwrap(),
        ["0 got r", "1 got r+a", "1 returned panic in boom", "0 returned panic in boom+a"]
    );

    // A layer that panics before its future exists is answered by the `Run` around it: still seen.
    let service = Stack::new().with_named("a", appending("+a")).with(PanicsSynchronously).serve(app(Log::default()));
    let trail = Arc::new(Trail::default());
    let (run, _timer) = service.call_inspected("r".into(), trail.clone());
    assert_eq!(block_on(run), Reply("panic in PanicsSynchronously+a".into()));
    assert_eq!(
        *trail.0.lock().unwrap(),
        [
            "0 got r",
            "1 got r+a",
            "1 returned panic in PanicsSynchronously",
            "0 returned panic in PanicsSynchronously+a"
        ]
    );
}

#[test]
fn uninspected_and_untimed_calls_are_unchanged_and_small() {
    let log: Log = Default::default();
    let service = Stack::new().with(Record { label: "A", log: log.clone() }).serve(app(log.clone()));
    assert_eq!(block_on(service.call("r".into())), Reply("app saw r".into()));
    assert_eq!(*log.lock().unwrap(), ["A in", "app", "A out"]);
    // The hook costs `Next` one optional pointer and `Run` nothing.
    let words = std::mem::size_of::<usize>();
    assert!(std::mem::size_of::<Next<String, Reply>>() <= 5 * words);
    assert!(std::mem::size_of::<Run<Reply>>() <= 8 * words, "{}", std::mem::size_of::<Run<Reply>>());
}

#[test]
fn stacks_nest_as_endpoints_keeping_one_order() {
    let log: Log = Default::default();
    let inner = Stack::new().with(Record { label: "route", log: log.clone() }).serve(app(log.clone()));
    let outer = Stack::new().with(Record { label: "server", log: log.clone() }).serve(inner);
    block_on(outer.call("r".into()));
    assert_eq!(*log.lock().unwrap(), ["server in", "route in", "app", "route out", "server out"]);
}

#[test]
fn a_name_is_kept_once_however_many_stacks_use_it() {
    let first = lasting_name("auth");
    let again = lasting_name(&String::from("auth"));
    assert!(std::ptr::eq(first, again), "rebuilding a stack (a reload) must not keep its names again");
    assert_eq!(lasting_name("cors"), "cors");
    assert!(!std::ptr::eq(lasting_name("cors"), first));
}
