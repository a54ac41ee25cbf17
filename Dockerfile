# Build: docker build -t omni-bridge .
# Run:   the image listens on 0.0.0.0, where omni-bridge refuses to start without an API
#        key (exit 2). Create one first, in the same volume (it prints the secret once):
#          docker run --rm -v omni-data:/data omni-bridge keys create --name ops --role admin
#          docker run -p 8080:8080 -v omni-data:/data omni-bridge
#        Only on a trusted network, run open instead:
#          docker run -p 8080:8080 -v omni-data:/data omni-bridge serve --insecure-no-auth
FROM rust:1-bookworm AS build
WORKDIR /src
# Every target Cargo.toml declares must be here, or the manifest does not parse: the
# bins live under src/, and the [[bench]] under benches/ (tests/ is found, not declared).
COPY Cargo.toml Cargo.lock diesel.toml ./
COPY migrations migrations
COPY src src
COPY benches benches
RUN cargo build --release --locked --bin omni-bridge --bin omni-test-mcp \
    && strip target/release/omni-bridge target/release/omni-test-mcp

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin omni \
    && mkdir -p /data && chown omni /data
COPY --from=build /src/target/release/omni-bridge /usr/local/bin/omni-bridge
COPY --from=build /src/target/release/omni-test-mcp /usr/local/bin/omni-test-mcp
USER omni
WORKDIR /data
ENV OMNI_BIND=0.0.0.0:8080 \
    OMNI_DATA_DIR=/data
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--", "omni-bridge"]
CMD ["serve"]
