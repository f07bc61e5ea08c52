//! Idempotency: a caller that sends the same request again under the same
//! `idempotency-key` gets the first call's answer, without a second
//! (billed) upstream call.
//!
//! A request is named by a digest of what Tencent would be sent (the image
//! bytes or URL, the checks, the encryption choice). Only final answers are
//! kept: verification results, and Tencent's refusals of the input itself
//! (class `invalid_input`), which the same request would get again. Transient
//! failures, rate limits, budget refusals and the gateway's or the
//! account's own trouble are not kept, so a retry after them goes upstream.
//!
//! While a first call is in flight, calls with the same key wait for it
//! (each within its own deadline): in this process through a shared slot,
//! across replicas by polling the shared store's pending marker.
//!
//! What the store holds is unreadable without the request itself: its key
//! is an HMAC of the caller and the idempotency key, and each answer is
//! sealed with AES-256-GCM under a key derived (HKDF-SHA256) from the
//! request's digest, beside a fingerprint derived the same way (which tells
//! "another request under this key" without revealing the digest).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead as _, Payload};
use aes_gcm::{AesGcm, KeyInit as _};
use futures_util::future::BoxFuture;
use hkdf::Hkdf;
use hmac::{Hmac, Mac as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use zeroize::Zeroizing;

use crate::metrics::{CallerLabels, Metrics};
use crate::net::redis_connection::RedisConnection;
use crate::proto::VerifyIdCardResponse;
use crate::server::error::Error;
use crate::server::validate::{EncryptionChoice, ImageSource, InvalidArgument, Verification};
use crate::tencent::{self, Class, EncryptionMode};

/// The request metadata (and HTTP header) naming a call's idempotency key.
pub(crate) const IDEMPOTENCY_KEY_METADATA: &str = "idempotency-key";
/// The response metadata set on a replayed answer.
pub(crate) const REPLAY_METADATA: &str = "idempotent-replay";
/// The longest idempotency key, in characters.
pub(crate) const MAX_KEY_CHARS: usize = 128;
/// How long a pending marker keeps other replicas waiting when its owner
/// never finishes (it crashed): then the next call goes upstream.
const PENDING_TTL: Duration = Duration::from_secs(60);
/// How often a call waiting on another replica's first call looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// What a stored entry costs besides its value (key, expiry, bookkeeping).
const ENTRY_OVERHEAD: usize = 96;

type Aes256Gcm = AesGcm<aes::Aes256, U12>;
type HmacSha256 = Hmac<Sha256>;

/// A caller's idempotency key: at most [`MAX_KEY_CHARS`] characters.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct IdempotencyKey(String);

impl std::fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A caller may put anything in it; logs never show it.
        f.write_str("IdempotencyKey(..)")
    }
}

impl IdempotencyKey {
    /// The key in `metadata`, if any.
    ///
    /// # Errors
    /// [`InvalidArgument`] when it is empty, too long or not text.
    pub(crate) fn from_metadata(metadata: &MetadataMap) -> Result<Option<Self>, InvalidArgument> {
        let Some(value) = metadata.get(IDEMPOTENCY_KEY_METADATA) else {
            return Ok(None);
        };
        let invalid = |description: &str| {
            InvalidArgument::new(
                IDEMPOTENCY_KEY_METADATA,
                description,
                "InvalidParameterValue",
            )
        };
        let text = value
            .to_str()
            .map_err(|_| invalid("must be visible ASCII text"))?;
        if text.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if text.chars().count() > MAX_KEY_CHARS {
            return Err(invalid("must be at most 128 characters"));
        }
        Ok(Some(Self(text.to_owned())))
    }

    /// The key of one batch item: `<key>/<item_id>`.
    pub(crate) fn for_item(&self, item_id: &str) -> Self {
        Self(format!("{}/{item_id}", self.0))
    }
}

/// What names one request in the store, and seals its answer. Computed
/// before the verification is consumed, so the image need not outlive its
/// request body.
pub(crate) struct Identity {
    /// HMAC of the caller and the idempotency key: the store's key.
    slot: [u8; 32],
    /// Derived from the request's digest: tells another request under the
    /// same key, without revealing the digest.
    fingerprint: [u8; 32],
    /// Derived from the request's digest: seals the answer.
    sealing_key: Zeroizing<[u8; 32]>,
}

impl Identity {
    /// The identity of `verification` by `caller` under `key`.
    pub(crate) fn of(caller: &str, key: &IdempotencyKey, verification: &Verification) -> Self {
        let mut mac = HmacSha256::new_from_slice(b"faceid-gateway idempotency slot v1")
            .expect("HMAC accepts any key length");
        mac.update(caller.as_bytes());
        mac.update(&[0]);
        mac.update(key.0.as_bytes());
        let slot: [u8; 32] = mac.finalize().into_bytes().into();
        let digest = Zeroizing::new(request_digest(verification));
        let hkdf = Hkdf::<Sha256>::new(Some(&slot), digest.as_slice());
        let mut fingerprint = [0u8; 32];
        let mut sealing_key = Zeroizing::new([0u8; 32]);
        hkdf.expand(b"faceid-gateway idempotency fingerprint", &mut fingerprint)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        hkdf.expand(
            b"faceid-gateway idempotency answer key",
            sealing_key.as_mut(),
        )
        .expect("32 bytes is a valid HKDF-SHA256 length");
        Self {
            slot,
            fingerprint,
            sealing_key,
        }
    }

    /// The pending marker: `P` and the fingerprint.
    fn pending(&self) -> Vec<u8> {
        let mut marker = Vec::with_capacity(33);
        marker.push(b'P');
        marker.extend_from_slice(&self.fingerprint);
        marker
    }

    /// `D`, the fingerprint, a random nonce and the sealed answer (the
    /// slot is the associated data).
    fn seal(&self, kept: &Kept) -> Option<Vec<u8>> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).ok()?;
        let cipher = Aes256Gcm::new_from_slice(self.sealing_key.as_slice()).ok()?;
        let plaintext = Zeroizing::new(kept.encode());
        let sealed = cipher
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: &plaintext,
                    aad: &self.slot,
                },
            )
            .ok()?;
        let mut value = Vec::with_capacity(1 + 32 + 12 + sealed.len());
        value.push(b'D');
        value.extend_from_slice(&self.fingerprint);
        value.extend_from_slice(&nonce);
        value.extend_from_slice(&sealed);
        Some(value)
    }

    /// What a stored value says for this request.
    fn read(&self, value: &[u8]) -> Stored {
        let (kind, rest) = match value.split_first() {
            Some((kind, rest)) if rest.len() >= 32 => (*kind, rest),
            _ => return Stored::Unreadable,
        };
        let (fingerprint, rest) = rest.split_at(32);
        if fingerprint != self.fingerprint {
            return Stored::OtherRequest;
        }
        match kind {
            b'P' => Stored::Pending,
            b'D' if rest.len() > 12 => {
                let (nonce, sealed) = rest.split_at(12);
                let Ok(cipher) = Aes256Gcm::new_from_slice(self.sealing_key.as_slice()) else {
                    return Stored::Unreadable;
                };
                let Ok(nonce) = <[u8; 12]>::try_from(nonce) else {
                    return Stored::Unreadable;
                };
                cipher
                    .decrypt(
                        &nonce.into(),
                        Payload {
                            msg: sealed,
                            aad: &self.slot,
                        },
                    )
                    .ok()
                    .map(Zeroizing::new)
                    .and_then(|plain| Kept::decode(&plain))
                    .map_or(Stored::Unreadable, Stored::Done)
            }
            _ => Stored::Unreadable,
        }
    }
}

/// What a stored value means to the request reading it.
enum Stored {
    /// The first call is still running.
    Pending,
    /// The first call's answer.
    Done(Kept),
    /// Another request used this key.
    OtherRequest,
    /// Corrupt, or sealed by another version: ignored.
    Unreadable,
}

/// SHA-256 of what Tencent would be sent: the image bytes or URL, the
/// checks and the encryption choice.
fn request_digest(verification: &Verification) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"faceid-gateway idempotency request v1\0");
    match &verification.source {
        ImageSource::Image(bytes) => {
            hash.update(b"image\0");
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        }
        ImageSource::Url(url) => {
            hash.update(b"url\0");
            hash.update((url.len() as u64).to_be_bytes());
            hash.update(url.as_bytes());
        }
    }
    hash.update(verification.config.to_json_string().as_bytes());
    hash.update(match verification.encryption {
        EncryptionChoice::GatewayDefault => b"\0default".as_slice(),
        EncryptionChoice::Off => b"\0off".as_slice(),
        EncryptionChoice::On(EncryptionMode::Response) => b"\0response".as_slice(),
        EncryptionChoice::On(EncryptionMode::Fields) => b"\0fields".as_slice(),
    });
    hash.finalize().into()
}

/// A final outcome, as kept.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kept {
    /// A verification result.
    Answer(Box<VerifyIdCardResponse>),
    /// Tencent refused the input.
    Refused {
        /// Tencent's code.
        code: String,
        /// Tencent's request id.
        request_id: Option<String>,
    },
}

impl Kept {
    /// The final outcome in `result`, if it is one.
    pub(crate) fn of(result: &Result<VerifyIdCardResponse, Error>) -> Option<Self> {
        match result {
            Ok(answer) => Some(Kept::Answer(Box::new(answer.clone()))),
            Err(Error::Upstream(tencent::Error::Api {
                code,
                class: Class::InvalidInput,
                request_id,
            })) => Some(Kept::Refused {
                code: code.clone(),
                request_id: request_id.clone(),
            }),
            Err(_) => None,
        }
    }

    /// The outcome again.
    pub(crate) fn into_result(self) -> Result<VerifyIdCardResponse, Error> {
        match self {
            Kept::Answer(answer) => Ok(*answer),
            Kept::Refused { code, request_id } => {
                Err(Error::Upstream(tencent::Error::api(code, request_id)))
            }
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Kept::Answer(answer) => {
                let mut bytes = vec![b'A'];
                answer
                    .encode(&mut bytes)
                    .expect("a Vec grows to fit the message");
                bytes
            }
            Kept::Refused { code, request_id } => {
                let mut bytes = vec![b'R'];
                bytes.extend_from_slice(code.as_bytes());
                if let Some(request_id) = request_id {
                    bytes.push(b'\n');
                    bytes.extend_from_slice(request_id.as_bytes());
                }
                bytes
            }
        }
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes.split_first()? {
            (b'A', message) => VerifyIdCardResponse::decode(message)
                .ok()
                .map(|answer| Kept::Answer(Box::new(answer))),
            (b'R', text) => {
                let text = std::str::from_utf8(text).ok()?;
                let (code, request_id) = match text.split_once('\n') {
                    Some((code, id)) => (code, Some(id.to_owned())),
                    None => (text, None),
                };
                Some(Kept::Refused {
                    code: code.to_owned(),
                    request_id,
                })
            }
            _ => None,
        }
    }
}

/// The store did not answer (Redis unreachable or slow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoreDown;

/// Where idempotency entries live.
pub(crate) trait IdempotencyStore: Send + Sync + 'static {
    /// Puts `pending` at `slot` for `ttl` unless something is there;
    /// returns what was there.
    fn claim<'a>(
        &'a self,
        slot: &'a [u8; 32],
        pending: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreDown>>;
    /// Puts `value` at `slot` for `ttl`.
    fn put<'a>(
        &'a self,
        slot: &'a [u8; 32],
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreDown>>;
    /// Removes `slot` if it still holds `pending`.
    fn abandon<'a>(
        &'a self,
        slot: &'a [u8; 32],
        pending: &'a [u8],
    ) -> BoxFuture<'a, Result<(), StoreDown>>;
}

/// Entries in this process's memory, least recently used evicted beyond a
/// byte budget.
pub(crate) struct LocalIdempotencyStore {
    inner: Mutex<Lru>,
    capacity: usize,
    evictions: Counter,
    bytes: Gauge,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<[u8; 32], LruEntry>,
    /// Use order: sequence number → slot.
    order: BTreeMap<u64, [u8; 32]>,
    next: u64,
    bytes: usize,
}

struct LruEntry {
    value: Vec<u8>,
    expires: Instant,
    seq: u64,
}

impl Lru {
    fn remove(&mut self, slot: &[u8; 32]) {
        if let Some(entry) = self.entries.remove(slot) {
            self.order.remove(&entry.seq);
            self.bytes -= entry.value.len() + ENTRY_OVERHEAD;
        }
    }

    /// The live value at `slot`, marked as just used.
    fn get(&mut self, slot: &[u8; 32], now: Instant) -> Option<Vec<u8>> {
        let expired = self.entries.get(slot)?.expires <= now;
        if expired {
            self.remove(slot);
            return None;
        }
        let seq = self.next;
        self.next += 1;
        let entry = self.entries.get_mut(slot)?;
        self.order.remove(&entry.seq);
        entry.seq = seq;
        self.order.insert(seq, *slot);
        Some(entry.value.clone())
    }

    /// Inserts, then evicts the least recently used beyond `capacity`;
    /// returns how many were evicted.
    fn insert(&mut self, slot: [u8; 32], value: Vec<u8>, expires: Instant, capacity: usize) -> u64 {
        self.remove(&slot);
        let seq = self.next;
        self.next += 1;
        self.bytes += value.len() + ENTRY_OVERHEAD;
        self.entries.insert(
            slot,
            LruEntry {
                value,
                expires,
                seq,
            },
        );
        self.order.insert(seq, slot);
        let mut evicted = 0;
        while self.bytes > capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.remove(&oldest);
            evicted += 1;
        }
        evicted
    }
}

impl LocalIdempotencyStore {
    /// A store of at most `capacity` bytes; evictions and size reported to
    /// `metrics`.
    pub(crate) fn new(capacity: usize, metrics: &Metrics) -> Self {
        Self {
            inner: Mutex::new(Lru::default()),
            capacity,
            evictions: metrics.idempotency_evictions.clone(),
            bytes: metrics.idempotency_cache_bytes.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn insert(&self, slot: [u8; 32], value: Vec<u8>, ttl: Duration) {
        let mut lru = self.lock();
        let evicted = lru.insert(slot, value, Instant::now() + ttl, self.capacity);
        self.evictions.inc_by(evicted);
        self.bytes.set(i64::try_from(lru.bytes).unwrap_or(i64::MAX));
    }
}

impl IdempotencyStore for LocalIdempotencyStore {
    fn claim<'a>(
        &'a self,
        slot: &'a [u8; 32],
        pending: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreDown>> {
        let existing = self.lock().get(slot, Instant::now());
        if existing.is_none() {
            self.insert(*slot, pending.to_vec(), ttl);
        }
        Box::pin(std::future::ready(Ok(existing)))
    }

    fn put<'a>(
        &'a self,
        slot: &'a [u8; 32],
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreDown>> {
        self.insert(*slot, value, ttl);
        Box::pin(std::future::ready(Ok(())))
    }

    fn abandon<'a>(
        &'a self,
        slot: &'a [u8; 32],
        pending: &'a [u8],
    ) -> BoxFuture<'a, Result<(), StoreDown>> {
        let mut lru = self.lock();
        if lru.entries.get(slot).is_some_and(|e| e.value == pending) {
            lru.remove(slot);
            self.bytes.set(i64::try_from(lru.bytes).unwrap_or(i64::MAX));
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// `KEYS[1]`: the slot. Returns what is there, or sets `ARGV[1]` for
/// `ARGV[2]` ms and returns nothing.
const CLAIM_SCRIPT: &str = r"
local value = redis.call('GET', KEYS[1])
if value then return value end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
";

/// `KEYS[1]`: the slot; deleted when it still holds `ARGV[1]`.
const ABANDON_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
";

/// Entries in Redis, shared by every replica.
pub(crate) struct RedisIdempotencyStore {
    connection: RedisConnection,
    claim: redis::Script,
    abandon: redis::Script,
    prefix: String,
    timeout: Duration,
}

impl RedisIdempotencyStore {
    /// A store in the Redis of `client` under keys starting `prefix`;
    /// `timeout` per round trip.
    ///
    /// # Errors
    /// The client cannot make a connection manager.
    pub(crate) fn new(
        client: redis::Client,
        prefix: impl Into<String>,
        timeout: Duration,
    ) -> Result<Self, redis::RedisError> {
        Ok(Self {
            connection: RedisConnection::new(client, timeout)?,
            claim: redis::Script::new(CLAIM_SCRIPT),
            abandon: redis::Script::new(ABANDON_SCRIPT),
            prefix: prefix.into(),
            timeout,
        })
    }

    /// Switches to a new client (a rotated CA bundle).
    ///
    /// # Errors
    /// The client cannot make a connection manager.
    pub(crate) fn reconnect(&self, client: redis::Client) -> Result<(), redis::RedisError> {
        self.connection.reconnect(client)
    }

    fn key(&self, slot: &[u8; 32]) -> String {
        format!("{}:{}", self.prefix, hex::encode(slot))
    }

    async fn bounded<T>(
        &self,
        future: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreDown> {
        match tokio::time::timeout(self.timeout, future).await {
            Ok(Ok(value)) => Ok(value),
            _ => Err(StoreDown),
        }
    }
}

impl IdempotencyStore for RedisIdempotencyStore {
    fn claim<'a>(
        &'a self,
        slot: &'a [u8; 32],
        pending: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreDown>> {
        Box::pin(async move {
            let mut connection = self.connection.current();
            let mut invocation = self.claim.prepare_invoke();
            invocation
                .key(self.key(slot))
                .arg(pending)
                .arg(ttl.as_millis() as u64);
            self.bounded(invocation.invoke_async::<Option<Vec<u8>>>(&mut connection))
                .await
        })
    }

    fn put<'a>(
        &'a self,
        slot: &'a [u8; 32],
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreDown>> {
        Box::pin(async move {
            let mut connection = self.connection.current();
            self.bounded(
                redis::cmd("SET")
                    .arg(self.key(slot))
                    .arg(value)
                    .arg("PX")
                    .arg(ttl.as_millis() as u64)
                    .query_async::<()>(&mut connection),
            )
            .await
        })
    }

    fn abandon<'a>(
        &'a self,
        slot: &'a [u8; 32],
        pending: &'a [u8],
    ) -> BoxFuture<'a, Result<(), StoreDown>> {
        Box::pin(async move {
            let mut connection = self.connection.current();
            let mut invocation = self.abandon.prepare_invoke();
            invocation.key(self.key(slot)).arg(pending);
            self.bounded(invocation.invoke_async::<i64>(&mut connection))
                .await
                .map(|_| ())
        })
    }
}

/// A first call in flight in this process, which later ones wait for.
struct Leader {
    fingerprint: [u8; 32],
    /// `None` while running; then the final outcome, or `Some(None)` when
    /// there is none to share (waiters go on by themselves).
    done: watch::Receiver<Option<Option<Kept>>>,
}

/// Removes the leader's slot when it finishes or is dropped (a cancelled
/// call): its waiters then go on by themselves.
struct LeaderGuard<'a> {
    in_flight: &'a Mutex<HashMap<[u8; 32], Leader>>,
    slot: [u8; 32],
    done: watch::Sender<Option<Option<Kept>>>,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.slot);
    }
}

/// A call's result, and whether it is a replay of an earlier call's.
pub(crate) struct Outcome {
    /// The answer or the error.
    pub(crate) result: Result<VerifyIdCardResponse, Error>,
    /// True when no upstream call was made for it.
    pub(crate) replayed: bool,
}

/// The gateway's idempotency: the store, the calls in flight here.
pub(crate) struct Idempotency {
    store: Arc<dyn IdempotencyStore>,
    ttl: Duration,
    in_flight: Mutex<HashMap<[u8; 32], Leader>>,
    store_down: AtomicBool,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Idempotency {
    /// Answers kept in `store` for `ttl`.
    pub(crate) fn new(
        store: Arc<dyn IdempotencyStore>,
        ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            ttl,
            in_flight: Mutex::new(HashMap::new()),
            store_down: AtomicBool::new(false),
            metrics,
        }
    }

    /// Runs `work` for the request `id` by `caller`, unless an earlier call
    /// with the same key has (or is about to have) the answer.
    pub(crate) async fn run<F, Fut>(
        &self,
        caller: &str,
        id: &Identity,
        deadline: Option<Instant>,
        work: F,
    ) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<VerifyIdCardResponse, Error>>,
    {
        loop {
            let waiting = {
                let mut in_flight = self
                    .in_flight
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                match in_flight.get(&id.slot) {
                    Some(leader) if leader.fingerprint != id.fingerprint => {
                        return refused(Error::IdempotencyKeyReused);
                    }
                    Some(leader) => Ok(leader.done.clone()),
                    None => {
                        let (done, receiver) = watch::channel(None);
                        in_flight.insert(
                            id.slot,
                            Leader {
                                fingerprint: id.fingerprint,
                                done: receiver,
                            },
                        );
                        Err(LeaderGuard {
                            in_flight: &self.in_flight,
                            slot: id.slot,
                            done,
                        })
                    }
                }
            };
            match waiting {
                Ok(mut done) => {
                    let finished = done.wait_for(Option::is_some);
                    let outcome = match deadline {
                        Some(deadline) => match tokio::time::timeout_at(deadline, finished).await {
                            Ok(outcome) => outcome.map(|o| o.clone()),
                            Err(_) => return refused(Error::DeadlineExceeded),
                        },
                        None => finished.await.map(|o| o.clone()),
                    };
                    if let Ok(Some(Some(kept))) = outcome {
                        return self.replay(caller, kept);
                    }
                    // The first call had nothing to share, or was dropped:
                    // go again (and maybe lead).
                }
                Err(guard) => {
                    let (outcome, kept) = self.lead(caller, id, deadline, work).await;
                    let _ = guard.done.send(Some(kept));
                    drop(guard);
                    return outcome;
                }
            }
        }
    }

    /// The first call of `id` in this process: the store's answer, another
    /// replica's, or `work`'s. Returns the outcome and what waiters get.
    async fn lead<F, Fut>(
        &self,
        caller: &str,
        id: &Identity,
        deadline: Option<Instant>,
        work: F,
    ) -> (Outcome, Option<Kept>)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<VerifyIdCardResponse, Error>>,
    {
        let pending = id.pending();
        let waited_until = Instant::now() + PENDING_TTL;
        let mut replaced_unreadable = false;
        let claimed = loop {
            let existing = match self.store.claim(&id.slot, &pending, PENDING_TTL).await {
                Ok(existing) => existing,
                Err(StoreDown) => break false,
            };
            let Some(value) = existing else {
                break true;
            };
            match id.read(&value) {
                Stored::Done(kept) => return (self.replay(caller, kept.clone()), Some(kept)),
                Stored::OtherRequest => return (refused(Error::IdempotencyKeyReused), None),
                Stored::Unreadable if !replaced_unreadable => {
                    // Not ours to trust: replace it (once).
                    replaced_unreadable = true;
                    let _ = self.store.abandon(&id.slot, &value).await;
                    continue;
                }
                Stored::Unreadable => break false,
                Stored::Pending => {
                    // Another replica's first call: wait for its answer.
                    let limit = deadline.map_or(waited_until, |d| d.min(waited_until));
                    if Instant::now() >= limit {
                        return match deadline {
                            Some(d) if d <= waited_until => {
                                (refused(Error::DeadlineExceeded), None)
                            }
                            _ => break false,
                        };
                    }
                    tokio::time::sleep(POLL_INTERVAL.min(limit - Instant::now())).await;
                }
            }
        };
        if !claimed && !self.store_down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the idempotency store does not answer; calls go upstream without it until it does"
            );
        }
        let result = work().await;
        let kept = Kept::of(&result);
        if claimed {
            let stored = match kept.as_ref().and_then(|kept| id.seal(kept)) {
                Some(value) => self.store.put(&id.slot, value, self.ttl).await,
                None => self.store.abandon(&id.slot, &pending).await,
            };
            if stored.is_ok() {
                self.store_down.store(false, Ordering::Relaxed);
            }
        }
        (
            Outcome {
                result,
                replayed: false,
            },
            kept,
        )
    }

    fn replay(&self, caller: &str, kept: Kept) -> Outcome {
        self.metrics
            .idempotent_replays
            .get_or_create(&CallerLabels {
                caller: caller.to_owned(),
            })
            .inc();
        Outcome {
            result: kept.into_result(),
            replayed: true,
        }
    }
}

fn refused(error: Error) -> Outcome {
    Outcome {
        result: Err(error),
        replayed: false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use bytes::Bytes;

    use super::*;
    use crate::tencent::model::Config;

    fn verification(image: &'static [u8]) -> Verification {
        Verification {
            source: ImageSource::Image(Bytes::from_static(image)),
            config: Config::default(),
            encryption: EncryptionChoice::GatewayDefault,
        }
    }

    fn key(text: &str) -> IdempotencyKey {
        IdempotencyKey(text.to_owned())
    }

    fn answer(name: &str) -> VerifyIdCardResponse {
        VerifyIdCardResponse {
            result_code: "Success".to_owned(),
            id_card: Some(crate::proto::IdCard {
                name: name.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// `work` as `caller`'s call under `key_text` for `image`, with no
    /// deadline.
    async fn run_keyed<F, Fut>(
        idempotency: &Idempotency,
        caller: &str,
        key_text: &str,
        image: &'static [u8],
        work: F,
    ) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<VerifyIdCardResponse, Error>>,
    {
        let id = Identity::of(caller, &key(key_text), &verification(image));
        idempotency.run(caller, &id, None, work).await
    }

    fn idempotency(capacity: usize) -> Idempotency {
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(LocalIdempotencyStore::new(capacity, &metrics));
        Idempotency::new(store, Duration::from_secs(60), metrics)
    }

    #[tokio::test]
    async fn the_same_key_and_request_is_answered_once() {
        let idempotency = idempotency(1 << 20);
        let calls = AtomicUsize::new(0);
        let work = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(answer("张三"))
        };
        let first = run_keyed(&idempotency, "a", "k", b"card", work).await;
        let second = run_keyed(&idempotency, "a", "k", b"card", work).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(!first.replayed && second.replayed);
        assert_eq!(first.result.unwrap(), second.result.unwrap());
        // Another caller's key is its own.
        let other = run_keyed(&idempotency, "b", "k", b"card", work).await;
        assert!(!other.replayed);
        // The same key with another image is refused.
        let reused = run_keyed(&idempotency, "a", "k", b"other card", work).await;
        assert!(matches!(reused.result, Err(Error::IdempotencyKeyReused)));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn transient_failures_are_not_kept() {
        let idempotency = idempotency(1 << 20);
        let failed = run_keyed(&idempotency, "a", "k", b"card", || async {
            Err(Error::Upstream(tencent::Error::api("InternalError", None)))
        })
        .await;
        assert!(failed.result.is_err());
        let retried = run_keyed(&idempotency, "a", "k", b"card", || async {
            Ok(answer("x"))
        })
        .await;
        assert!(!retried.replayed && retried.result.is_ok());
        // Tencent's refusal of the input is final.
        let refusal = || async {
            Err(Error::Upstream(tencent::Error::api(
                "FailedOperation.ImageNoIdCard",
                Some("r-1".into()),
            )))
        };
        run_keyed(&idempotency, "a", "k2", b"card", refusal).await;
        let again = run_keyed(&idempotency, "a", "k2", b"card", refusal).await;
        assert!(again.replayed);
        assert_eq!(
            again.result.unwrap_err().reason(),
            "FailedOperation.ImageNoIdCard"
        );
    }

    #[tokio::test]
    async fn concurrent_calls_wait_for_the_first() {
        let idempotency = Arc::new(idempotency(1 << 20));
        let calls = Arc::new(AtomicUsize::new(0));
        let (release, released) = watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let idempotency = Arc::clone(&idempotency);
            let calls = Arc::clone(&calls);
            let mut released = released.clone();
            tasks.push(tokio::spawn(async move {
                idempotency
                    .run(
                        "a",
                        &Identity::of("a", &key("k"), &verification(b"card")),
                        None,
                        || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            let _ = released.wait_for(|r| *r).await;
                            Ok(answer("x"))
                        },
                    )
                    .await
                    .replayed
            }));
        }
        tokio::task::yield_now().await;
        release.send(true).unwrap();
        let mut replays = 0;
        for task in tasks {
            replays += usize::from(task.await.unwrap());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(replays, 9);
    }

    #[test]
    fn the_sealed_value_holds_no_plaintext_and_opens_only_for_the_same_request() {
        let id = Identity::of("a", &key("k"), &verification(b"card"));
        let kept = Kept::Answer(Box::new(answer("ZHANG-SAN-NAME")));
        let value = id.seal(&kept).unwrap();
        assert!(
            !value
                .windows(b"ZHANG-SAN-NAME".len())
                .any(|w| w == b"ZHANG-SAN-NAME")
        );
        assert!(matches!(id.read(&value), Stored::Done(k) if k == kept));
        let other = Identity::of("a", &key("k"), &verification(b"card2"));
        assert!(matches!(other.read(&value), Stored::OtherRequest));
        assert_eq!(
            id.slot,
            Identity::of("a", &key("k"), &verification(b"x")).slot
        );
        assert_ne!(
            id.slot,
            Identity::of("b", &key("k"), &verification(b"card")).slot
        );
    }

    #[test]
    fn the_lru_evicts_the_least_recently_used_beyond_its_bytes() {
        let mut lru = Lru::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let capacity = 3 * (100 + ENTRY_OVERHEAD);
        for slot in 0..3u8 {
            assert_eq!(lru.insert([slot; 32], vec![0; 100], later, capacity), 0);
        }
        assert!(lru.get(&[0; 32], now).is_some());
        assert_eq!(lru.insert([3; 32], vec![0; 100], later, capacity), 1);
        assert!(
            lru.get(&[1; 32], now).is_none(),
            "the least recently used went"
        );
        assert!(lru.get(&[0; 32], now).is_some());
        assert!(lru.get(&[3; 32], later).is_none(), "expired");
    }

    #[test]
    fn keys_are_checked() {
        let mut metadata = MetadataMap::new();
        assert_eq!(IdempotencyKey::from_metadata(&metadata).unwrap(), None);
        metadata.insert(IDEMPOTENCY_KEY_METADATA, "a".repeat(129).parse().unwrap());
        assert!(IdempotencyKey::from_metadata(&metadata).is_err());
        metadata.insert(IDEMPOTENCY_KEY_METADATA, "order-42".parse().unwrap());
        let key = IdempotencyKey::from_metadata(&metadata).unwrap().unwrap();
        assert_eq!(key.for_item("7"), IdempotencyKey("order-42/7".to_owned()));
    }
}
