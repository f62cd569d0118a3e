//! The engine alone, embedded: a job queue with a max-heap index by priority, an ordered
//! index by queue, an atomic batch, a snapshot that later writes do not change, and paging.
//!
//! `cargo run --example engine`

use serde::{Deserialize, Serialize};
use weft::Store;
use weft::store::{Condition, IndexDef, Query, Scalar};
use weft::typed::{Table, TypedError};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Job {
    queue: String,
    priority: i64,
    payload: String,
}

fn main() -> Result<(), TypedError> {
    let jobs: Table<u64, Job> = Table::new("jobs").with_attrs(|j: &Job| {
        vec![("priority".into(), Scalar::I64(j.priority)), ("queue".into(), Scalar::from(j.queue.as_str()))]
    });
    let mut store = Store::default();
    jobs.create(&mut store)?;
    store.create_index("jobs", IndexDef::max_heap("by_priority", "priority"))?;
    store.create_index("jobs", IndexDef::ordered("by_queue", "queue"))?;

    for id in 0..10u64 {
        let queue = if id % 2 == 0 { "email" } else { "report" };
        let job = Job { queue: queue.into(), priority: (id as i64 * 7) % 10, payload: format!("job {id}") };
        jobs.put(&mut store, &id, &job)?;
    }
    println!("{} jobs queued at version {}", store.count("jobs")?, store.version());

    // A snapshot: O(1), and unchanged by what follows.
    let before = store.snapshot();

    // Two writes that apply together or not at all: job 100 only if it is new.
    let urgent = Job { queue: "email".into(), priority: 100, payload: "page the on-call".into() };
    let batch = [jobs.put_op(&100, &urgent)?.with_condition(Condition::Absent), jobs.delete_op(&3)];
    let written = store.apply(&batch)?;
    println!("batch applied at version {}", written.version);

    // The three most urgent, without taking them.
    for (id, job) in jobs.top_k(&store, "by_priority", 3)? {
        println!("top: {id} priority {} ({})", job.priority, job.payload);
    }
    // Take the most urgent off the queue.
    if let Some((id, job)) = jobs.pop_max(&mut store, "by_priority")? {
        println!("took {id}: {}", job.payload);
    }

    // The report queue through the ordered index, two at a time.
    let mut query = Query::eq("by_queue", Scalar::from("report"), 2);
    loop {
        let page = store.query("jobs", &query)?;
        let ids: Vec<u64> = page.records.iter().map(|r| jobs.decode(r).map(|(id, _)| id)).collect::<Result<_, _>>()?;
        println!("report page: {ids:?}");
        match page.next {
            Some(token) => query.token = Some(token),
            None => break,
        }
    }

    // Keys 4 to 7, in key order.
    let (range, _) = jobs.scan(&store, 4..=7, false, 100, None)?;
    println!("ids 4..=7 now: {:?}", range.iter().map(|(id, _)| *id).collect::<Vec<_>>());

    let then = before.table("jobs").map(|t| t.len()).unwrap_or(0);
    println!("the snapshot still holds {then} jobs; the store {}", store.count("jobs")?);
    Ok(())
}

#[test]
fn runs() {
    main().expect("the example runs");
}
