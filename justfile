# newsflow recipes. On a fresh machine run them through ./dev (it installs nats-server and just).

set shell := ["bash", "-euo", "pipefail", "-c"]

# Test threads: each test starts its own nats-server and processes.
test_threads := env_var_or_default("TEST_THREADS", "3")

default:
    @just --list

# Run the whole system with a demo job against the bundled mock API; reuses ./data (`just demo --fresh` starts clean).
demo *args:
    cargo build --release -p data-streams -p worker -p newsapi-mock
    bash scripts/foreground.sh bash scripts/demo.sh {{args}}

# Start nats-server, the mock NewsAPI, data-streams and a worker in the background (./data; see scripts/up.sh).
up:
    cargo build --release -p data-streams -p worker -p newsapi-mock
    bash scripts/up.sh

# Stop what `just up` started, newest first.
down:
    bash scripts/down.sh

# Follow the logs of what `just up` started.
logs:
    tail -n 20 -F "${UP_DATA_DIR:-./data}"/logs/*.log

# Start a 3-node nats-server cluster, a worker on each node and two data-streams in the background (./data-cluster; see scripts/cluster-up.sh).
cluster-up:
    cargo build --release -p data-streams -p worker -p newsapi-mock
    bash scripts/cluster-up.sh

# Stop what `just cluster-up` started, newest first (data kept in ./data-cluster).
cluster-down:
    UP_DATA_DIR="${CLUSTER_DATA_DIR:-./data-cluster}" bash scripts/down.sh

# Jobs, workers, consumer lag and budget on one screen.
status:
    bash scripts/status.sh

# Print articles and batch markers as they arrive on NATS (NATS_URL, default nats://127.0.0.1:4222).
watch subject="news.>":
    cargo build --release -q -p newsflow-watch
    bash scripts/foreground.sh target/release/newsflow-watch '{{subject}}'

# Run every test: unit tests, black-box tests against real nats-server and processes.
test:
    cargo build --workspace --bins
    cargo test --workspace -- --test-threads={{test_threads}}

# What CI runs: formatting, lints, then every test.
ci:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    just test

# Lints.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmark against ceilings measured in the same run (`just bench --quick` for a small run).
bench *args:
    cargo build --release --bins
    cargo run --release -q -p newsflow-bench -- {{args}}

# Instructions per article ingested and per request read, counted by callgrind (needs valgrind).
profile:
    just bench --only profile --keep

# Repeat the kill cycles of the fault suite many times and print the figures.
soak cycles="20":
    cargo build --workspace --bins
    SOAK_CYCLES={{cycles}} cargo test -p newsflow-tests --test soak -- --ignored --nocapture

# Jobs every second until 2,000 batches: RSS, file descriptors and threads must stay flat.
soak-long batches="2000":
    cargo build --workspace --bins
    SOAK_LONG_BATCHES={{batches}} cargo test -p newsflow-tests --test soak_long -- --ignored --nocapture

# Property-based fuzzing of the parsers of untrusted bytes, for a bounded time.
fuzz cases="200000":
    PROPTEST_CASES={{cases}} cargo test --release -p newsflow-core -p newsflow-nats -p data-streams -- --test-threads=2 never_panic
