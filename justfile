# Every routine task. `just --list` shows them.

# Run the server on embedded SQLite (./eventline-data).
run *ARGS:
    cargo run --release -p eventline -- serve {{ARGS}}

# Run the whole test suite against a real PostgreSQL.
test *ARGS:
    bash scripts/test {{ARGS}}

# Regenerate every SDK's code from proto/ (buf.gen.yaml; needs buf and grpcio-tools 1.85.1
# from pip, and `npm ci` in clients/typescript). scripts/check-generated fails CI when the
# committed code is out of date.
gen:
    buf generate

# One suite alone: rust, python, typescript, helm or console (e.g. `just suite console`).
suite NAME *ARGS:
    EVENTLINE_SUITES={{NAME}} bash scripts/test {{ARGS}}

# The chart tests (helm lint, kubernetes-validate, promtool, a real Prometheus).
helm-test:
    EVENTLINE_SUITES=helm bash scripts/test

# The reliability suite alone, with its figures printed.
chaos:
    cargo test -p eventline --test chaos -- --nocapture --test-threads 1

# Format Rust and protos.
fmt:
    cargo fmt --all
    buf format -w

# Lints: rustfmt, clippy, buf.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    buf lint
    buf format --diff --exit-code

# Everything CI runs.
ci:
    bash .ci/run

# The standard benchmark profile (under 10 minutes on 2 cores); see scripts/bench.
bench:
    bash scripts/bench

# eventline's analytics against an in-process ClickHouse (chdb from PyPI, in a venv under
# /tmp) on the same events, answers checked; e.g. `just bench-clickhouse --events 300000`.
# Uses $EVENTLINE_BIN or ./target/release/eventline (build it first). Not part of CI.
bench-clickhouse *ARGS:
    bash scripts/bench-clickhouse {{ARGS}}
