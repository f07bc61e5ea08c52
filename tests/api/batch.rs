//! `VerifyIdCardBatch`: exactly one answer per item the server read, under
//! success, bad input, upstream faults, cancellation, shutdown and deadlines.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use faceid_gateway::proto::verify_id_card_batch_response::Outcome;
use faceid_gateway::proto::{Verdict, VerifyIdCardBatchRequest, VerifyIdCardBatchResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::metadata::MetadataMap;
use tonic_types::RpcStatusExt;

use crate::helpers::{
    Options, TestApp, image_request, metric, request_with, spawn_app_with, wait_until, within,
};

fn item(id: &str, directives: &str) -> VerifyIdCardBatchRequest {
    VerifyIdCardBatchRequest {
        item_id: id.to_owned(),
        request: Some(request_with(directives)),
    }
}

fn flags(list: &[&str]) -> Options {
    Options {
        flags: list.iter().map(|s| (*s).to_owned()).collect(),
        ..Options::default()
    }
}

/// Everything a finished stream produced.
struct Finished {
    answers: Vec<VerifyIdCardBatchResponse>,
    status: tonic::Status,
    trailers: MetadataMap,
}

impl Finished {
    fn count(&self, key: &str) -> u64 {
        self.trailers
            .get(key)
            .unwrap_or_else(|| panic!("trailer {key} missing"))
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn by_id(&self) -> HashMap<String, Vec<&VerifyIdCardBatchResponse>> {
        let mut map: HashMap<String, Vec<&VerifyIdCardBatchResponse>> = HashMap::new();
        for answer in &self.answers {
            map.entry(answer.item_id.clone()).or_default().push(answer);
        }
        map
    }
}

/// Sends `items` (then half-closes) and reads the stream to its end.
async fn run_batch(app: &mut TestApp, items: Vec<VerifyIdCardBatchRequest>) -> Finished {
    let response = app
        .client
        .verify_id_card_batch(tokio_stream::iter(items))
        .await
        .expect("the stream opens");
    read_to_end(response.into_inner()).await
}

/// Reads `stream` to its end (at most [`STREAM_END_WITHIN`]).
async fn read_to_end(mut stream: tonic::Streaming<VerifyIdCardBatchResponse>) -> Finished {
    within("the batch stream to end", STREAM_END_WITHIN, async {
        let mut answers = Vec::new();
        let status = loop {
            match stream.message().await {
                Ok(Some(answer)) => answers.push(answer),
                Ok(None) => break tonic::Status::ok(""),
                Err(status) => break status,
            }
        };
        let trailers = if status.code() == Code::Ok {
            stream.trailers().await.ok().flatten().unwrap_or_default()
        } else {
            status.metadata().clone()
        };
        Finished {
            answers,
            status,
            trailers,
        }
    })
    .await
}

/// How long any batch stream of these tests may take, on a loaded machine.
const STREAM_END_WITHIN: Duration = Duration::from_secs(60);

fn error_of(answer: &VerifyIdCardBatchResponse) -> &tonic_types::pb::Status {
    match &answer.outcome {
        Some(Outcome::Error(status)) => status,
        other => panic!("{}: expected an error, got {other:?}", answer.item_id),
    }
}

fn verdict_of(answer: &VerifyIdCardBatchResponse) -> Verdict {
    match &answer.outcome {
        Some(Outcome::Result(result)) => result.verdict(),
        other => panic!("{}: expected a result, got {other:?}", answer.item_id),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_mixed_items_each_get_exactly_one_right_answer() {
    let mut app = spawn_app_with(flags(&[
        "--rate-limit",
        "2000",
        "--retry-base-delay",
        "5ms",
    ]))
    .await;
    let mut items = vec![item("slow", "delay=1500")];
    for i in 0..500 {
        let id = format!("item-{i}");
        items.push(match i % 5 {
            0 => item(&id, ""),
            1 => VerifyIdCardBatchRequest {
                item_id: id,
                request: Some(image_request(Bytes::from_static(b"GIF89a not allowed"))),
            },
            2 => item(&id, "result=FailedOperation.IdNameMisMatch"),
            3 => item(&id, "error=UnauthorizedOperation.Arrears"),
            _ => item(
                &id,
                &format!("key=flaky-{i},fail-first=1,error=InternalError"),
            ),
        });
    }

    let finished = run_batch(&mut app, items).await;

    assert_eq!(finished.status.code(), Code::Ok, "{:?}", finished.status);
    let by_id = finished.by_id();
    assert_eq!(by_id.len(), 501);
    assert!(
        by_id.values().all(|answers| answers.len() == 1),
        "each item answered once"
    );
    for i in 0..500 {
        let answer = by_id[&format!("item-{i}")][0];
        match i % 5 {
            0 | 4 => assert_eq!(verdict_of(answer), Verdict::Match),
            1 => {
                let error = error_of(answer);
                assert_eq!(error.code, Code::InvalidArgument as i32);
                let bad = error.get_details_bad_request().expect("BadRequest");
                assert_eq!(bad.field_violations[0].field, "request.image");
            }
            2 => assert_eq!(verdict_of(answer), Verdict::IdNameMismatch),
            _ => {
                let error = error_of(answer);
                assert_eq!(error.code, Code::FailedPrecondition as i32);
                let info = error.get_details_error_info().expect("ErrorInfo");
                assert_eq!(info.reason, "UnauthorizedOperation.Arrears");
            }
        }
    }
    let slow_position = finished
        .answers
        .iter()
        .position(|a| a.item_id == "slow")
        .unwrap();
    assert!(
        slow_position > 100,
        "the slow first item was overtaken ({slow_position})"
    );
    assert_eq!(finished.count("x-batch-received"), 501);
    assert_eq!(finished.count("x-batch-succeeded"), 301);
    assert_eq!(finished.count("x-batch-failed"), 200);
    // The slow item, 400 valid items with 100 of them retried once; the 100
    // invalid ones never sent.
    assert_eq!(app.upstream_stats().received, 1 + 400 + 100);
}

#[tokio::test]
async fn missing_duplicate_and_empty_items_are_refused_and_the_stream_goes_on() {
    let mut app = spawn_app_with(Options::default()).await;
    let items = vec![
        item("a", ""),
        item("", ""),
        item("a", ""),
        VerifyIdCardBatchRequest {
            item_id: "no-request".into(),
            request: None,
        },
        item(&"x".repeat(129), ""),
        item("b", ""),
    ];

    let finished = run_batch(&mut app, items).await;

    assert_eq!(finished.status.code(), Code::Ok);
    assert_eq!(finished.answers.len(), 6);
    let by_id = finished.by_id();
    let a = &by_id["a"];
    assert_eq!(a.len(), 2, "one result and one duplicate refusal");
    assert_eq!(
        a.iter()
            .filter(|x| matches!(x.outcome, Some(Outcome::Result(_))))
            .count(),
        1
    );
    for id in ["", "no-request", &"x".repeat(129)] {
        let error = error_of(by_id[id][0]);
        assert_eq!(error.code, Code::InvalidArgument as i32, "{id:?}");
    }
    assert_eq!(verdict_of(by_id["b"][0]), Verdict::Match);
    assert_eq!(
        (
            finished.count("x-batch-succeeded"),
            finished.count("x-batch-failed")
        ),
        (2, 4)
    );
    assert_eq!(app.upstream_stats().received, 2);
}

#[tokio::test]
async fn items_beyond_the_stream_cap_are_refused() {
    let mut app = spawn_app_with(flags(&["--batch-max-items", "3"])).await;
    let items = (0..5).map(|i| item(&format!("i{i}"), "")).collect();

    let finished = run_batch(&mut app, items).await;

    let refused: Vec<_> = finished
        .answers
        .iter()
        .filter(|a| matches!(&a.outcome, Some(Outcome::Error(e)) if e.code == Code::ResourceExhausted as i32))
        .collect();
    assert_eq!(refused.len(), 2);
    assert!(
        refused
            .iter()
            .all(|a| a.item_id == "i3" || a.item_id == "i4")
    );
    assert_eq!(app.upstream_stats().received, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_per_stream_and_across_streams_is_capped() {
    let mut app = spawn_app_with(flags(&[
        "--rate-limit",
        "2000",
        "--batch-concurrency",
        "4",
        "--batch-global-concurrency",
        "6",
    ]))
    .await;
    let batch = |prefix: &str| -> Vec<_> {
        (0..24)
            .map(|i| item(&format!("{prefix}{i}"), "delay=100"))
            .collect()
    };

    let single = run_batch(&mut app, batch("s")).await;
    assert_eq!(single.answers.len(), 24);
    assert_eq!(
        app.upstream_stats().max_in_flight,
        4,
        "one stream never exceeds 4"
    );

    app.simulator.reset_stats();
    let mut second_client = app.client.clone();
    let second = tokio::spawn(async move {
        let response = second_client
            .verify_id_card_batch(tokio_stream::iter(batch("t")))
            .await
            .unwrap();
        read_to_end(response.into_inner()).await.answers.len()
    });
    let first = run_batch(&mut app, batch("u")).await;
    assert_eq!((first.answers.len(), second.await.unwrap()), (24, 24));
    let peak = app.upstream_stats().max_in_flight;
    assert!(
        peak <= 6 && peak > 4,
        "two streams share the global cap of 6 (peak {peak})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_stream_starts_no_further_upstream_call() {
    let mut app = spawn_app_with(flags(&["--batch-concurrency", "2"])).await;
    let items: Vec<_> = (0..30)
        .map(|i| item(&format!("c{i}"), "delay=300"))
        .collect();
    let response = app
        .client
        .verify_id_card_batch(tokio_stream::iter(items))
        .await
        .unwrap();
    let mut stream = response.into_inner();
    for _ in 0..2 {
        within("an answer", Duration::from_secs(10), stream.message())
            .await
            .unwrap()
            .expect("an answer");
    }

    drop(stream);
    // The gateway has acted on the cancel once no item of it is in flight
    // (it aborts the running ones; without the cancel, 2 would run until
    // the 30 items are done).
    let admin = app.admin_addr;
    wait_until(
        "the cancelled stream's items to stop",
        Duration::from_secs(10),
        async || metric(admin, "faceid_batch_items_in_flight").await == 0,
    )
    .await;
    let at_cancel = app.upstream_stats().received;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    assert!(at_cancel <= 5, "{at_cancel}");
    assert_eq!(
        app.upstream_stats().received,
        at_cancel,
        "no call after the cancel"
    );
}

/// Opens a stream the client never half-closes, sends `items` (each with
/// `directives`), waits until `in_flight` of them reach the simulator, then
/// shuts the gateway down and reads the stream to its end.
async fn shut_down_mid_stream(
    app: TestApp,
    items: usize,
    directives: &str,
    in_flight: u64,
) -> Finished {
    let (sender, receiver) = mpsc::channel(64);
    for i in 0..items {
        sender
            .send(item(&format!("d{i}"), directives))
            .await
            .unwrap();
    }
    let mut client = app.client.clone();
    let response = client
        .verify_id_card_batch(ReceiverStream::new(receiver))
        .await
        .unwrap();
    wait_until(
        &format!("{in_flight} items in flight at the simulator"),
        Duration::from_secs(10),
        async || app.upstream_stats().in_flight >= in_flight,
    )
    .await;
    let reader = tokio::spawn(read_to_end(response.into_inner()));
    app.stop().await.expect("clean shutdown");
    let finished = reader.await.unwrap();
    drop(sender);
    finished
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_stream_answers_every_item_it_read() {
    let app = spawn_app_with(flags(&[
        "--batch-concurrency",
        "4",
        "--drain-timeout",
        "3s",
    ]))
    .await;

    let finished = shut_down_mid_stream(app, 10, "delay=300", 4).await;

    assert_eq!(
        finished.status.code(),
        Code::Unavailable,
        "{:?}",
        finished.status
    );
    let received = finished.count("x-batch-received");
    assert!(received >= 4, "{received}");
    assert_eq!(
        finished.answers.len() as u64,
        received,
        "every item read was answered"
    );
    let by_id = finished.by_id();
    assert!(by_id.values().all(|answers| answers.len() == 1));
    assert!(
        finished
            .answers
            .iter()
            .all(|a| verdict_of(a) == Verdict::Match)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_still_running_when_the_drain_ends_are_answered_unavailable() {
    let app = spawn_app_with(flags(&[
        "--batch-concurrency",
        "3",
        "--drain-timeout",
        "1500ms",
    ]))
    .await;

    let finished = shut_down_mid_stream(app, 3, "delay=5000", 3).await;

    assert_eq!(finished.answers.len(), 3);
    for answer in &finished.answers {
        let error = error_of(answer);
        assert_eq!(error.code, Code::Unavailable as i32);
        assert_eq!(
            error.get_details_error_info().unwrap().reason,
            "GatewayShuttingDown"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_bounds_the_stream_and_unfinished_items_say_so() {
    let mut app = spawn_app_with(Options::default()).await;
    let (sender, receiver) = mpsc::channel(8);
    sender.send(item("fast", "")).await.unwrap();
    sender.send(item("slow-1", "delay=5000")).await.unwrap();
    sender.send(item("slow-2", "delay=5000")).await.unwrap();
    let mut request = tonic::Request::new(ReceiverStream::new(receiver));
    request.set_timeout(Duration::from_millis(800));

    let response = app.client.verify_id_card_batch(request).await.unwrap();
    let finished = read_to_end(response.into_inner()).await;
    drop(sender);

    assert_eq!(
        finished.status.code(),
        Code::DeadlineExceeded,
        "{:?}",
        finished.status
    );
    let by_id = finished.by_id();
    assert_eq!(verdict_of(by_id["fast"][0]), Verdict::Match);
    for id in ["slow-1", "slow-2"] {
        assert_eq!(
            error_of(by_id[id][0]).code,
            Code::DeadlineExceeded as i32,
            "{id}"
        );
    }
    assert_eq!(finished.count("x-batch-received"), 3);
}
