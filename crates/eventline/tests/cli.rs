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
