//! Failover between Tencent endpoints, with two simulators: a killed or
//! failing primary is ejected and its calls go to the backup without a
//! caller seeing a failure; it takes the traffic back after a probe; with
//! every endpoint down calls fail promptly and recover by themselves; an
//! outcome that may not be repeated is never sent to a second endpoint.
//! Also the simulator's fault of the whole server, switched over HTTP.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faceid_gateway::proto::Verdict;
use faceid_gateway::proto::id_card_verification_service_client::IdCardVerificationServiceClient;
use faceid_gateway::simulator::{ServerFault, Simulator};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

use crate::helpers::{
    Options, metric, request_with, spawn_gateway_with_backups, spawn_simulator, spawn_simulator_at,
    verified, wait_until, within,
};

fn flags(list: &[&str]) -> Options {
    Options {
        flags: list.iter().map(|s| (*s).to_owned()).collect(),
        ..Options::default()
    }
}

fn up(simulator: SocketAddr) -> String {
    format!(r#"faceid_upstream_endpoint_up{{endpoint="{simulator}"}}"#)
}

fn ejections(simulator: SocketAddr) -> String {
    format!(r#"faceid_upstream_ejections_total{{endpoint="{simulator}"}}"#)
}

/// Attempts at `simulator` that failed in a way that says nothing about
/// the request, from the gateway's `/metrics`.
async fn failed_attempts_at(admin: SocketAddr, simulator: SocketAddr) -> u64 {
    faceid_gateway::install_crypto_provider();
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let endpoint = format!(r#"endpoint="{simulator}""#);
    text.lines()
        .filter(|line| {
            line.starts_with(r#"faceid_tencent_responses_total{class="transient""#)
                && line.contains(&endpoint)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Callers making `per_second` calls a second (open loop) until stopped.
struct Load {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    outcomes: Arc<Mutex<Outcomes>>,
}

#[derive(Debug, Default)]
struct Outcomes {
    ok: u64,
    failed: Vec<(Code, String)>,
}

impl Load {
    fn start(client: IdCardVerificationServiceClient<Channel>, per_second: u32) -> Self {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let outcomes = Arc::new(Mutex::new(Outcomes::default()));
        let sink = Arc::clone(&outcomes);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / per_second);
            let mut calls = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticks.tick() => {}
                }
                let mut client = client.clone();
                let sink = Arc::clone(&sink);
                calls.spawn(async move {
                    let outcome = client.verify_id_card(request_with("")).await;
                    let mut outcomes = sink.lock().unwrap();
                    match outcome {
                        Ok(_) => outcomes.ok += 1,
                        Err(status) => outcomes
                            .failed
                            .push((status.code(), status.message().to_owned())),
                    }
                });
            }
            while calls.join_next().await.is_some() {}
        });
        Self {
            stop,
            task,
            outcomes,
        }
    }

    /// Stops making calls, waits for the last ones and returns every outcome.
    async fn finish(self) -> Outcomes {
        let _ = self.stop.send(());
        within(
            "the last calls to finish",
            Duration::from_secs(30),
            self.task,
        )
        .await
        .unwrap();
        std::mem::take(&mut *self.outcomes.lock().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_over_with_no_failed_call_and_takes_the_traffic_back_when_it_returns()
 {
    let primary = spawn_simulator(0).await;
    let backup = spawn_simulator(0).await;
    let (primary_addr, backup_addr) = (primary.local_addr(), backup.local_addr());
    let gateway = spawn_gateway_with_backups(
        &primary,
        &[&backup],
        flags(&[
            "--eject-after",
            "5",
            "--eject-for",
            "2s",
            "--retry-base-delay",
            "10ms",
        ]),
    )
    .await;
    let admin = gateway.admin_addr;
    let load = Load::start(gateway.client.clone(), 20);
    wait_until(
        "the primary answers calls",
        Duration::from_secs(10),
        async || primary.stats().received >= 10,
    )
    .await;
    assert_eq!(
        backup.stats().received,
        0,
        "the backup idles while the primary is healthy"
    );

    // Step 1: the primary is killed mid-run.
    primary.shutdown().await;
    wait_until(
        "the primary to be ejected",
        Duration::from_secs(10),
        async || metric(admin, &up(primary_addr)).await == 0,
    )
    .await;
    assert_eq!(metric(admin, &ejections(primary_addr)).await, 1);
    // Ejected at the fifth failure in a row; a call or two may have been on
    // their way at that moment.
    let failed_before_ejection = failed_attempts_at(admin, primary_addr).await;
    assert!(
        (5..=7).contains(&failed_before_ejection),
        "{failed_before_ejection} failed attempts at the primary before its ejection"
    );
    let at_backup = backup.stats().received;
    wait_until(
        "calls to reach the backup",
        Duration::from_secs(10),
        async || backup.stats().received >= at_backup + 10,
    )
    .await;

    // Step 2: the primary is back on its port; after the ejection time a
    // probe finds it, and the traffic returns to it.
    let primary = spawn_simulator_at(primary_addr).await;
    wait_until(
        "a probe to restore the primary",
        Duration::from_secs(20),
        async || metric(admin, &up(primary_addr)).await == 1,
    )
    .await;
    let (at_primary, at_backup) = (primary.stats().received, backup.stats().received);
    wait_until(
        "the primary to take the calls again",
        Duration::from_secs(10),
        async || primary.stats().received >= at_primary + 10,
    )
    .await;
    assert!(
        backup.stats().received <= at_backup + 2,
        "the backup idles again (at most the calls already on their way)"
    );
    assert_eq!(metric(admin, &up(backup_addr)).await, 1);

    let outcomes = load.finish().await;
    assert!(
        outcomes.failed.is_empty(),
        "callers saw failures: {:?}",
        outcomes.failed
    );
    assert!(outcomes.ok >= 30, "{outcomes:?}");
    primary.shutdown().await;
    backup.shutdown().await;
}

#[tokio::test]
async fn a_primary_answering_5xx_is_ejected_after_five_and_every_call_succeeds_at_the_backup() {
    let primary = spawn_simulator(0).await;
    let backup = spawn_simulator(0).await;
    primary.set_fault(ServerFault::Http(503), None);
    let mut gateway =
        spawn_gateway_with_backups(&primary, &[&backup], flags(&["--retry-base-delay", "5ms"]))
            .await;

    for _ in 0..20 {
        let answer = verified(&mut gateway.client, request_with("")).await;
        assert_eq!(answer.verdict(), Verdict::Match);
    }

    let primary_stats = primary.stats();
    assert_eq!(
        (primary_stats.received, primary_stats.count("http:503")),
        (5, 5),
        "the primary was tried until its fifth failure, then no more"
    );
    // The five failed calls were retried there, the fifteen others went
    // there directly.
    assert_eq!(backup.stats().received, 20);
    let admin = gateway.admin_addr;
    assert_eq!(metric(admin, &up(primary.local_addr())).await, 0);
    assert_eq!(metric(admin, &ejections(primary.local_addr())).await, 1);
    assert_eq!(metric(admin, &ejections(backup.local_addr())).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_endpoint_down_calls_fail_unavailable_promptly_and_recover_without_a_restart() {
    let primary = spawn_simulator(0).await;
    let backup = spawn_simulator(0).await;
    let mut gateway = spawn_gateway_with_backups(
        &primary,
        &[&backup],
        flags(&["--eject-for", "1s", "--retry-base-delay", "10ms"]),
    )
    .await;
    for simulator in [&primary, &backup] {
        simulator.set_fault(ServerFault::Down, None);
        refuses_connections(simulator).await;
    }

    for _ in 0..6 {
        let status = within(
            "a call with every endpoint down to fail",
            Duration::from_secs(5),
            gateway.client.verify_id_card(request_with("")),
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "UpstreamConnectFailed");
    }
    let admin = gateway.admin_addr;
    for simulator in [&primary, &backup] {
        assert_eq!(metric(admin, &up(simulator.local_addr())).await, 0);
    }

    // The backup returns: calls succeed again, nobody restarts anything.
    backup.set_fault(ServerFault::None, None);
    wait_until(
        "calls to succeed again",
        Duration::from_secs(20),
        async || {
            gateway
                .client
                .verify_id_card(request_with(""))
                .await
                .is_ok()
        },
    )
    .await;
    assert_eq!(metric(admin, &up(backup.local_addr())).await, 1);
    assert_eq!(metric(admin, &up(primary.local_addr())).await, 0);
}

/// Waits until nothing accepts connections at `simulator`'s address.
async fn refuses_connections(simulator: &Simulator) {
    let addr = simulator.local_addr();
    wait_until("the port to close", Duration::from_secs(5), async || {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
}

#[tokio::test]
async fn an_outcome_that_may_not_be_repeated_is_never_sent_to_a_second_endpoint() {
    let primary = spawn_simulator(0).await;
    let backup = spawn_simulator(0).await;
    let mut gateway = spawn_gateway_with_backups(
        &primary,
        &[&backup],
        flags(&["--retry-base-delay", "5ms", "--eject-after", "2"]),
    )
    .await;
    let cases = [
        ("result=FailedOperation.IdNameMisMatch", None),
        ("error=AuthFailure.SignatureFailure", Some(Code::Internal)),
        ("error=InvalidParameterValue", Some(Code::InvalidArgument)),
        (
            "error=FailedOperation.RequestLimitExceeded",
            Some(Code::ResourceExhausted),
        ),
        (
            "error=UnauthorizedOperation.Arrears",
            Some(Code::FailedPrecondition),
        ),
    ];

    // Each three times: well past --eject-after, so these answers also show
    // they never count against the endpoint (the SDK breaker counted
    // successes as failures).
    for (directives, code) in cases {
        for _ in 0..3 {
            let outcome = gateway
                .client
                .verify_id_card(request_with(directives))
                .await;
            match (outcome, code) {
                (Ok(answer), None) => {
                    assert_eq!(answer.into_inner().verdict(), Verdict::IdNameMismatch);
                }
                (Err(status), Some(code)) => assert_eq!(status.code(), code, "{directives}"),
                (other, _) => panic!("{directives}: unexpected {other:?}"),
            }
        }
    }

    assert_eq!(primary.stats().received, 3 * 5);
    assert_eq!(backup.stats().received, 0, "nothing went to the backup");
    let admin = gateway.admin_addr;
    assert_eq!(metric(admin, &up(primary.local_addr())).await, 1);
    assert_eq!(metric(admin, &ejections(primary.local_addr())).await, 0);
}

#[tokio::test]
async fn the_simulators_whole_server_fault_switches_over_http_at_run_time() {
    let simulator = spawn_simulator(0).await;
    faceid_gateway::install_crypto_provider();
    let http = reqwest::Client::new();
    let base = simulator.endpoint();
    let fault_url = base.join("__simulator/fault").unwrap();
    let switch = async |body: &str| {
        http.post(fault_url.clone())
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    };

    let answer = switch(r#"{"mode": "5xx"}"#).await;
    assert_eq!(answer.status(), 200);
    let status = http
        .get(fault_url.clone())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["mode"], "5xx=503");
    assert!(status["remaining_ms"].is_null());
    let call = http.post(base.clone()).body("{}").send().await.unwrap();
    assert_eq!(call.status(), 503, "every API call answers 503");
    assert_eq!(simulator.fault(), ServerFault::Http(503));

    let answer = switch(r#"{"mode": "slow=300ms"}"#).await;
    assert_eq!(answer.status(), 200);
    let started = std::time::Instant::now();
    let call = http.post(base.clone()).body("{}").send().await.unwrap();
    assert_eq!(call.status(), 200, "slow, then answered as usual");
    assert!(started.elapsed() >= Duration::from_millis(300));

    let answer = switch(r#"{"mode": "down", "for": "1s"}"#).await;
    assert_eq!(answer.status(), 200, "answered before the port closes");
    refuses_connections(&simulator).await;
    wait_until(
        "the port to open again",
        Duration::from_secs(10),
        async || {
            tokio::net::TcpStream::connect(simulator.local_addr())
                .await
                .is_ok()
        },
    )
    .await;
    assert_eq!(simulator.fault(), ServerFault::None);

    for bad in [
        r#"{"mode": "sideways"}"#,
        r#"{"mode": "down", "for": "soon"}"#,
        "not json",
    ] {
        assert_eq!(switch(bad).await.status(), 400, "{bad}");
    }
    simulator.shutdown().await;
}
