//! Who may call and with which keys: TLS and mutual TLS with certificates
//! that rotate, bearer tokens that rotate, per-caller shares of the limit,
//! and Tencent keys replaced under load with no failed call.

use std::path::Path;
use std::time::Duration;

use faceid_gateway::proto::Verdict;
use faceid_gateway::proto::id_card_verification_service_client::IdCardVerificationServiceClient;
use faceid_gateway::simulator::{Simulator, SimulatorConfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

use crate::helpers::{
    Options, SECRET_ID, SECRET_KEY, request_with, spawn_gateway, spawn_simulator, wait_until,
};

/// A throwaway certificate authority.
struct Authority {
    pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self {
            pem: issuer.pem(),
            issuer,
        }
    }

    /// A leaf certificate and key (PEM) for `names`, for servers or clients.
    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn options(flags: Vec<String>) -> Options {
    Options {
        flags,
        ..Options::default()
    }
}

/// A TLS channel trusting `server_ca`, presenting `identity` if given.
async fn tls_channel(
    addr: std::net::SocketAddr,
    server_ca: &str,
    identity: Option<&(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(server_ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
}

async fn verifies(channel: Channel) -> bool {
    let mut client = IdCardVerificationServiceClient::new(channel);
    matches!(client.verify_id_card(request_with("")).await, Ok(answer) if answer.get_ref().verdict() == Verdict::Match)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_serves_only_clients_with_a_certificate_from_the_right_ca() {
    let dir = tempfile::tempdir().unwrap();
    let servers = Authority::new("server CA");
    let clients = Authority::new("client CA");
    let strangers = Authority::new("another CA");
    let (cert, key) = servers.leaf(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let simulator = spawn_simulator(0).await;
    let gateway = spawn_gateway(
        &simulator,
        options(vec![
            "--tls-cert".into(),
            write(dir.path(), "cert.pem", &cert),
            "--tls-key".into(),
            write(dir.path(), "key.pem", &key),
            "--tls-client-ca".into(),
            write(dir.path(), "clients.pem", &clients.pem),
        ]),
    )
    .await;
    let good = clients.leaf(&["billing"], ExtendedKeyUsagePurpose::ClientAuth);
    let foreign = strangers.leaf(&["billing"], ExtendedKeyUsagePurpose::ClientAuth);

    let served = tls_channel(gateway.addr, &servers.pem, Some(&good))
        .await
        .unwrap();
    assert!(
        verifies(served).await,
        "a client with the right certificate is served"
    );

    for identity in [None, Some(&foreign)] {
        let refused = match tls_channel(gateway.addr, &servers.pem, identity).await {
            Err(_) => true,
            Ok(channel) => !verifies(channel).await,
        };
        assert!(
            refused,
            "a client {} is refused",
            if identity.is_none() {
                "without a certificate"
            } else {
                "from another CA"
            }
        );
    }
    let plaintext = Channel::from_shared(format!("http://{}", gateway.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await;
    assert!(match plaintext {
        Err(_) => true,
        Ok(channel) => !verifies(channel).await,
    });
    assert_eq!(
        simulator.stats().received,
        1,
        "only the authorised call went upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_server_certificates_are_used_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = Authority::new("first CA");
    let second = Authority::new("second CA");
    let (cert, key) = first.leaf(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let cert_path = write(dir.path(), "cert.pem", &cert);
    let key_path = write(dir.path(), "key.pem", &key);
    let simulator = spawn_simulator(0).await;
    let gateway = spawn_gateway(
        &simulator,
        options(vec![
            "--tls-cert".into(),
            cert_path.clone(),
            "--tls-key".into(),
            key_path.clone(),
            "--reload-interval".into(),
            "100ms".into(),
        ]),
    )
    .await;
    assert!(verifies(tls_channel(gateway.addr, &first.pem, None).await.unwrap()).await);

    let (cert, key) = second.leaf(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(&key_path, key).unwrap();
    std::fs::write(&cert_path, cert).unwrap();
    wait_until(
        "the new certificate to be served",
        Duration::from_secs(10),
        async || match tls_channel(gateway.addr, &second.pem, None).await {
            Ok(channel) => verifies(channel).await,
            Err(_) => false,
        },
    )
    .await;
    assert!(
        tls_channel(gateway.addr, &first.pem, None).await.is_err()
            || !verifies(tls_channel(gateway.addr, &first.pem, None).await.unwrap()).await
    );
}

fn with_token(token: &str) -> tonic::Request<faceid_gateway::proto::VerifyIdCardRequest> {
    let mut request = tonic::Request::new(request_with(""));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_let_in_known_callers_only_and_rotate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (token, line) = faceid_gateway::server::new_token("billing", None).unwrap();
    let tokens = write(dir.path(), "tokens", &format!("{line}\n"));
    let simulator = spawn_simulator(0).await;
    let mut gateway = spawn_gateway(
        &simulator,
        options(vec![
            "--auth-tokens-file".into(),
            tokens.clone(),
            "--reload-interval".into(),
            "100ms".into(),
        ]),
    )
    .await;

    let missing = gateway
        .client
        .verify_id_card(request_with(""))
        .await
        .unwrap_err();
    let wrong = gateway
        .client
        .verify_id_card(with_token("fgw_not-a-token"))
        .await
        .unwrap_err();
    let right = gateway
        .client
        .verify_id_card(with_token(&token))
        .await
        .unwrap();
    let mut health = HealthClient::new(gateway.channel().await);
    let healthy = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;

    for (status, reason) in [(&missing, "MissingToken"), (&wrong, "UnknownToken")] {
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.get_details_error_info().unwrap().reason, reason);
        assert!(!status.message().contains("fgw_"));
    }
    assert_eq!(right.into_inner().verdict(), Verdict::Match);
    assert!(healthy.is_ok(), "health needs no token");
    assert_eq!(simulator.stats().received, 1);

    let (new_token, new_line) = faceid_gateway::server::new_token("billing", None).unwrap();
    std::fs::write(&tokens, format!("{new_line}\n")).unwrap();
    wait_until(
        "the new token to work",
        Duration::from_secs(10),
        async || {
            gateway
                .client
                .verify_id_card(with_token(&new_token))
                .await
                .is_ok()
        },
    )
    .await;
    let old = gateway
        .client
        .verify_id_card(with_token(&token))
        .await
        .unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated);
}

/// The services reflection lists to a caller with `token` (if any).
async fn listed_services(channel: tonic::transport::Channel, token: Option<&str>) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut client =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel);
    let mut request = tonic::Request::new(tokio_stream::iter([
        tonic_reflection::pb::v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
    ]));
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let mut stream = client
        .server_reflection_info(request)
        .await
        .expect("reflection answers")
        .into_inner();
    let answer = stream.message().await.unwrap().expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

#[tokio::test]
async fn reflection_shows_only_health_without_a_token_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (token, line) = faceid_gateway::server::new_token("ops", None).unwrap();
    let tokens = write(dir.path(), "tokens", &line);
    let simulator = spawn_simulator(0).await;
    // Reflection always lists itself.
    let health_only = vec![
        "grpc.health.v1.Health".to_owned(),
        "grpc.reflection.v1.ServerReflection".to_owned(),
    ];
    for allow in [false, true] {
        let mut flags = vec!["--auth-tokens-file".to_owned(), tokens.clone()];
        if allow {
            flags.push("--auth-allow-reflection".into());
        }
        let gateway = spawn_gateway(&simulator, options(flags)).await;

        let anonymous = listed_services(gateway.channel().await, None).await;
        let with_token = listed_services(gateway.channel().await, Some(&token)).await;

        assert!(
            with_token.contains(&"faceid.v1.IdCardVerificationService".to_owned()),
            "allow={allow}: {with_token:?}"
        );
        if allow {
            assert_eq!(anonymous, with_token);
        } else {
            // Enough for `grpcurl ... grpc.health.v1.Health/Check` without a
            // token, and nothing more.
            assert_eq!(anonymous, health_only);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_caller_hits_its_share_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (greedy, greedy_line) = faceid_gateway::server::new_token("greedy", Some(3)).unwrap();
    let (polite, polite_line) = faceid_gateway::server::new_token("polite", None).unwrap();
    let tokens = write(
        dir.path(),
        "tokens",
        &format!("{greedy_line}\n{polite_line}\n"),
    );
    let simulator = spawn_simulator(0).await;
    let gateway = spawn_gateway(
        &simulator,
        options(vec!["--auth-tokens-file".into(), tokens]),
    )
    .await;

    let flood: Vec<_> = (0..12)
        .map(|_| {
            let mut client = gateway.client.clone();
            let token = greedy.clone();
            tokio::spawn(async move { client.verify_id_card(with_token(&token)).await })
        })
        .collect();
    let mut polite_client = gateway.client.clone();
    let mut polite_ok = 0;
    for _ in 0..5 {
        if polite_client
            .verify_id_card(with_token(&polite))
            .await
            .is_ok()
        {
            polite_ok += 1;
        }
    }
    let mut refused = Vec::new();
    let mut greedy_ok = 0;
    for call in flood {
        match call.await.unwrap() {
            Ok(_) => greedy_ok += 1,
            Err(status) => refused.push(status),
        }
    }

    assert_eq!(polite_ok, 5, "the other caller is served");
    assert!(
        (3..=4).contains(&greedy_ok),
        "about a second's share: {greedy_ok}"
    );
    for status in &refused {
        assert_eq!(status.code(), Code::ResourceExhausted);
        let quota = status.get_details_quota_failure().expect("QuotaFailure");
        assert_eq!(quota.violations[0].subject, "caller:greedy");
        assert!(status.get_details_retry_info().is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_credentials_file_takes_over_with_no_failed_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SimulatorConfig::new(SECRET_ID, SECRET_KEY);
    config.rate_limit = 0;
    config.also_accepted = vec![(
        "AKIDrotatedKey".into(),
        "rotated-secret-key".to_owned().into(),
    )];
    let simulator = Simulator::start(
        config,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .unwrap();
    let file = dir.path().join("credentials");
    std::fs::write(
        &file,
        format!("[default]\nsecret_id = {SECRET_ID}\nsecret_key = {SECRET_KEY}\n"),
    )
    .unwrap();

    let mut args = faceid_gateway::config::ServeArgs::from_flags([
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--reload-interval",
        "100ms",
        "--endpoint",
        simulator.endpoint().as_str(),
    ]);
    args.drain_timeout = Duration::from_secs(2);
    let provider = faceid_gateway::tencent::CredentialProvider::from_file(&file).unwrap();
    let app = faceid_gateway::startup::Application::build(
        args,
        faceid_gateway::startup::UpstreamTarget::Tencent(std::sync::Arc::new(provider)),
    )
    .await
    .unwrap();
    let addr = app.local_addr();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let mut client = IdCardVerificationServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    let mut failures = 0;
    for _ in 0..10 {
        if client.verify_id_card(request_with("")).await.is_err() {
            failures += 1;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    std::fs::write(
        &file,
        "[default]\nsecret_id = AKIDrotatedKey\nsecret_key = rotated-secret-key\n",
    )
    .unwrap();
    // Calls go on through the switch until the new key has signed 20.
    wait_until(
        "the new key to sign 20 calls",
        Duration::from_secs(15),
        async || {
            if client.verify_id_card(request_with("")).await.is_err() {
                failures += 1;
            }
            simulator.stats().signed_by.get("AKIDrotatedKey").copied() >= Some(20)
        },
    )
    .await;

    assert_eq!(failures, 0, "no call failed during the rotation");
    let signed_by = simulator.stats().signed_by;
    assert!(
        signed_by.get(SECRET_ID).copied().unwrap_or(0) >= 10,
        "{signed_by:?}"
    );
    assert!(
        signed_by.get("AKIDrotatedKey").copied().unwrap_or(0) >= 20,
        "the new key took over: {signed_by:?}"
    );
}
