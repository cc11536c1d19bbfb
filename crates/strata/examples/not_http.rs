//! The core is not tied to HTTP: a [`Stack`] is generic over its request and response types. Here
//! the requests are commands to a key-value store, and the layers log, authorise and time them
//! exactly as HTTP layers do, with the same guarantees: the order of the list is the onion order,
//! a panic becomes a reply at the layer that panicked, `check` reads the facts.
//!
//! ```text
//! cargo run -p strata-http --example not_http
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use strata::stack::{Next, Stack};
use strata::{Fact, Facts, FromPanic, Middleware, Panic, from_fn};

/// One command to the store.
#[derive(Debug)]
struct Command {
    user: &'static str,
    op: Op,
}

#[derive(Debug)]
enum Op {
    Get(String),
    Set(String, String),
    /// A bug in the store, to show a panic contained at its boundary.
    Crash,
}

/// The store's reply.
#[derive(Debug, PartialEq)]
enum Reply {
    Value(Option<String>),
    Done,
    Denied(&'static str),
    Failed,
}

/// A stack needs to know how to answer when a layer panics: here, a plain failure.
impl FromPanic for Reply {
    fn from_panic(_panic: &Panic<'_>) -> Self {
        Reply::Failed
    }
}

/// Only `admin` may write; it answers by itself otherwise.
struct WritersOnly;

impl Middleware<Command, Reply> for WritersOnly {
    async fn handle(&self, command: Command, next: Next<Command, Reply>) -> Reply {
        if matches!(command.op, Op::Set(..)) && command.user != "admin" {
            return Reply::Denied("only admin writes");
        }
        next.run(command).await
    }

    fn kind(&self) -> &'static str {
        "writers_only"
    }

    fn facts(&self) -> Facts {
        Facts::of(&[Fact::ShortCircuits])
    }
}

#[tokio::main]
async fn main() {
    let store: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let log = from_fn(|command: Command, next: Next<Command, Reply>| async move {
        let started = Instant::now();
        let line = format!("{} {:?}", command.user, command.op);
        let reply = next.run(command).await;
        println!("log: {line} → {reply:?} in {:?}", started.elapsed());
        reply
    })
    .with_kind("log")
    .with_facts(Facts::of(&[Fact::SeesEveryRequest]));

    let stack = Stack::new().with(log).with(WritersOnly);
    // The log sees every command, the ones `writers_only` refuses included: no diagnostic.
    println!("diagnostics: {}", stack.check().len());
    let service = stack.serve(move |command: Command| {
        let store = store.clone();
        async move {
            let mut store = store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match command.op {
                Op::Get(key) => Reply::Value(store.get(&key).cloned()),
                Op::Set(key, value) => {
                    store.insert(key, value);
                    Reply::Done
                }
                Op::Crash => panic!("the store crashed"),
            }
        }
    });

    let commands = [
        Command { user: "guest", op: Op::Set("greeting".into(), "hi".into()) },
        Command { user: "admin", op: Op::Set("greeting".into(), "hello".into()) },
        Command { user: "guest", op: Op::Get("greeting".into()) },
        Command { user: "admin", op: Op::Crash },
        Command { user: "guest", op: Op::Get("missing".into()) },
    ];
    for command in commands {
        let reply = service.call(command).await;
        println!("reply: {reply:?}");
    }
}
