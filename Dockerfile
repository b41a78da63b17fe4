# syntax=docker/dockerfile:1
# The eventline server image: the `eventline` binary on distroless cc (glibc, CA
# certificates, no shell), running as the non-root user 65532. Works with a read-only root
# filesystem: the only writable path it needs is data.dir (embedded SQLite), which is a
# volume; with PostgreSQL nothing is written at all.
#
#   docker build -t registry.example.com/eventline:0.1.0 .
#
# The tag is the workspace version (Cargo.toml), the chart's appVersion.

ARG RUST_VERSION=1.94

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# The full (not slim) image: jemalloc builds with make, SQLite and zstd with cc; protoc
# comes from the protoc-bin-vendored crate, so nothing is installed from apt.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY proto ./proto
COPY migrations ./migrations
# The web console's committed bundle, embedded by the server (no npm in the image build).
COPY console/dist ./console/dist
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p eventline \
    && install -D -m 0755 target/release/eventline /out/usr/local/bin/eventline \
    && install -d -m 0750 /out/var/lib/eventline

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="eventline" \
      org.opencontainers.image.description="Self-hosted event tracking: gRPC and HTTP/JSON ingest into PostgreSQL" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/eventline"
COPY --from=build /out/usr/local/bin/eventline /usr/local/bin/eventline
COPY --from=build --chown=65532:65532 /out/var/lib/eventline /var/lib/eventline
ENV EVENTLINE_DATA_DIR=/var/lib/eventline
VOLUME ["/var/lib/eventline"]
USER 65532:65532
# gRPC, REST/JSON, metrics
EXPOSE 50051 8080 9090
ENTRYPOINT ["eventline"]
CMD ["serve"]
