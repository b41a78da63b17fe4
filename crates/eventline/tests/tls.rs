//! Native TLS on the real binary (issue #17): grpcurl with `-cacert` and curl with
//! `--cacert` against certificates made by openssl, the CLI over `https://` with
//! `--ca-cert`, a certificate swapped on disk and served without a restart, and mTLS
//! refusing clients without a certificate. One server runs on SQLite, the other on
//! PostgreSQL. Readiness is read from the metrics port, which stays plaintext. Outbound,
//! a stream delivers to an `https://` webhook whose CA `SSL_CERT_FILE` names, and pauses
//! on one whose certificate nobody vouches for.

mod common;

use std::{
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{
    API_KEY,
    authority::{Authority, run},
    free_port, spawn_server_with,
};
use serde_json::{Value, json};

/// An `eventline serve` child speaking TLS on its gRPC and HTTP ports.
struct TlsServer {
    child: Child,
    grpc_port: u16,
    http_port: u16,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn spawn_tls_server(
    store: &[(&str, String)],
    certificate: &Path,
    key: &Path,
    client_ca: Option<&str>,
) -> TlsServer {
    let (grpc_port, http_port, metrics_port) = (free_port(), free_port(), free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_eventline"));
    command
        .arg("serve")
        .env("EVENTLINE_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
        .env("EVENTLINE_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env(
            "EVENTLINE_METRICS_ADDR",
            format!("127.0.0.1:{metrics_port}"),
        )
        .env("EVENTLINE_BOOTSTRAP_API_KEY", API_KEY)
        .env("EVENTLINE_LOG_LEVEL", "warn")
        .env("EVENTLINE_TLS_CERT_PATH", certificate)
        .env("EVENTLINE_TLS_KEY_PATH", key)
        .env("EVENTLINE_TLS_RELOAD_INTERVAL_MS", "200")
        // The store is only what `store` says: never the test run's own DATABASE_URL.
        .env_remove("DATABASE_URL")
        .env_remove("EVENTLINE_DATABASE_URL")
        .envs(store.iter().map(|(name, value)| (name, value)))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(client_ca) = client_ca {
        command.env("EVENTLINE_TLS_CLIENT_CA_PATH", client_ca);
    }
    let mut server = TlsServer {
        child: command.spawn().expect("spawn eventline serve"),
        grpc_port,
        http_port,
    };
    let readyz = format!("http://127.0.0.1:{metrics_port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("eventline serve exited early with {status}");
        }
        if let Ok(response) = reqwest::get(&readyz).await
            && response.status() == 200
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("eventline serve did not become ready within 60 s");
}

fn succeeded(output: &Output) -> bool {
    output.status.success()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `curl` POSTing one event over HTTPS with `extra` TLS arguments; returns the status.
fn curl_track(server: &TlsServer, event_id: &str, extra: &[&str]) -> Output {
    let url = format!("https://localhost:{}/v1/events", server.http_port);
    let key = format!("x-api-key: {API_KEY}");
    let mut args = vec![
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        &url,
        "-H",
        &key,
        "-H",
        "content-type: application/json",
        "-d",
    ];
    let body = format!(r#"{{"event_type":"tls","event_id":"{event_id}"}}"#);
    args.push(&body);
    args.extend_from_slice(extra);
    run("curl", &args)
}

/// `eventline send` of one event over `https://` with `extra` TLS arguments.
fn cli_send(server: &TlsServer, event_id: &str, extra: &[&str]) -> Output {
    let target = format!("https://localhost:{}", server.grpc_port);
    let mut args = vec![
        "send", "--type", "tls", "--id", event_id, "--server", &target,
    ];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_eventline"))
        .args(&args)
        .env("EVENTLINE_API_KEY", API_KEY)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_curl_and_the_cli_speak_tls_and_a_swapped_certificate_is_served_without_a_restart()
{
    let directory = tempfile::tempdir().unwrap();
    let first = Authority::new(directory.path(), "first");
    let second = Authority::new(directory.path(), "second");
    let (first_certificate, first_key) = first.server_certificate();
    let (second_certificate, second_key) = second.server_certificate();
    // The server reads these paths; the test later overwrites them, as cert-manager does.
    let certificate = directory.path().join("tls.crt");
    let key = directory.path().join("tls.key");
    std::fs::copy(&first_certificate, &certificate).unwrap();
    std::fs::copy(&first_key, &key).unwrap();
    let data_dir = directory.path().join("data");
    let server = spawn_tls_server(
        &[("EVENTLINE_DATA_DIR", data_dir.to_str().unwrap().to_owned())],
        &certificate,
        &key,
        None,
    )
    .await;
    let grpc = format!("localhost:{}", server.grpc_port);
    let key_header = format!("x-api-key: {API_KEY}");

    // grpcurl trusts the CA it is given, and refuses the server without it.
    let health = run(
        "grpcurl",
        &["-cacert", &first.ca(), &grpc, "grpc.health.v1.Health/Check"],
    );
    assert!(succeeded(&health), "{}", text(&health));
    assert!(text(&health).contains("SERVING"), "{}", text(&health));
    let tracked = run(
        "grpcurl",
        &[
            "-cacert",
            &first.ca(),
            "-H",
            &key_header,
            "-d",
            r#"{"event":{"event_type":"tls","event_id":"grpcurl-1"}}"#,
            &grpc,
            "eventline.v1.IngestService/Track",
        ],
    );
    assert!(
        text(&tracked).contains("INGEST_STATUS_ACCEPTED"),
        "{}",
        text(&tracked)
    );
    let untrusted = run(
        "grpcurl",
        &[
            "-connect-timeout",
            "3",
            &grpc,
            "grpc.health.v1.Health/Check",
        ],
    );
    assert!(!succeeded(&untrusted), "{}", text(&untrusted));
    let plaintext = run(
        "grpcurl",
        &["-plaintext", &grpc, "grpc.health.v1.Health/Check"],
    );
    assert!(!succeeded(&plaintext), "plaintext is refused on a TLS port");

    // curl over HTTPS, likewise.
    let created = curl_track(&server, "curl-1", &["--cacert", &first.ca()]);
    assert_eq!(text(&created), "201");
    assert!(!succeeded(&curl_track(&server, "curl-2", &[])));

    // The CLI (the Rust SDK underneath) over https:// with --ca-cert.
    let sent = cli_send(&server, "cli-1", &["--ca-cert", &first.ca()]);
    assert!(
        text(&sent).contains("INGEST_STATUS_ACCEPTED"),
        "{}",
        text(&sent)
    );

    // A new certificate from another CA, written over the old files, is picked up by new
    // connections within a few reload intervals, without a restart.
    std::fs::copy(&second_key, &key).unwrap();
    std::fs::copy(&second_certificate, &certificate).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if text(&curl_track(&server, "curl-3", &["--cacert", &second.ca()])) == "201" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the swapped certificate was not served within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!succeeded(&curl_track(
        &server,
        "curl-4",
        &["--cacert", &first.ca()]
    )));
    let after_swap = run(
        "grpcurl",
        &[
            "-cacert",
            &second.ca(),
            &grpc,
            "grpc.health.v1.Health/Check",
        ],
    );
    assert!(succeeded(&after_swap), "{}", text(&after_swap));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_clients_without_a_certificate_are_refused_on_both_ports() {
    let database_url = eventline_store::testing::fresh_postgres_database().await;
    let directory = tempfile::tempdir().unwrap();
    let servers = Authority::new(directory.path(), "servers");
    let clients = Authority::new(directory.path(), "clients");
    let strangers = Authority::new(directory.path(), "strangers");
    let (certificate, key) = servers.server_certificate();
    let (client_certificate, client_key) = clients.client_certificate();
    let (stranger_certificate, stranger_key) = strangers.client_certificate();
    let server = spawn_tls_server(
        &[("EVENTLINE_DATABASE_URL", database_url)],
        Path::new(&certificate),
        Path::new(&key),
        Some(&clients.ca()),
    )
    .await;
    let grpc = format!("localhost:{}", server.grpc_port);
    let ca = servers.ca();

    let without = run(
        "grpcurl",
        &["-cacert", &ca, &grpc, "grpc.health.v1.Health/Check"],
    );
    assert!(!succeeded(&without), "{}", text(&without));
    let stranger = run(
        "grpcurl",
        &[
            "-connect-timeout",
            "3",
            "-cacert",
            &ca,
            "-cert",
            &stranger_certificate,
            "-key",
            &stranger_key,
            &grpc,
            "grpc.health.v1.Health/Check",
        ],
    );
    assert!(
        !succeeded(&stranger),
        "a certificate from another CA is refused"
    );
    let with = run(
        "grpcurl",
        &[
            "-cacert",
            &ca,
            "-cert",
            &client_certificate,
            "-key",
            &client_key,
            &grpc,
            "grpc.health.v1.Health/Check",
        ],
    );
    assert!(text(&with).contains("SERVING"), "{}", text(&with));

    assert!(!succeeded(&curl_track(&server, "m-1", &["--cacert", &ca])));
    let created = curl_track(
        &server,
        "m-2",
        &[
            "--cacert",
            &ca,
            "--cert",
            &client_certificate,
            "--key",
            &client_key,
        ],
    );
    assert_eq!(text(&created), "201");

    let sent = cli_send(
        &server,
        "cli-mtls",
        &[
            "--ca-cert",
            &ca,
            "--client-cert",
            &client_certificate,
            "--client-key",
            &client_key,
        ],
    );
    assert!(
        text(&sent).contains("INGEST_STATUS_ACCEPTED"),
        "{}",
        text(&sent)
    );
}

/// One request an HTTPS receiver got: its headers and body.
#[derive(Debug, Clone)]
struct Hook {
    headers: http::HeaderMap,
    body: Vec<u8>,
}

/// An HTTPS webhook receiver on a free port of 127.0.0.1, serving `certificate` (issued
/// for localhost) and answering 200 to every POST, which it keeps.
async fn https_receiver(certificate: &str, key: &str) -> (u16, Arc<Mutex<Vec<Hook>>>) {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hooks = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&hooks);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let kept = Arc::clone(&kept);
            tokio::spawn(async move {
                // A client that refuses the certificate ends here, which is the point.
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let kept = Arc::clone(&kept);
                        async move {
                            use http_body_util::BodyExt;
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await?.to_bytes().to_vec();
                            kept.lock().unwrap().push(Hook {
                                headers: parts.headers,
                                body,
                            });
                            Ok::<_, hyper::Error>(http::Response::new(http_body_util::Empty::<
                                bytes::Bytes,
                            >::new(
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, hooks)
}

/// A REST call to a plaintext server with `token` as the bearer; the answer's JSON.
async fn rest(method: reqwest::Method, url: &str, token: &str, body: Option<Value>) -> Value {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_delivers_to_an_https_webhook_trusted_through_ssl_cert_file() {
    const ADMIN_TOKEN: &str = "admin_token_for_the_tls_test";
    let directory = tempfile::tempdir().unwrap();
    let hooks_ca = Authority::new(directory.path(), "hooks");
    let strangers = Authority::new(directory.path(), "strangers");
    let (certificate, key) = hooks_ca.server_certificate();
    let (stranger_certificate, stranger_key) = strangers.server_certificate();
    let (trusted_port, trusted_hooks) = https_receiver(&certificate, &key).await;
    let (untrusted_port, untrusted_hooks) =
        https_receiver(&stranger_certificate, &stranger_key).await;

    let database = format!("sqlite:{}", directory.path().join("tls.sqlite3").display());
    let ca = hooks_ca.ca();
    let server = spawn_server_with(
        &database,
        free_port(),
        &[
            // What the webhook client trusts, as for curl and OpenSSL.
            ("SSL_CERT_FILE", ca.as_str()),
            ("EVENTLINE_ADMIN_TOKEN", ADMIN_TOKEN),
            ("EVENTLINE_STREAMS_INTERVAL_MS", "100"),
            ("EVENTLINE_STREAMS_MAX_ATTEMPTS", "1"),
        ],
    )
    .await;
    let http = format!("http://{}", server.http_addr);
    let tenants = rest(
        reqwest::Method::GET,
        &format!("{http}/v1/tenants"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    let tenant = tenants["tenants"][0]["tenant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let subscriptions = format!("{http}/v1/tenants/{tenant}/subscriptions");
    let trusted = rest(
        reqwest::Method::POST,
        &subscriptions,
        ADMIN_TOKEN,
        Some(json!({"webhook": {"url": format!("https://localhost:{trusted_port}/hook")}})),
    )
    .await;
    let untrusted = rest(
        reqwest::Method::POST,
        &subscriptions,
        ADMIN_TOKEN,
        Some(json!({"webhook": {"url": format!("https://localhost:{untrusted_port}/hook")}})),
    )
    .await;

    let sent = reqwest::Client::new()
        .post(format!("{http}/v1/events"))
        .header("x-api-key", API_KEY)
        .json(&json!({"event_id": "tls-hook-1", "event_type": "signup", "user_id": "u1"}))
        .send()
        .await
        .unwrap();
    assert!(sent.status().is_success(), "{}", sent.text().await.unwrap());

    let deadline = Instant::now() + Duration::from_secs(30);
    let hook = loop {
        if let Some(hook) = trusted_hooks.lock().unwrap().first().cloned() {
            break hook;
        }
        assert!(
            Instant::now() < deadline,
            "nothing reached the https webhook in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let body: Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(body["events"][0]["event_id"], "tls-hook-1", "{body}");
    let header = |name: &str| hook.headers[name].to_str().unwrap().to_owned();
    let secret = eventline_server::webhook::WebhookSecret::parse(
        trusted["webhook_secret"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(
        header("webhook-signature"),
        secret.sign(
            &header("webhook-id"),
            header("webhook-timestamp").parse().unwrap(),
            &hook.body
        ),
        "signed as over http"
    );

    // The other receiver's CA is not in SSL_CERT_FILE: nothing reaches it, and the
    // subscription pauses naming the certificate.
    let untrusted_id = untrusted["subscription"]["subscription_id"]
        .as_str()
        .unwrap();
    let paused = loop {
        let listed = rest(reqwest::Method::GET, &subscriptions, ADMIN_TOKEN, None).await;
        let subscription = listed["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subscription_id"] == untrusted_id)
            .cloned()
            .unwrap();
        if subscription["state"] == "SUBSCRIPTION_STATE_PAUSED" {
            break subscription;
        }
        assert!(
            Instant::now() < deadline,
            "still not paused: {subscription}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = paused["last_error"].as_str().unwrap();
    assert!(error.contains("certificate"), "{error}");
    assert!(untrusted_hooks.lock().unwrap().is_empty());
}
