//! `serve --check-config`: the binary reads its flags and variables as
//! `serve` does, makes the start-up checks that need no network, prints one
//! line and exits, without binding a port or contacting anything; a bad
//! configuration fails with the message `serve` stops with.

use std::time::Duration;

use tokio::net::TcpListener;

use crate::process::command;

const SECRET_ID: &str = "AKIDcheckConfigTests";
const SECRET_KEY: &str = "check-config-tests-secret-key";

/// Runs the binary with `args` and `env` in a clean environment; returns
/// (exit code, stdout, stderr).
async fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = command(args);
    command.envs(env.iter().copied());
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .unwrap_or_else(|_| panic!("{args:?} did not exit within 30 s"))
        .expect("run the binary");
    (
        output.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What the process printed on stderr besides its JSON log lines: the
/// error `main` (or clap) prints.
fn message(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|line| !line.starts_with('{'))
        .collect::<Vec<_>>()
        .join("\n")
}

const KEYS: [(&str, &str); 2] = [
    ("TENCENTCLOUD_SECRET_ID", SECRET_ID),
    ("TENCENTCLOUD_SECRET_KEY", SECRET_KEY),
];

#[tokio::test]
async fn a_good_configuration_passes_without_binding_or_contacting_anything() {
    // Every address the configuration names is this one listener's: `serve`
    // could not bind it, and any connection the check made would show.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taken = listener.local_addr().unwrap().to_string();
    let url = format!("http://{taken}");
    let redis = format!("redis://{taken}/0");
    let mut env = KEYS.to_vec();
    env.extend([
        ("FACEID_LISTEN", taken.as_str()),
        ("FACEID_ADMIN_LISTEN", taken.as_str()),
        ("FACEID_ENDPOINT", url.as_str()),
        ("FACEID_RATE_LIMIT_REDIS", redis.as_str()),
        ("FACEID_ROLE_ARN", "qcs::cam::uin/100000000001:roleName/gw"),
        ("FACEID_STS_ENDPOINT", url.as_str()),
        ("FACEID_METADATA_ENDPOINT", url.as_str()),
        ("FACEID_CREDENTIALS_SOURCE", "env"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ]);

    let (code, stdout, stderr) = run(&["serve", "--check-config"], &env).await;

    assert_eq!(
        (code, stdout.as_str()),
        (0, "configuration ok\n"),
        "{stderr}"
    );
    let accepted = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
    assert!(accepted.is_err(), "the check connected to {taken}");
    // Without the flag `serve` binds the gRPC port first (given nothing to
    // wait for: no STS, no Redis), and fails.
    let mut env = KEYS.to_vec();
    env.push(("FACEID_LISTEN", taken.as_str()));
    let (code, _, stderr) = run(&["serve"], &env).await;
    assert_ne!(code, 0);
    assert!(
        message(&stderr).contains(&format!("cannot listen on {taken}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_flag_works_without_the_word_serve_and_with_the_simulator() {
    for args in [
        &["--check-config", "--simulate"][..],
        &["serve", "--simulate", "--check-config"][..],
    ] {
        let (code, stdout, stderr) = run(args, &[]).await;
        assert_eq!(
            (code, stdout.as_str()),
            (0, "configuration ok\n"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn files_that_are_absent_are_not_read_and_present_ones_are() {
    let dir = tempfile::tempdir().unwrap();
    let absent = |name: &str| dir.path().join(name).display().to_string();
    let (cert, key, ca, tokens, credentials) = (
        absent("tls.crt"),
        absent("tls.key"),
        absent("ca.crt"),
        absent("tokens"),
        absent("credentials.ini"),
    );
    let env = [
        ("FACEID_CREDENTIALS_SOURCE", "file"),
        ("TENCENTCLOUD_CREDENTIALS_FILE", credentials.as_str()),
        ("FACEID_TLS_CERT", cert.as_str()),
        ("FACEID_TLS_KEY", key.as_str()),
        ("FACEID_TLS_CLIENT_CA", ca.as_str()),
        ("FACEID_AUTH_TOKENS_FILE", tokens.as_str()),
        ("FACEID_TENCENT_RSA_PUBLIC_KEY", ca.as_str()),
        ("FACEID_RATE_LIMIT_REDIS", "rediss://redis.invalid:6380/0"),
        ("FACEID_RATE_LIMIT_REDIS_CA", ca.as_str()),
    ];
    let (code, stdout, stderr) = run(&["--check-config"], &env).await;
    assert_eq!(
        (code, stdout.as_str()),
        (0, "configuration ok\n"),
        "{stderr}"
    );

    // Once there, they are read as `serve` reads them.
    std::fs::write(&credentials, "secret_id = AKIDnoSection\n").unwrap();
    let (code, stdout, stderr) = run(&["--check-config"], &env).await;
    assert_ne!(code, 0);
    assert_eq!(stdout, "");
    assert!(
        message(&stderr).contains("needs a [default] section"),
        "{stderr}"
    );
}

/// A bad value of each kind of check `--check-config` makes: (what, flags,
/// variables, files to write first as (name, contents)).
type Case = (
    &'static str,
    Vec<&'static str>,
    Vec<(&'static str, String)>,
    Vec<(&'static str, &'static str)>,
);

fn bad_configurations() -> Vec<Case> {
    let keys = || {
        KEYS.iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect::<Vec<_>>()
    };
    let with = |extra: Vec<(&'static str, String)>| {
        let mut env = keys();
        env.extend(extra);
        env
    };
    vec![
        (
            "an endpoint with a path",
            vec!["--endpoint", "https://faceid.tencentcloudapi.com/v2"],
            keys(),
            vec![],
        ),
        (
            "the same endpoint twice",
            vec![],
            with(vec![(
                "FACEID_ENDPOINT",
                "https://faceid.tencentcloudapi.com,https://faceid.tencentcloudapi.com:443/".into(),
            )]),
            vec![],
        ),
        (
            "a region that cannot be a header",
            vec![],
            with(vec![("FACEID_REGION", "ap-guangzhou\u{7f}".into())]),
            vec![],
        ),
        (
            "a zero reload interval",
            vec!["--reload-interval", "0s"],
            keys(),
            vec![],
        ),
        (
            "a Redis URL with a bad port",
            vec![],
            with(vec![(
                "FACEID_RATE_LIMIT_REDIS",
                "redis://redis:99999/0".into(),
            )]),
            vec![],
        ),
        (
            "an OTLP protocol this build lacks",
            vec![],
            with(vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318".into()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".into()),
            ]),
            vec![],
        ),
        (
            "half a key pair",
            vec![],
            vec![("TENCENTCLOUD_SECRET_ID", SECRET_ID.into())],
            vec![],
        ),
        (
            "no keys for --credentials-source env",
            vec!["--credentials-source", "env"],
            vec![],
            vec![],
        ),
        (
            "TKE OIDC half set up",
            vec!["--credentials-source", "oidc"],
            vec![(
                "TKE_ROLE_ARN",
                "qcs::cam::uin/100000000001:roleName/r".into(),
            )],
            vec![],
        ),
        (
            "a tokens file with a bad line",
            vec![],
            with(vec![("FACEID_AUTH_TOKENS_FILE", "{dir}/tokens".into())]),
            vec![("tokens", "billing not-a-hash\n")],
        ),
        (
            "a TLS certificate that is not PEM",
            vec![],
            with(vec![
                ("FACEID_TLS_CERT", "{dir}/tls.crt".into()),
                ("FACEID_TLS_KEY", "{dir}/tls.key".into()),
            ]),
            vec![("tls.crt", "not a certificate"), ("tls.key", "not a key")],
        ),
        (
            "a Tencent public key that is not PEM",
            vec![],
            with(vec![(
                "FACEID_TENCENT_RSA_PUBLIC_KEY",
                "{dir}/rsa.pem".into(),
            )]),
            vec![("rsa.pem", "not a key")],
        ),
    ]
}

#[tokio::test]
async fn a_bad_configuration_fails_with_the_message_serve_stops_with() {
    for (what, flags, env, files) in bad_configurations() {
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in &files {
            std::fs::write(dir.path().join(name), contents).unwrap();
        }
        let dir_text = dir.path().display().to_string();
        let env: Vec<(&str, String)> = env
            .into_iter()
            .map(|(name, value)| (name, value.replace("{dir}", &dir_text)))
            .collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (*n, v.as_str())).collect();

        let mut serve = vec!["serve", "--listen", "127.0.0.1:0"];
        serve.extend(&flags);
        let (serve_code, _, serve_stderr) = run(&serve, &env).await;
        serve.push("--check-config");
        let (check_code, check_stdout, check_stderr) = run(&serve, &env).await;

        assert_ne!(serve_code, 0, "{what}: serve started: {serve_stderr}");
        assert_eq!(check_code, serve_code, "{what}: {check_stderr}");
        assert_eq!(check_stdout, "", "{what}");
        let expected = message(&serve_stderr);
        assert!(
            !expected.is_empty(),
            "{what}: serve said nothing: {serve_stderr}"
        );
        assert_eq!(message(&check_stderr), expected, "{what}");
        assert!(
            !check_stderr.contains(SECRET_KEY),
            "{what}: the key leaked: {check_stderr}"
        );
    }
}
