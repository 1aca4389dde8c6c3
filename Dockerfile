# graph-mailer: one static-ish binary on a slim Debian, run as a non-root user.
# Build:  docker build -t graph-mailer:0.1.0 .
# Run:    docker run -p 50051:50051 -p 8080:8080 -v graph-mailer-data:/data graph-mailer:0.1.0

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# protoc comes from the protoc-bin-vendored crate: nothing to install.
COPY . .
RUN cargo build --release --locked --bin graph-mailer \
    && strip target/release/graph-mailer

FROM debian:bookworm-slim
# ca-certificates: TLS to login.microsoftonline.com and graph.microsoft.com.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 graph-mailer \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin graph-mailer \
    && mkdir -p /data \
    && chown graph-mailer:graph-mailer /data
COPY --from=builder /src/target/release/graph-mailer /usr/local/bin/graph-mailer
# Only /data is written (SQLite store, generated key, sandbox .eml files): the root file
# system can be mounted read-only.
ENV GRAPH_MAILER_DATA_DIR=/data \
    GRAPH_MAILER_GRPC_ADDR=0.0.0.0:50051 \
    GRAPH_MAILER_HTTP_ADDR=0.0.0.0:8080 \
    GRAPH_MAILER_LOG_FORMAT=json
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001
EXPOSE 50051 8080
# The service drains in-flight calls on SIGTERM and exits 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["graph-mailer", "healthcheck"]
ENTRYPOINT ["graph-mailer"]
CMD ["serve"]
