//! Scenario 6: failover between two endpoints. Two simulators; the gateway
//! lists the primary first and the backup second. Callers make a steady
//! number of calls a second (open loop); the primary is killed (SIGKILL)
//! at one second and started again on its port at another. Printed per
//! second: calls sent, answered OK, failed, and how many requests each
//! simulator received.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use faceid_gateway::proto::id_card_verification_service_client::IdCardVerificationServiceClient;
use faceid_gateway::proto::{VerifyIdCardRequest, verify_id_card_request::Source};
use tokio::time::{Instant, MissedTickBehavior};

use crate::harness::{self, Process};

#[derive(clap::Args)]
pub struct Args {
    /// Calls per second offered (open loop).
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Length of the run, seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// The second at which the primary is killed.
    #[arg(long, default_value_t = 10)]
    kill_at: u64,
    /// The second at which the primary starts again on its port (0 = never).
    #[arg(long, default_value_t = 20)]
    restart_at: u64,
    /// The gateway's --eject-for.
    #[arg(long, default_value = "5s")]
    eject_for: String,
}

/// What happened in one second of the run.
#[derive(Debug, Default, Clone)]
struct Second {
    sent: u64,
    ok: u64,
    failed: u64,
    at_primary: u64,
    at_backup: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (primary, primary_endpoint) = harness::start_simulator(0).await?;
    let (backup, backup_endpoint) = harness::start_simulator(0).await?;
    let primary_listen = primary_endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let endpoints = format!("{primary_endpoint},{backup_endpoint}");
    let gateway = harness::start_gateway(
        &endpoints,
        &["--eject-for", &args.eject_for, "--rate-limit", "1000"],
    )
    .await?;
    let client =
        IdCardVerificationServiceClient::connect(format!("http://{}", gateway.addr)).await?;
    let request = VerifyIdCardRequest {
        source: Some(Source::Image(harness::image_of(10 * 1024))),
        ..Default::default()
    };

    let seconds = usize::try_from(args.seconds)?;
    let table = Arc::new(Mutex::new(vec![Second::default(); seconds]));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let start = Instant::now();
    let until = start + Duration::from_secs(args.seconds);

    // The simulators' counts, sampled once a second.
    let monitor = {
        let table = Arc::clone(&table);
        let (primary_endpoint, backup_endpoint) =
            (primary_endpoint.clone(), backup_endpoint.clone());
        let mut primary = Some(primary);
        tokio::spawn(async move {
            let mut seen_primary = 0.0;
            let mut seen_backup = 0.0;
            let mut ticks =
                tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
            for second in 1..=args.seconds {
                ticks.tick().await;
                let received = |stats: anyhow::Result<serde_json::Value>| {
                    stats
                        .ok()
                        .and_then(|s| s["received"].as_f64())
                        .unwrap_or(0.0)
                };
                let now_primary = match &primary {
                    Some(_) => received(harness::simulator_stats(&primary_endpoint).await),
                    None => seen_primary,
                };
                let now_backup = received(harness::simulator_stats(&backup_endpoint).await);
                {
                    let mut table = table.lock().unwrap();
                    let row = &mut table[usize::try_from(second - 1).unwrap_or(0)];
                    row.at_primary = (now_primary - seen_primary).max(0.0) as u64;
                    row.at_backup = (now_backup - seen_backup).max(0.0) as u64;
                }
                seen_primary = now_primary;
                seen_backup = now_backup;
                if second == args.kill_at
                    && let Some(process) = primary.take()
                {
                    process.kill().await;
                    seen_primary = 0.0;
                    eprintln!("second {second}: primary killed");
                }
                if second == args.restart_at && primary.is_none() {
                    match harness::start_simulator_at(&primary_listen, 0).await {
                        Ok((process, _)) => {
                            primary = Some(process);
                            seen_primary = 0.0;
                            eprintln!("second {second}: primary started again");
                        }
                        Err(error) => {
                            eprintln!("second {second}: primary did not start: {error:#}")
                        }
                    }
                }
            }
            primary
        })
    };

    // Open loop: one call per tick, whatever the earlier ones are doing.
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / args.rate);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut calls = tokio::task::JoinSet::new();
    while ticks.tick().await < until {
        let second = usize::try_from(start.elapsed().as_secs())
            .unwrap_or(0)
            .min(seconds - 1);
        table.lock().unwrap()[second].sent += 1;
        let (mut client, request) = (client.clone(), request.clone());
        let (table, errors) = (Arc::clone(&table), Arc::clone(&errors));
        calls.spawn(async move {
            let outcome = client.verify_id_card(request).await;
            let mut table = table.lock().unwrap();
            match outcome {
                Ok(_) => table[second].ok += 1,
                Err(status) => {
                    table[second].failed += 1;
                    errors.lock().unwrap().push(format!(
                        "second {second}: {:?} {}",
                        status.code(),
                        status.message()
                    ));
                }
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        while calls.join_next().await.is_some() {}
    })
    .await
    .context("calls still running 60 s after the end")?;
    let primary: Option<Process> = monitor.await?;

    let metrics = reqwest::get(format!("http://{}/metrics", gateway.admin))
        .await?
        .text()
        .await?;
    let table = table.lock().unwrap().clone();
    println!(
        "{} calls/s for {} s; primary killed at second {}, started again at second {}; --eject-for {}",
        args.rate, args.seconds, args.kill_at, args.restart_at, args.eject_for
    );
    println!();
    println!("| second | sent | OK | errors | at primary | at backup |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for (i, row) in table.iter().enumerate() {
        println!(
            "| {}–{} | {} | {} | {} | {} | {} |",
            i,
            i + 1,
            row.sent,
            row.ok,
            row.failed,
            row.at_primary,
            row.at_backup
        );
    }
    let total = |f: fn(&Second) -> u64| table.iter().map(f).sum::<u64>();
    println!(
        "| total | {} | {} | {} | {} | {} |",
        total(|r| r.sent),
        total(|r| r.ok),
        total(|r| r.failed),
        total(|r| r.at_primary),
        total(|r| r.at_backup)
    );
    println!();
    // Where attempts failed (refused connections at the dead primary, calls
    // cut when it died), the retries that moved them, ejections.
    for line in metrics.lines().filter(|l| {
        l.starts_with("faceid_upstream_ejections_total{")
            || l.starts_with("faceid_upstream_endpoint_up{")
            || l.starts_with("faceid_upstream_retries_total{")
            || l.starts_with(r#"faceid_tencent_responses_total{class="transient""#)
    }) {
        println!("{line}");
    }
    for error in errors.lock().unwrap().iter().take(20) {
        println!("error: {error}");
    }

    gateway.process.stop().await;
    backup.stop().await;
    if let Some(primary) = primary {
        primary.stop().await;
    }
    Ok(())
}
