//! One source of truth for the settings (issue #16): `serve --help`, the README's
//! configuration table and `Config::default()` must agree on every setting's flag,
//! environment variable and default, so a default changed in one place only fails here.

use std::process::Command;

use eventline_server::config::{default_values, env_name, flag_name};

/// `(key, env cell, default cell)` of each row of the README's configuration table.
fn readme_rows() -> Vec<(String, String, String)> {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("README has a Configuration section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            (cells.len() == 3 && cells[0].starts_with('`')).then(|| {
                (
                    cells[0].trim_matches('`').to_owned(),
                    cells[1].to_owned(),
                    cells[2].to_owned(),
                )
            })
        })
        .collect()
}

/// The first `code` span of a table cell.
fn first_literal(cell: &str) -> Option<&str> {
    cell.split('`').nth(1)
}

#[test]
fn the_readme_table_lists_every_setting_with_its_environment_name_and_default() {
    let rows = readme_rows();
    let defaults = default_values();
    for (key, default) in &defaults {
        let (_, env_cell, default_cell) = rows
            .iter()
            .find(|(row_key, _, _)| row_key == key)
            .unwrap_or_else(|| panic!("README's configuration table has no row for {key}"));
        assert_eq!(
            first_literal(env_cell),
            Some(env_name(key).as_str()),
            "README names the wrong variable for {key}"
        );
        match default {
            None => assert!(
                default_cell.starts_with("unset"),
                "{key} defaults to unset, README says {default_cell:?}"
            ),
            Some(value) => assert_eq!(
                first_literal(default_cell),
                Some(value.as_str()),
                "{key} defaults to {value}, README says {default_cell:?}"
            ),
        }
    }
    for (key, _, _) in &rows {
        assert!(
            defaults.iter().any(|(name, _)| name == key),
            "README lists {key}, which is no setting"
        );
    }
}

#[test]
fn serve_help_has_a_flag_with_the_environment_name_and_default_of_every_setting() {
    let output = Command::new(env!("CARGO_BIN_EXE_eventline"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    // Help lines wrap at the terminal's width; compare with runs of white space folded.
    let help = String::from_utf8(output.stdout)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for (key, default) in default_values() {
        assert!(
            help.contains(&format!("--{} ", flag_name(&key))),
            "serve --help has no --{} for {key}",
            flag_name(&key)
        );
        assert!(
            help.contains(&env_name(&key)),
            "serve --help does not name {} for {key}",
            env_name(&key)
        );
        if let Some(value) = default {
            assert!(
                help.contains(&format!("[default: {value}]")),
                "serve --help does not show {key}'s default {value}"
            );
        }
    }
}

#[test]
fn a_flag_parses_like_its_environment_variable() {
    let directory = tempfile::tempdir().unwrap();
    // An invalid value is refused naming the setting: the flag reached the config.
    let output = Command::new(env!("CARGO_BIN_EXE_eventline"))
        .args([
            "serve",
            "--data-dir",
            directory.path().to_str().unwrap(),
            "--writer-max-batch-events",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("writer.max_batch_events"), "{stderr}");
    let output = Command::new(env!("CARGO_BIN_EXE_eventline"))
        .args([
            "serve",
            "--data-dir",
            directory.path().to_str().unwrap(),
            "--tls-cert",
            "/nonexistent/cert.pem",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tls.key_path"),
        "the alias reaches tls.cert_path: {stderr}"
    );
}
