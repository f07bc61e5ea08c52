//! `VerifyIdCardBatch`: a bidirectional stream where every item the server
//! reads gets exactly one answer, in completion order, through the same
//! validation and the same shared upstream stack as `VerifyIdCard`.
//!
//! One driver task per stream reads items, runs each as its own task and
//! forwards answers. Memory stays flat in batch length:
//! - the driver reads the next item only while the stream has fewer than
//!   `per_stream` items in flight and holds a permit of the global cap, so a
//!   busy gateway stops reading and HTTP/2 flow control pushes back on the
//!   client;
//! - an item's image is dropped as soon as its request body is built;
//! - the duplicate check keeps a 64-bit hash per item id, not the id.
//!
//! How the stream ends: OK once the client has half-closed and every item is
//! answered; the client going away aborts in-flight items and starts no new
//! upstream call; server shutdown stops reading, lets in-flight items finish
//! within the drain budget and answers the rest UNAVAILABLE; the call's
//! deadline answers unfinished items DEADLINE_EXCEEDED just before it
//! passes. Trailers carry `x-batch-received`, `x-batch-succeeded` and
//! `x-batch-failed`.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt as _, Stream, StreamExt as _};
use prost::Message as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::metadata::MetadataValue;
use tracing::{Instrument as _, Span};

use crate::metrics::Metrics;
use crate::proto::verify_id_card_batch_response::Outcome;
use crate::proto::{VerifyIdCardBatchRequest, VerifyIdCardBatchResponse};
use crate::server::auth::{Caller, caller_name};
use crate::server::error::Error;
use crate::server::observe::{self, BatchCounts, Rpc};
use crate::server::spend::idempotency::IdempotencyKey;
use crate::server::validate::{InvalidArgument, Verification};
use crate::server::verifier::Verifier;

/// The longest `item_id` accepted, in characters.
pub(crate) const MAX_ITEM_ID_LEN: usize = 128;
/// How long before the call's deadline unfinished items are answered, so the
/// answers reach the client before it stops listening.
const DEADLINE_MARGIN: Duration = Duration::from_millis(50);

/// The items of one batch stream, as decoded by its transport (gRPC
/// messages, or NDJSON lines); a decode failure is the stream's last item.
pub(crate) type Inbound =
    Pin<Box<dyn Stream<Item = Result<VerifyIdCardBatchRequest, Status>> + Send + 'static>>;

/// The answer stream of `VerifyIdCardBatch`.
pub(crate) type BatchStream =
    Pin<Box<dyn Stream<Item = Result<VerifyIdCardBatchResponse, Status>> + Send + 'static>>;

/// Limits shared by every batch stream.
#[derive(Debug, Clone)]
pub(crate) struct BatchSettings {
    /// Items of one stream in flight at most.
    pub(crate) per_stream: usize,
    /// Items of all streams in flight at most (shared permits).
    pub(crate) global: Arc<Semaphore>,
    /// Items one stream may send at most; later items get RESOURCE_EXHAUSTED.
    pub(crate) max_items: Option<u64>,
    /// How long in-flight items may finish after shutdown starts.
    pub(crate) drain_timeout: Duration,
    /// Where items and streams are counted.
    pub(crate) metrics: Arc<Metrics>,
}

/// Who opened one stream, how, and until when.
pub(crate) struct StreamCall {
    /// The stream's RPC span; item spans are its children.
    pub(crate) span: Span,
    /// The stream's method and transport, for reports.
    pub(crate) rpc: Rpc,
    /// The caller's deadline for the whole stream.
    pub(crate) deadline: Option<Instant>,
    /// Who opened the stream (items count against its share).
    pub(crate) caller: Option<Caller>,
    /// The stream's `idempotency-key`: each item's key is `<key>/<item_id>`.
    pub(crate) idempotency_key: Option<IdempotencyKey>,
}

/// Starts the driver for one stream and returns its answers.
pub(crate) fn start(
    verifier: Verifier,
    settings: BatchSettings,
    inbound: Inbound,
    shutdown: CancellationToken,
    call: StreamCall,
) -> BatchStream {
    let StreamCall {
        span,
        rpc,
        deadline,
        caller,
        idempotency_key,
    } = call;
    let (answers, receiver) = mpsc::channel(settings.per_stream.max(1));
    let driver = Driver {
        started: Instant::now(),
        span: span.clone(),
        rpc,
        caller,
        idempotency_key,
        verifier,
        settings,
        answers,
        deadline: deadline.map(|d| d.checked_sub(DEADLINE_MARGIN).unwrap_or(d)),
        shutdown,
        in_flight: JoinSet::new(),
        in_flight_ids: HashMap::new(),
        seen_ids: HashSet::new(),
        id_hasher: RandomState::new(),
        counts: BatchCounts::default(),
    };
    let last_word = driver.answers.clone();
    let metrics = Arc::clone(&driver.settings.metrics);
    tokio::spawn(
        async move {
            // A bug in the driver must not end the stream as if it were OK
            // (which a silently closed answer channel would do).
            if AssertUnwindSafe(driver.run(inbound))
                .catch_unwind()
                .await
                .is_err()
            {
                metrics.panics.inc();
                let _ = last_word.send(Err(Status::from(Error::Panicked))).await;
            }
        }
        .instrument(span),
    );
    Box::pin(ReceiverStream::new(receiver))
}

/// Why reading stopped before the client half-closed.
enum Cut {
    /// The server is shutting down.
    Shutdown,
    /// The call's deadline is (almost) reached.
    Deadline,
    /// The inbound stream failed (e.g. an oversized message).
    Inbound(Status),
}

struct Driver {
    started: Instant,
    /// The stream's RPC span; item spans are its children.
    span: Span,
    /// The stream's method and transport, for reports.
    rpc: Rpc,
    /// Who opened the stream (items count against its share).
    caller: Option<Caller>,
    /// The stream's idempotency key, if any.
    idempotency_key: Option<IdempotencyKey>,
    verifier: Verifier,
    settings: BatchSettings,
    answers: mpsc::Sender<Result<VerifyIdCardBatchResponse, Status>>,
    deadline: Option<Instant>,
    shutdown: CancellationToken,
    in_flight: JoinSet<VerifyIdCardBatchResponse>,
    in_flight_ids: HashMap<Id, InFlightItem>,
    seen_ids: HashSet<u64>,
    id_hasher: RandomState,
    counts: BatchCounts,
}

/// What the driver keeps of an item while its task runs, to answer and
/// report it if the task is aborted.
struct InFlightItem {
    item_id: String,
    span: Span,
    started: Instant,
}

impl Driver {
    async fn run(mut self, mut inbound: Inbound) {
        let mut permit: Option<OwnedSemaphorePermit> = None;
        let mut half_closed = false;
        let mut cut: Option<Cut> = None;
        let never = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let deadline = self.deadline.unwrap_or(never);
        let mut drain_until = never;

        loop {
            let reading = !half_closed && cut.is_none();
            if !reading && self.in_flight.is_empty() {
                break;
            }
            let has_room = self.in_flight.len() < self.settings.per_stream;
            tokio::select! {
                biased;
                () = self.answers.closed() => {
                    // The client cancelled or went away: drop in-flight
                    // items, start nothing new.
                    self.cancelled().await;
                    return;
                }
                () = tokio::time::sleep_until(deadline), if !matches!(cut, Some(Cut::Deadline)) => {
                    self.answer_all_in_flight(|| Error::DeadlineExceeded).await;
                    if !half_closed {
                        cut = Some(Cut::Deadline);
                    }
                    break;
                }
                () = tokio::time::sleep_until(drain_until), if drain_until != never => {
                    self.answer_all_in_flight(|| Error::ShuttingDown).await;
                    break;
                }
                // Shutdown drains every stream, half-closed or not: items
                // already read get the drain budget, then an answer.
                () = self.shutdown.cancelled(), if drain_until == never => {
                    drain_until = Instant::now() + self.settings.drain_timeout;
                    if reading {
                        cut = Some(Cut::Shutdown);
                    }
                }
                Some(joined) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                    let answer = match joined {
                        Ok((id, answer)) => {
                            self.in_flight_ids.remove(&id);
                            answer
                        }
                        Err(failure) => {
                            // A panicking item still gets its answer (the
                            // panic hook logged where it happened).
                            self.settings.metrics.panics.inc();
                            let item = self.in_flight_ids.remove(&failure.id());
                            let item_id = match item {
                                Some(item) => {
                                    self.report_item(&item, &Error::Panicked);
                                    item.item_id
                                }
                                None => String::new(),
                            };
                            error_answer(item_id, Status::from(Error::Panicked))
                        }
                    };
                    if !self.send(answer).await {
                        return;
                    }
                }
                acquired = Arc::clone(&self.settings.global).acquire_owned(),
                    if reading && has_room && permit.is_none() =>
                {
                    permit = acquired.ok();
                }
                next = inbound.next(), if reading && has_room && permit.is_some() => match (next, permit.take()) {
                    (Some(Ok(item)), Some(taken)) => {
                        if !self.accept(item, taken).await {
                            return;
                        }
                    }
                    (Some(Ok(_)), None) => unreachable!("the branch runs only with a permit"),
                    (Some(Err(status)), _) => {
                        cut = Some(Cut::Inbound(inbound_failure(status, self.counts.received)));
                    }
                    (None, _) => half_closed = true,
                },
            }
        }
        self.finish(cut).await;
    }

    /// Takes one item: answers it at once when it is invalid, or starts it.
    /// Returns false when the client has gone.
    async fn accept(
        &mut self,
        item: VerifyIdCardBatchRequest,
        permit: OwnedSemaphorePermit,
    ) -> bool {
        let started = Instant::now();
        let span = observe::item_span(&self.span, self.counts.received);
        self.counts.received += 1;
        let item_id = item.item_id;
        let checked = self.check_item(&item_id, item.request);
        let metrics = Arc::clone(&self.settings.metrics);
        let verification = match checked {
            Ok(verification) => verification,
            Err(error) => {
                let outcome = observe::Outcome::failed(&error);
                let caller = caller_name(self.caller.as_ref());
                observe::report(
                    &span,
                    self.rpc.item(),
                    caller,
                    outcome,
                    started.elapsed(),
                    &metrics,
                );
                return self.send(error_answer(item_id, Status::from(error))).await;
            }
        };
        let verifier = self.verifier.clone();
        let deadline = self.deadline;
        let caller = self.caller.clone();
        let answer_id = item_id.clone();
        let rpc = self.rpc;
        let key = self
            .idempotency_key
            .as_ref()
            .map(|key| key.for_item(&item_id));
        let task = async move {
            let _in_flight = GaugeGuard::up(&metrics.batch_items_in_flight);
            let result = verifier
                .verify_keyed(verification, caller.as_ref(), deadline, key.as_ref())
                .await
                .result;
            drop(permit);
            let outcome = observe::Outcome::of(&result);
            observe::report(
                &Span::current(),
                rpc.item(),
                caller_name(caller.as_ref()),
                outcome,
                started.elapsed(),
                &metrics,
            );
            match result {
                Ok(result) => VerifyIdCardBatchResponse {
                    item_id: answer_id,
                    outcome: Some(Outcome::Result(result)),
                },
                Err(error) => error_answer(answer_id, Status::from(error)),
            }
        };
        let handle = self.in_flight.spawn(task.instrument(span.clone()));
        let item = InFlightItem {
            item_id,
            span,
            started,
        };
        self.in_flight_ids.insert(handle.id(), item);
        true
    }

    fn check_item(
        &mut self,
        item_id: &str,
        request: Option<crate::proto::VerifyIdCardRequest>,
    ) -> Result<Verification, Error> {
        if item_id.is_empty() {
            return Err(InvalidArgument::new("item_id", "is required", "MissingParameter").into());
        }
        if item_id.chars().count() > MAX_ITEM_ID_LEN {
            return Err(InvalidArgument::new(
                "item_id",
                format!("is longer than {MAX_ITEM_ID_LEN} characters"),
                "InvalidParameterValue",
            )
            .into());
        }
        if !self.seen_ids.insert(self.id_hasher.hash_one(item_id)) {
            return Err(InvalidArgument::new(
                "item_id",
                "repeats an item_id already sent on this stream",
                "InvalidParameterValue",
            )
            .into());
        }
        if let Some(max) = self.settings.max_items
            && self.counts.received > max
        {
            return Err(Error::BatchTooLarge { max_items: max });
        }
        let request = request
            .ok_or_else(|| InvalidArgument::new("request", "is required", "MissingParameter"))?;
        Ok(self.verifier.parse(request, "request.")?)
    }

    /// Aborts every in-flight item and answers it with `error`.
    async fn answer_all_in_flight(&mut self, error: fn() -> Error) {
        self.in_flight.abort_all();
        let status = Status::from(error());
        let error = error();
        while self.in_flight.join_next().await.is_some() {}
        for (_, item) in std::mem::take(&mut self.in_flight_ids) {
            self.report_item(&item, &error);
            if !self.send(error_answer(item.item_id, status.clone())).await {
                return;
            }
        }
    }

    /// Reports an item that ended without its task's own report.
    fn report_item(&self, item: &InFlightItem, error: &Error) {
        observe::report(
            &item.span,
            self.rpc.item(),
            caller_name(self.caller.as_ref()),
            observe::Outcome::failed(error),
            item.started.elapsed(),
            &self.settings.metrics,
        );
    }

    /// The client cancelled the call or went away: in-flight items are
    /// dropped (no new upstream call starts), and items and stream are
    /// reported `CANCELLED`.
    async fn cancelled(mut self) {
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        for (_, item) in std::mem::take(&mut self.in_flight_ids) {
            self.report_item(&item, &Error::Cancelled);
            self.counts.failed += 1;
        }
        observe::report_stream(
            &self.span,
            self.rpc,
            caller_name(self.caller.as_ref()),
            tonic::Code::Cancelled,
            self.counts,
            self.started.elapsed(),
            &self.settings.metrics,
        );
    }

    /// Sends one answer and counts it; false when the client has gone.
    async fn send(&mut self, answer: VerifyIdCardBatchResponse) -> bool {
        match answer.outcome {
            Some(Outcome::Result(_)) => self.counts.succeeded += 1,
            _ => self.counts.failed += 1,
        }
        self.answers.send(Ok(answer)).await.is_ok()
    }

    /// Ends the stream with the status `cut` calls for and the counts.
    async fn finish(self, cut: Option<Cut>) {
        let mut status = match cut {
            None => Status::ok(""),
            Some(Cut::Shutdown) => Status::from(Error::ShuttingDown),
            Some(Cut::Deadline) => Status::from(Error::DeadlineExceeded),
            Some(Cut::Inbound(status)) => status,
        };
        let counts = self.counts;
        let metadata = status.metadata_mut();
        metadata.insert("x-batch-received", MetadataValue::from(counts.received));
        metadata.insert("x-batch-succeeded", MetadataValue::from(counts.succeeded));
        metadata.insert("x-batch-failed", MetadataValue::from(counts.failed));
        observe::report_stream(
            &self.span,
            self.rpc,
            caller_name(self.caller.as_ref()),
            status.code(),
            counts,
            self.started.elapsed(),
            &self.settings.metrics,
        );
        // Tonic turns a final `Err(status)` into the trailers, OK included.
        let _ = self.answers.send(Err(status)).await;
    }
}

/// Holds a gauge one up while alive (an aborted item still leaves it).
struct GaugeGuard(prometheus_client::metrics::gauge::Gauge);

impl GaugeGuard {
    fn up(gauge: &prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The gateway's error for a failure of the inbound stream at message
/// `index` (0-based): tonic's decode and size errors become
/// `MalformedMessage` / `MessageTooLarge` naming the message; anything else
/// (the client's own status, a reset) is kept.
fn inbound_failure(status: Status, index: u64) -> Status {
    let error = match status.code() {
        tonic::Code::Internal => Error::MalformedMessage { index: Some(index) },
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted => {
            Error::MessageTooLarge { index: Some(index) }
        }
        _ => return status,
    };
    Status::from(error)
}

/// An item's error answer, with the same code and details as the unary RPC.
fn error_answer(item_id: String, status: Status) -> VerifyIdCardBatchResponse {
    let rich = tonic_types::pb::Status::decode(status.details())
        .ok()
        .filter(|rich| rich.code == status.code() as i32)
        .unwrap_or_else(|| tonic_types::pb::Status {
            code: status.code() as i32,
            message: status.message().to_owned(),
            details: Vec::new(),
        });
    VerifyIdCardBatchResponse {
        item_id,
        outcome: Some(Outcome::Error(rich)),
    }
}
