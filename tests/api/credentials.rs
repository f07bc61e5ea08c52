//! Where the gateway's Tencent keys come from, and how temporary keys stay
//! current: each source of the chain against the simulator (which also
//! plays STS and the CVM metadata server), `auto`'s order, `--role-arn`,
//! renewals under load with no failed call, a call refused for stale keys,
//! and keys that expire while STS is away.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use faceid_gateway::config::CredentialsSource;
use faceid_gateway::simulator::{Simulator, SimulatorConfig};
use faceid_gateway::tencent::CredentialProvider;
use faceid_gateway::tencent::credentials::{ChainSettings, RoleSettings};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt as _;

use crate::helpers::{
    Gateway, Options, SECRET_ID, SECRET_KEY, metric, request_with, spawn_gateway_with_credentials,
    spawn_simulator_with, verified, wait_until, within,
};

/// A role ARN (the account id in it must never be logged).
pub const ROLE_ARN: &str = "qcs::cam::uin/100000000001:roleName/faceid-gateway";
const PROVIDER_ID: &str = "tke-oidc-test";

/// A variable lookup over `pairs`, standing in for the environment.
fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

/// Chain settings with STS and the metadata server at `simulator` and the
/// system-wide credentials file under `root`.
fn chain(source: CredentialsSource, simulator: &Simulator, root: &Path) -> ChainSettings {
    ChainSettings {
        source,
        role: None,
        sts_endpoint: simulator.endpoint(),
        metadata_endpoint: simulator.endpoint(),
        region: None,
        system_root: root.to_owned(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    }
}

/// A simulator accepting [`SECRET_ID`]/[`SECRET_KEY`], issuing keys that
/// live `ttl`, accepting the web-identity token in `token_file`.
async fn simulator(ttl: Duration, token_file: Option<&Path>) -> Simulator {
    let mut config = SimulatorConfig::new(SECRET_ID, SECRET_KEY);
    config.rate_limit = 0;
    config.temporary_credentials_ttl = ttl;
    config.web_identity_token_file = token_file.map(Path::to_owned);
    spawn_simulator_with(config).await
}

/// Writes `contents` to `path` at once (a rename), as the kubelet swaps a
/// projected token.
fn replace(path: &Path, contents: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, contents).unwrap();
    std::fs::rename(&next, path).unwrap();
}

fn ini(id: &str, key: &str) -> String {
    format!("[default]\nsecret_id = {id}\nsecret_key = {key}\n")
}

/// The `TKE_*` variables of pod identity, with the token in `token_file`.
fn tke_env(token_file: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("TKE_ROLE_ARN", ROLE_ARN.to_owned()),
        ("TKE_PROVIDER_ID", PROVIDER_ID.to_owned()),
        (
            "TKE_WEB_IDENTITY_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        ("TKE_REGION", "ap-singapore".to_owned()),
    ]
}

fn lookup(pairs: &[(&'static str, String)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    move |name| map.get(name).cloned()
}

async fn gateway(simulator: &Simulator, provider: CredentialProvider) -> Gateway {
    spawn_gateway_with_credentials(simulator, Options::default(), provider).await
}

#[tokio::test]
async fn env_keys_sign_the_calls() {
    let simulator = simulator(Duration::from_secs(7200), None).await;
    let root = tempfile::tempdir().unwrap();
    let provider = CredentialProvider::from_chain(
        &chain(CredentialsSource::Env, &simulator, root.path()),
        env(&[
            ("TENCENTCLOUD_SECRET_ID", SECRET_ID),
            ("TENCENTCLOUD_SECRET_KEY", SECRET_KEY),
        ]),
    )
    .await
    .unwrap();
    assert_eq!(provider.source_label(), "env");
    let gateway = gateway(&simulator, provider).await;

    verified(&mut gateway.client.clone(), request_with("")).await;
    assert_eq!(simulator.stats().signed_by.get(SECRET_ID), Some(&1));
}

#[tokio::test]
async fn the_home_file_and_then_the_system_file_are_read_when_none_is_named() {
    let mut config = SimulatorConfig::new(SECRET_ID, SECRET_KEY);
    config.rate_limit = 0;
    config.also_accepted = vec![("AKIDhomeFile".into(), "home-file-key".to_owned().into())];
    let simulator = spawn_simulator_with(config).await;
    let root = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let system = root.path().join("etc/tencentcloud/credentials");
    std::fs::create_dir_all(system.parent().unwrap()).unwrap();
    std::fs::write(&system, ini(SECRET_ID, SECRET_KEY)).unwrap();
    let settings = chain(CredentialsSource::File, &simulator, root.path());
    let home_path = home.path().display().to_string();

    // Only /etc/tencentcloud/credentials (under the test's root) exists.
    let provider = CredentialProvider::from_chain(&settings, env(&[("HOME", &home_path)]))
        .await
        .unwrap();
    assert_eq!(provider.source_label(), "file");
    let gateway = gateway(&simulator, provider).await;
    verified(&mut gateway.client.clone(), request_with("")).await;
    assert_eq!(simulator.stats().signed_by.get(SECRET_ID), Some(&1));

    // ~/.tencentcloud/credentials comes first once it exists.
    let home_file = home.path().join(".tencentcloud/credentials");
    std::fs::create_dir_all(home_file.parent().unwrap()).unwrap();
    std::fs::write(&home_file, ini("AKIDhomeFile", "home-file-key")).unwrap();
    let provider = CredentialProvider::from_chain(&settings, env(&[("HOME", &home_path)]))
        .await
        .unwrap();
    let gateway = self::gateway(&simulator, provider).await;
    verified(&mut gateway.client.clone(), request_with("")).await;
    assert_eq!(simulator.stats().signed_by.get("AKIDhomeFile"), Some(&1));
}

#[tokio::test]
async fn tke_oidc_keys_come_from_sts_for_the_projected_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "projected-service-account-token-v1").unwrap();
    let simulator = simulator(Duration::from_secs(7200), Some(&token_file)).await;
    let provider = CredentialProvider::from_chain(
        &chain(CredentialsSource::Oidc, &simulator, dir.path()),
        lookup(&tke_env(&token_file)),
    )
    .await
    .unwrap();
    assert_eq!(provider.source_label(), "oidc");
    let gateway = gateway(&simulator, provider).await;

    for _ in 0..3 {
        verified(&mut gateway.client.clone(), request_with("")).await;
    }
    let stats = simulator.stats();
    assert_eq!(stats.count("Success"), 3);
    assert_eq!(
        stats.credential_calls("AssumeRoleWithWebIdentity:Success"),
        1
    );
    assert!(
        stats.signed_by.is_empty(),
        "only temporary keys signed: {:?}",
        stats.signed_by
    );
}

#[tokio::test]
async fn a_token_sts_refuses_stops_the_start_up_naming_the_code_and_nothing_secret() {
    let dir = tempfile::tempdir().unwrap();
    let accepted = dir.path().join("accepted");
    std::fs::write(&accepted, "the-token-sts-accepts").unwrap();
    let ours = dir.path().join("ours");
    std::fs::write(&ours, "a-token-sts-refuses").unwrap();
    let simulator = simulator(Duration::from_secs(7200), Some(&accepted)).await;

    let error = CredentialProvider::from_chain(
        &chain(CredentialsSource::Auto, &simulator, dir.path()),
        lookup(&tke_env(&ours)),
    )
    .await
    .unwrap_err()
    .to_string();

    assert!(
        error.contains("oidc") && error.contains("InvalidParameter.WebIdentityTokenError"),
        "{error}"
    );
    for secret in ["a-token-sts-refuses", "100000000001"] {
        assert!(!error.contains(secret), "{error}");
    }
}

#[tokio::test]
async fn the_cvm_role_keys_come_from_the_metadata_server() {
    let simulator = simulator(Duration::from_secs(7200), None).await;
    let root = tempfile::tempdir().unwrap();
    let provider = CredentialProvider::from_chain(
        &chain(CredentialsSource::Auto, &simulator, root.path()),
        env(&[]),
    )
    .await
    .unwrap();
    assert_eq!(provider.source_label(), "cvm-role");
    let gateway = gateway(&simulator, provider).await;

    verified(&mut gateway.client.clone(), request_with("")).await;
    let stats = simulator.stats();
    assert_eq!(stats.credential_calls("metadata:Success"), 1);
    assert_eq!(stats.count("Success"), 1);
    assert!(stats.signed_by.is_empty(), "{:?}", stats.signed_by);
}

#[tokio::test]
async fn an_instance_without_a_role_has_no_keys_and_says_what_to_set() {
    let mut config = SimulatorConfig::new(SECRET_ID, SECRET_KEY);
    config.cvm_role_name = None;
    let simulator = spawn_simulator_with(config).await;
    let root = tempfile::tempdir().unwrap();

    let error = CredentialProvider::from_chain(
        &chain(CredentialsSource::Auto, &simulator, root.path()),
        env(&[]),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("TENCENTCLOUD_SECRET_ID"), "{error}");
    assert!(error.contains("--simulate"), "{error}");

    let error = CredentialProvider::from_chain(
        &chain(CredentialsSource::CvmRole, &simulator, root.path()),
        env(&[]),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("no CAM role"), "{error}");
}

#[tokio::test]
async fn role_arn_keys_sign_the_calls_and_the_env_keys_sign_only_sts() {
    let simulator = simulator(Duration::from_secs(7200), None).await;
    let root = tempfile::tempdir().unwrap();
    let mut settings = chain(CredentialsSource::Auto, &simulator, root.path());
    settings.role = Some(RoleSettings {
        arn: ROLE_ARN.to_owned(),
        session_name: "faceid-gateway".to_owned(),
        duration: Duration::from_secs(7200),
    });
    let provider = CredentialProvider::from_chain(
        &settings,
        env(&[
            ("TENCENTCLOUD_SECRET_ID", SECRET_ID),
            ("TENCENTCLOUD_SECRET_KEY", SECRET_KEY),
        ]),
    )
    .await
    .unwrap();
    assert_eq!(provider.source_label(), "role-arn");
    let gateway = gateway(&simulator, provider).await;

    for _ in 0..3 {
        verified(&mut gateway.client.clone(), request_with("")).await;
    }
    let stats = simulator.stats();
    assert_eq!(stats.count("Success"), 3);
    assert_eq!(stats.credential_calls("AssumeRole:Success"), 1);
    assert_eq!(
        stats.signed_by.get(SECRET_ID),
        Some(&1),
        "the long-lived keys signed AssumeRole only"
    );
}

#[tokio::test]
async fn auto_takes_env_then_file_then_oidc_then_the_cvm_role() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "projected-token").unwrap();
    let simulator = simulator(Duration::from_secs(7200), Some(&token_file)).await;
    let home = tempfile::tempdir().unwrap();
    let home_file = home.path().join(".tencentcloud/credentials");
    std::fs::create_dir_all(home_file.parent().unwrap()).unwrap();
    std::fs::write(&home_file, ini(SECRET_ID, SECRET_KEY)).unwrap();
    let settings = chain(CredentialsSource::Auto, &simulator, dir.path());

    let mut vars = tke_env(&token_file);
    vars.push(("HOME", home.path().display().to_string()));
    vars.push(("TENCENTCLOUD_SECRET_ID", SECRET_ID.to_owned()));
    vars.push(("TENCENTCLOUD_SECRET_KEY", SECRET_KEY.to_owned()));
    let mut chosen = Vec::new();
    // Every source is there; take them away one by one, in order.
    for next_to_go in [
        &["TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY"][..],
        &["HOME"],
        &[
            "TKE_ROLE_ARN",
            "TKE_PROVIDER_ID",
            "TKE_WEB_IDENTITY_TOKEN_FILE",
        ],
        &[],
    ] {
        let provider = CredentialProvider::from_chain(&settings, lookup(&vars))
            .await
            .unwrap();
        chosen.push(provider.source_label());
        vars.retain(|(name, _)| !next_to_go.contains(name));
    }
    assert_eq!(chosen, ["env", "file", "oidc", "cvm-role"]);
}

/// The overall (`""`) readiness `health` reports; -1 when it cannot tell.
async fn serving(health: &mut HealthClient<Channel>) -> i32 {
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_or(-1, |answer| answer.into_inner().status)
}

/// A gateway on TKE OIDC keys that live `ttl`, from a projected token
/// file holding `token`.
struct OidcGateway {
    _dir: tempfile::TempDir,
    token_file: std::path::PathBuf,
    simulator: Simulator,
    gateway: Gateway,
}

async fn oidc_gateway(token: &str, ttl: Duration) -> OidcGateway {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    let simulator = simulator(ttl, Some(&token_file)).await;
    let provider = CredentialProvider::from_chain(
        &chain(CredentialsSource::Oidc, &simulator, dir.path()),
        lookup(&tke_env(&token_file)),
    )
    .await
    .unwrap();
    let gateway = gateway(&simulator, provider).await;
    OidcGateway {
        _dir: dir,
        token_file,
        simulator,
        gateway,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_second_keys_are_renewed_under_load_with_no_failed_call_and_a_rotated_token() {
    let OidcGateway {
        _dir,
        token_file,
        simulator,
        gateway,
    } = oidc_gateway("projected-token-before-rotation", Duration::from_secs(3)).await;

    // 20 calls a second for 15 s, each on its own task; the token rotates
    // halfway (the simulator then refuses the old one).
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    let mut calls = tokio::task::JoinSet::new();
    let mut renewals_at_rotation = 0;
    for tick in 0..300 {
        ticker.tick().await;
        if tick == 150 {
            replace(&token_file, "projected-token-after-rotation");
            renewals_at_rotation = simulator
                .stats()
                .credential_calls("AssumeRoleWithWebIdentity:Success");
        }
        let mut client = gateway.client.clone();
        calls.spawn(async move { client.verify_id_card(request_with("")).await });
    }
    let mut failed = Vec::new();
    within("the 300 calls to end", Duration::from_secs(60), async {
        while let Some(result) = calls.join_next().await {
            if let Err(status) = result.unwrap() {
                failed.push(format!("{:?} {}", status.code(), status.message()));
            }
        }
    })
    .await;

    assert!(
        failed.is_empty(),
        "{} calls failed: {failed:?}",
        failed.len()
    );
    let stats = simulator.stats();
    assert_eq!(stats.count("Success"), 300);
    let renewals = stats.credential_calls("AssumeRoleWithWebIdentity:Success");
    assert!(
        renewals >= 5,
        "the first keys and at least four renewals: {:?}",
        stats.credential_calls
    );
    assert!(
        renewals >= renewals_at_rotation + 2,
        "renewals went on with the rotated token: {:?}",
        stats.credential_calls
    );
    let counted = metric(
        gateway.admin_addr,
        r#"faceid_credentials_refresh_total{source="oidc",outcome="success"}"#,
    )
    .await;
    assert!(counted >= 4, "{counted} renewals counted");
}

#[tokio::test]
async fn a_call_refused_for_revoked_temporary_keys_renews_them_and_is_sent_once_more() {
    let OidcGateway {
        _dir,
        token_file: _,
        simulator,
        gateway,
    } = oidc_gateway("projected-token", Duration::from_secs(7200)).await;
    let mut client = gateway.client.clone();
    verified(&mut client, request_with("")).await;

    simulator.revoke_temporary_credentials();
    verified(&mut client, request_with("")).await;

    let stats = simulator.stats();
    assert_eq!(stats.count("AuthFailure.SecretIdNotFound"), 1);
    assert_eq!(stats.count("Success"), 2);
    assert_eq!(
        stats.credential_calls("AssumeRoleWithWebIdentity:Success"),
        2,
        "renewed once, at the refusal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_expire_while_sts_is_away_fail_unavailable_until_sts_returns() {
    let OidcGateway {
        _dir,
        token_file: _,
        simulator,
        gateway,
    } = oidc_gateway("projected-token", Duration::from_secs(3)).await;
    let mut client = gateway.client.clone();
    let mut health = HealthClient::new(gateway.channel().await);
    let readyz = format!("http://{}/readyz", gateway.admin_addr);
    faceid_gateway::install_crypto_provider();
    verified(&mut client, request_with("")).await;

    simulator.set_sts_available(false);
    let mut expired = None;
    wait_until(
        "a call refused for expired keys",
        Duration::from_secs(20),
        async || match client.verify_id_card(request_with("")).await {
            Err(status) if status.code() == Code::Unavailable => {
                expired = Some(status);
                true
            }
            _ => false,
        },
    )
    .await;
    let status = expired.unwrap();
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "CredentialsExpired"
    );
    assert!(status.get_details_retry_info().is_some());
    assert!(status.message().contains("nothing was sent"), "{status:?}");
    let sent = simulator.stats().received;
    for _ in 0..5 {
        let status = client.verify_id_card(request_with("")).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
    }
    assert_eq!(
        simulator.stats().received,
        sent,
        "nothing was sent upstream"
    );
    wait_until("health NOT_SERVING", Duration::from_secs(10), async || {
        serving(&mut health).await == ServingStatus::NotServing as i32
    })
    .await;
    let answer = reqwest::get(&readyz).await.unwrap();
    assert_eq!(answer.status(), 503);
    assert!(answer.text().await.unwrap().contains("expired"));
    assert!(
        metric(
            gateway.admin_addr,
            r#"faceid_credentials_refresh_total{source="oidc",outcome="failure"}"#
        )
        .await
            >= 1
    );

    // STS comes back: the next renewal recovers calls and readiness.
    simulator.set_sts_available(true);
    wait_until(
        "a call to succeed again",
        Duration::from_secs(30),
        async || client.verify_id_card(request_with("")).await.is_ok(),
    )
    .await;
    wait_until(
        "health SERVING again",
        Duration::from_secs(10),
        async || serving(&mut health).await == ServingStatus::Serving as i32,
    )
    .await;
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 200);
}
