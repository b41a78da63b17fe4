//! The client commands of the real binary against two real servers: send, query and an
//! export piped into an import that replays a tenant's history elsewhere.

mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
};

use common::{API_KEY, free_port, spawn_server};

fn eventline(server: &str, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eventline"))
        .args(args)
        .env("EVENTLINE_SERVER", format!("http://{server}"))
        .env("EVENTLINE_API_KEY", API_KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "eventline {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_piped_into_import_replays_history_on_another_server() {
    let source = spawn_server(
        &eventline_store::testing::fresh_postgres_database().await,
        free_port(),
    )
    .await;
    let target = spawn_server(
        &eventline_store::testing::fresh_postgres_database().await,
        free_port(),
    )
    .await;
    let ndjson: String = (0..1200)
        .map(|n| format!("{{\"event_id\":\"c{n}\",\"event_type\":\"t{}\",\"user_id\":\"u{}\",\"properties\":{{\"n\":{n}}}}}\n", n % 4, n % 5))
        .collect();
    let imported = eventline(&source.addr, &["import"], Some(ndjson.as_bytes()));
    assert_eq!(
        String::from_utf8(imported).unwrap().trim(),
        "accepted 1200, duplicates 0, rejected 0"
    );
    let sent = eventline(&source.addr, &["send", "--type", "t0", "--id", "c0"], None);
    assert!(
        String::from_utf8(sent)
            .unwrap()
            .contains("INGEST_STATUS_DUPLICATE")
    );

    let exported = eventline(&source.addr, &["export"], None);
    assert_eq!(
        exported
            .split(|byte| *byte == b'\n')
            .filter(|line| !line.is_empty())
            .count(),
        1200
    );
    let replayed = eventline(&target.addr, &["import"], Some(&exported));
    assert_eq!(
        String::from_utf8(replayed).unwrap().trim(),
        "accepted 1200, duplicates 0, rejected 0"
    );

    let top = |addr: &str| String::from_utf8(eventline(addr, &["query", "top"], None)).unwrap();
    assert_eq!(top(&source.addr), top(&target.addr));
    assert_eq!(top(&target.addr), "t0\t300\nt1\t300\nt2\t300\nt3\t300\n");
    // Ids, types, users, timestamps and properties survive; receive times are new.
    let user_listing = |addr: &str| -> Vec<serde_json::Value> {
        let output = eventline(
            addr,
            &["query", "list", "--user", "u3", "--limit", "1000"],
            None,
        );
        String::from_utf8(output)
            .unwrap()
            .lines()
            .map(|line| {
                let mut event: serde_json::Value = serde_json::from_str(line).unwrap();
                let object = event.as_object_mut().unwrap();
                object.remove("received_at");
                object.remove("client_timestamp");
                event
            })
            .collect()
    };
    let source_listing = user_listing(&source.addr);
    assert_eq!(source_listing.len(), 240);
    assert!(
        source_listing == user_listing(&target.addr),
        "the replayed history differs from the source"
    );
    let count = String::from_utf8(eventline(
        &target.addr,
        &["query", "count", "--type", "t2"],
        None,
    ))
    .unwrap();
    assert_eq!(count.trim(), "300");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_commands_print_funnels_retention_uniques_and_breakdowns() {
    let server = spawn_server(
        &eventline_store::testing::fresh_postgres_database().await,
        free_port(),
    )
    .await;
    // Ten users view, six of them sign up, three of them buy; plans alternate; one
    // event has no user.
    let now = chrono::Utc::now();
    let line = |id: String, event_type: &str, user: usize, minutes_ago: i64| {
        let timestamp = (now - chrono::Duration::minutes(minutes_ago))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let plan = if user.is_multiple_of(2) {
            "pro"
        } else {
            "free"
        };
        format!(
            "{{\"event_id\":\"{id}\",\"event_type\":\"{event_type}\",\"user_id\":\"u{user}\",\"timestamp\":\"{timestamp}\",\"properties\":{{\"plan\":\"{plan}\"}}}}\n"
        )
    };
    let mut ndjson = String::new();
    for user in 0..10 {
        ndjson += &line(format!("v{user}"), "view", user, 120);
    }
    for user in 0..6 {
        ndjson += &line(format!("s{user}"), "signup", user, 60);
    }
    for user in 0..3 {
        ndjson += &line(format!("b{user}"), "buy", user, 30);
    }
    ndjson += "{\"event_id\":\"anonymous\",\"event_type\":\"view\"}\n";
    let imported = eventline(&server.addr, &["import"], Some(ndjson.as_bytes()));
    assert_eq!(
        String::from_utf8(imported).unwrap().trim(),
        "accepted 20, duplicates 0, rejected 0"
    );
    let run = |args: &[&str]| String::from_utf8(eventline(&server.addr, args, None)).unwrap();

    let funnel = run(&[
        "query", "funnel", "--step", "view", "--step", "signup", "--step", "buy", "--start", "1d",
    ]);
    assert_eq!(
        funnel,
        "1\tview\t10\t100.0%\n2\tsignup\t6\t60.0%\n3\tbuy\t3\t30.0%\n"
    );
    assert_eq!(run(&["query", "uniques", "--start", "1d"]).trim(), "10");
    assert_eq!(
        run(&[
            "query",
            "breakdown",
            "--by",
            "plan",
            "--type",
            "view",
            "--start",
            "1d"
        ]),
        "\"free\"\t5\n\"pro\"\t5\n(not set)\t1\n"
    );
    let retention = run(&[
        "query",
        "retention",
        "--start-type",
        "view",
        "--return-type",
        "buy",
        "--start",
        "1d",
    ]);
    let mut lines = retention.lines();
    assert!(
        lines.next().unwrap().starts_with("cohort\tusers\t+0"),
        "{retention}"
    );
    let (mut users, mut returned) = (0, 0);
    for line in lines {
        let columns: Vec<u64> = line
            .split('\t')
            .skip(1)
            .map(|column| column.parse().unwrap())
            .collect();
        users += columns[0];
        returned += columns[1..].iter().sum::<u64>();
    }
    assert_eq!((users, returned), (10, 3), "{retention}");
}

#[tokio::test]
async fn migrate_require_citus_distributes_on_citus_and_fails_loudly_on_one_postgresql() {
    // The chart's database.citus runs `migrate --require-citus`: on one PostgreSQL that is
    // an error naming the fix, never a silent single-node install; on the Citus suite's
    // cluster (scripts/test-citus) it distributes.
    let database_url = eventline_store::testing::fresh_postgres_database().await;
    let output = Command::new(env!("CARGO_BIN_EXE_eventline"))
        .args([
            "migrate",
            "--require-citus",
            "--database-url",
            &database_url,
        ])
        .env_remove("EVENTLINE_CONFIG")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    if eventline_store::testing::citus_requested() {
        assert!(output.status.success(), "{stderr}");
        assert!(
            stdout.contains("distributed by tenant_id on Citus"),
            "{stdout}"
        );
    } else {
        assert!(!output.status.success(), "{stdout}");
        assert!(stderr.contains("no citus extension"), "{stderr}");
        assert!(stderr.contains("Scale out"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_search_prints_the_matching_events_newest_first() {
    const ADMIN_TOKEN: &str = "cli-search-admin-token";
    let server = common::spawn_server_with(
        &eventline_store::testing::fresh_postgres_database().await,
        free_port(),
        &[
            ("EVENTLINE_ADMIN_TOKEN", ADMIN_TOKEN),
            ("EVENTLINE_SEARCH_INDEX_INTERVAL_MS", "50"),
        ],
    )
    .await;
    // Search is turned on over AdminService, as an operator would.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer: tonic::metadata::MetadataValue<_> =
        format!("Bearer {ADMIN_TOKEN}").parse().unwrap();
    let mut admin = eventline_proto::v1::admin_service_client::AdminServiceClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            Ok(request)
        },
    );
    let tenants = admin
        .list_tenants(eventline_proto::v1::ListTenantsRequest::default())
        .await
        .unwrap()
        .into_inner();
    admin
        .set_search_index(eventline_proto::v1::SetSearchIndexRequest {
            tenant_id: tenants.tenants[0].tenant_id.clone(),
            enabled: true,
        })
        .await
        .unwrap();
    let ndjson = "{\"event_id\":\"a\",\"event_type\":\"error\",\"timestamp\":\"2026-12-01T10:00:00Z\",\"properties\":{\"message\":\"Payment gateway timeout\"}}\n\
                  {\"event_id\":\"b\",\"event_type\":\"error\",\"timestamp\":\"2026-12-01T11:00:00Z\",\"properties\":{\"message\":\"gateway timeout, retrying\"}}\n\
                  {\"event_id\":\"c\",\"event_type\":\"error\",\"timestamp\":\"2026-12-01T12:00:00Z\",\"properties\":{\"message\":\"timeout of the gateway\"}}\n";
    eventline(&server.addr, &["import"], Some(ndjson.as_bytes()));
    let search = |args: &[&str]| {
        let mut all = vec!["query", "search"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--start", "2026-12-01T00:00:00Z"]);
        let out = String::from_utf8(eventline(&server.addr, &all, None)).unwrap();
        out.lines()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line).unwrap()["event_id"].clone()
            })
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while search(&["timeout"]).len() < 3 {
        assert!(std::time::Instant::now() < deadline, "never indexed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(search(&["\"gateway timeout\""]), ["b", "a"]);
    assert_eq!(search(&["gateway -retrying", "--limit", "1"]), ["c"]);
}
