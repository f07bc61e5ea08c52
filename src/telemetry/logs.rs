//! Log lines: one per event, JSON (one object per line) or text, each with
//! the trace and span ids of the current span, written without slowing the
//! calls that log.
//!
//! [`LogLayer`] formats an event straight into a reused per-thread buffer
//! (no intermediate map, no per-field allocation) and records nothing for
//! spans: the fields of a span never reach a line, so formatting them on
//! every span, as `tracing_subscriber::fmt` does, would be work for nothing.
//! [`LineWriter`] collects lines in memory and a background thread writes
//! them to stderr in batches every few milliseconds, so a call pays for a
//! short copy under a lock, not for a write system call or a thread wake-up;
//! when stderr cannot keep up, callers wait rather than lines being dropped.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use opentelemetry::trace::TraceContextExt as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Keys every JSON line has; event fields of the same name are left out.
const FIXED_KEYS: [&str; 7] = [
    "timestamp",
    "level",
    "target",
    "message",
    "span",
    "trace_id",
    "span_id",
];

/// Formats events as log lines for `W`.
pub(crate) struct LogLayer<W> {
    json: bool,
    writer: W,
}

impl<W> LogLayer<W> {
    /// Lines in JSON (or text when `json` is false) for `writer`.
    pub(crate) fn new(json: bool, writer: W) -> Self {
        Self { json, writer }
    }
}

thread_local! {
    /// The line being formatted on this thread, reused.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl<S, W> tracing_subscriber::Layer<S> for LogLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let span = ctx.event_span(event);
        let ids = span.as_ref().and_then(|span| trace_ids(&span.id()));
        let span_name = span.as_ref().map(|span| span.name());
        let written = LINE.try_with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                // A log line written while formatting one (a panic in
                // Debug, say): format it in a fresh buffer.
                let mut fresh = Vec::new();
                self.format(&mut fresh, event, span_name, ids.as_ref());
                return self.write(&fresh);
            };
            line.clear();
            self.format(&mut line, event, span_name, ids.as_ref());
            self.write(&line)
        });
        if written.is_err() {
            // The thread is exiting; its last lines still go out.
            let mut fresh = Vec::new();
            self.format(&mut fresh, event, span_name, ids.as_ref());
            self.write(&fresh);
        }
    }
}

impl<W> LogLayer<W>
where
    W: for<'w> MakeWriter<'w>,
{
    fn write(&self, line: &[u8]) {
        let _ = self.writer.make_writer().write_all(line);
    }

    fn format(
        &self,
        line: &mut Vec<u8>,
        event: &Event<'_>,
        span: Option<&'static str>,
        ids: Option<&(String, String)>,
    ) {
        let metadata = event.metadata();
        let timestamp = timestamp();
        if self.json {
            line.push(b'{');
            let mut fields = JsonFields { line, first: true };
            fields.string("timestamp", &timestamp);
            fields.string("level", metadata.level().as_str());
            fields.string("target", metadata.target());
            if let Some(span) = span {
                fields.string("span", span);
            }
            if let Some((trace_id, span_id)) = ids {
                fields.string("trace_id", trace_id);
                fields.string("span_id", span_id);
            }
            // The message is one of the event's fields.
            let mut has_message = false;
            event.record(&mut MessageFirst {
                fields: &mut fields,
                has_message: &mut has_message,
            });
            if !has_message {
                fields.string("message", "");
            }
            line.extend_from_slice(b"}\n");
        } else {
            let mut text = String::with_capacity(128);
            let _ = write!(
                text,
                "{timestamp} {:>5} {}:",
                metadata.level(),
                metadata.target()
            );
            event.record(&mut TextFields { text: &mut text });
            if let Some((trace_id, span_id)) = ids {
                let _ = write!(text, " trace_id={trace_id} span_id={span_id}");
            }
            text.push('\n');
            line.extend_from_slice(text.as_bytes());
        }
    }
}

/// The OpenTelemetry trace and span ids of a span, when it has valid ones.
fn trace_ids(id: &tracing::span::Id) -> Option<(String, String)> {
    tracing::dispatcher::get_default(|dispatch| {
        let context = tracing_opentelemetry::get_otel_context(id, dispatch)?;
        let span = context.span();
        let span_context = span.span_context();
        span_context.is_valid().then(|| {
            (
                span_context.trace_id().to_string(),
                span_context.span_id().to_string(),
            )
        })
    })
}

/// Now in UTC, RFC 3339 with microseconds: `2026-11-30T06:58:04.627896Z`.
fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    let mut text = String::with_capacity(27);
    let _ = write!(
        text,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.microsecond()
    );
    text
}

/// Appends `"key":value` pairs to a JSON object being written.
struct JsonFields<'a> {
    line: &'a mut Vec<u8>,
    first: bool,
}

impl JsonFields<'_> {
    fn key(&mut self, key: &str) {
        if !self.first {
            self.line.push(b',');
        }
        self.first = false;
        json_string(self.line, key);
        self.line.push(b':');
    }

    fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        json_string(self.line, value);
    }

    fn raw(&mut self, key: &str, value: impl std::fmt::Display) {
        self.key(key);
        let _ = write!(self.line, "{value}");
    }
}

/// Writes `text` as a JSON string (quoted, escaped).
fn json_string(line: &mut Vec<u8>, text: &str) {
    // serde_json escapes exactly as JSON requires and cannot fail on a Vec.
    let _ = serde_json::to_writer(&mut *line, text);
}

/// Records an event's fields into a JSON line, the message under
/// `message`, leaving out names the line already has.
struct MessageFirst<'a, 'b> {
    fields: &'a mut JsonFields<'b>,
    has_message: &'a mut bool,
}

impl MessageFirst<'_, '_> {
    fn wanted(&mut self, field: &Field) -> bool {
        if field.name() == "message" {
            *self.has_message = true;
            return true;
        }
        !FIXED_KEYS.contains(&field.name())
    }
}

impl Visit for MessageFirst<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.wanted(field) {
            let mut text = String::new();
            let _ = write!(text, "{value:?}");
            self.fields.string(field.name(), &text);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.wanted(field) {
            self.fields.string(field.name(), value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.wanted(field) {
            self.fields.raw(field.name(), value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.wanted(field) {
            self.fields.raw(field.name(), value);
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.wanted(field) {
            if value.is_finite() {
                self.fields.raw(field.name(), value);
            } else {
                self.fields.string(field.name(), &value.to_string());
            }
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.wanted(field) {
            self.fields.raw(field.name(), value);
        }
    }
}

/// Records an event's fields as ` message key=value ...`.
struct TextFields<'a> {
    text: &'a mut String,
}

impl Visit for TextFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.text, " {value:?}");
        } else {
            let _ = write!(self.text, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.text, " {value}");
        } else {
            let _ = write!(self.text, " {}={value}", field.name());
        }
    }
}

/// How long the writer thread lets lines gather before writing them.
const BATCH_EVERY: Duration = Duration::from_millis(5);
/// How long the writer thread sleeps after finding nothing to write.
const IDLE_EVERY: Duration = Duration::from_millis(50);
/// Lines held at most; callers wait above it (stderr is not keeping up).
const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;

/// Lines waiting for the writer thread.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    closed: bool,
    /// Set by the writer thread once it wrote everything after `closed`.
    finished: bool,
}

/// How long shutdown waits for the last lines to be written: a reader that
/// stopped reading stderr must not keep the process from exiting.
const LAST_LINES_WITHIN: Duration = Duration::from_secs(1);

/// Collects lines and writes them to stderr from a background thread, in
/// batches. Cheap to clone.
#[derive(Clone)]
pub(crate) struct LineWriter {
    shared: Arc<(Mutex<Pending>, Condvar)>,
}

/// Writes the last lines and stops the writer thread when dropped.
pub(crate) struct LineWriterGuard {
    shared: Arc<(Mutex<Pending>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LineWriter {
    /// Starts the writer thread.
    pub(crate) fn stderr() -> (Self, LineWriterGuard) {
        let shared: Arc<(Mutex<Pending>, Condvar)> = Arc::default();
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn(move || write_batches(&worker))
            .ok();
        (
            Self {
                shared: Arc::clone(&shared),
            },
            LineWriterGuard { shared, thread },
        )
    }

    fn append(&self, line: &[u8]) {
        let (lock, space) = &*self.shared;
        let mut pending = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while pending.bytes.len() > MAX_PENDING_BYTES && !pending.closed {
            pending = space
                .wait(pending)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        if pending.closed && pending.finished {
            // After shutdown, straight to stderr (the writer is gone).
            drop(pending);
            let _ = std::io::stderr().write_all(line);
            return;
        }
        // Until the writer finished, even lines logged while shutting down
        // go through it, in order; if stderr is stuck they are lost with the
        // process, but nobody waits for them.
        pending.bytes.extend_from_slice(line);
    }
}

/// The writer thread: every [`BATCH_EVERY`], takes what gathered and
/// writes it in one go; wakes waiting callers once there is room again.
fn write_batches(shared: &(Mutex<Pending>, Condvar)) {
    let (lock, space) = shared;
    let mut batch = Vec::new();
    let mut stderr = std::io::stderr();
    loop {
        let closed = {
            let mut pending = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            std::mem::swap(&mut pending.bytes, &mut batch);
            pending.closed
        };
        space.notify_all();
        let idle = batch.is_empty();
        if !idle {
            let _ = stderr.write_all(&batch);
            batch.clear();
        }
        if closed {
            lock.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .finished = true;
            space.notify_all();
            return;
        }
        std::thread::sleep(if idle { IDLE_EVERY } else { BATCH_EVERY });
    }
}

impl Drop for LineWriterGuard {
    fn drop(&mut self) {
        let (lock, space) = &*self.shared;
        let mut pending = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        pending.closed = true;
        space.notify_all();
        if self.thread.is_none() {
            return;
        }
        let (pending, _) = space
            .wait_timeout_while(pending, LAST_LINES_WITHIN, |pending| !pending.finished)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let finished = pending.finished;
        drop(pending);
        if let (true, Some(thread)) = (finished, self.thread.take()) {
            let _ = thread.join();
        }
    }
}

impl std::io::Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.append(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LineWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    fn lines_of(json: bool, log: impl FnOnce()) -> String {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(LogLayer::new(json, capture.clone()));
        tracing::subscriber::with_default(subscriber, log);
        String::from_utf8(capture.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_lines_hold_the_message_fields_and_span() {
        let text = lines_of(true, || {
            let span = tracing::info_span!("rpc", secret = "never printed");
            let _entered = span.enter();
            tracing::info!(
                code = "OK",
                latency_ms = 1.5,
                count = 3u64,
                ok = true,
                weird = "quote \" and \n newline",
                level = "ignored",
                "rpc completed"
            );
        });
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line["message"], "rpc completed");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["span"], "rpc");
        assert_eq!(line["code"], "OK");
        assert_eq!(line["latency_ms"], 1.5);
        assert_eq!(line["count"], 3);
        assert_eq!(line["ok"], true);
        assert_eq!(line["weird"], "quote \" and \n newline");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(!text.contains("never printed"), "{text}");
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn text_lines_read_as_text() {
        let text = lines_of(false, || tracing::warn!(reason = "x", "careful"));
        assert!(text.contains(" WARN "), "{text}");
        assert!(text.contains("careful reason=x"), "{text}");
    }

    #[test]
    fn the_writer_keeps_every_line_and_writes_the_last_ones_at_shutdown() {
        let (writer, guard) = LineWriter::stderr();
        let mut writer = writer;
        for _ in 0..1000 {
            std::io::Write::write_all(&mut writer, b"{}\n").unwrap();
        }
        drop(guard);
        let (lock, _) = &*writer.shared;
        let pending = lock.lock().unwrap();
        assert!(pending.closed && pending.bytes.is_empty());
    }
}
