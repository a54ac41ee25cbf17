# Two runtime targets:
#   slim (the default, the last stage): the gateway alone; upstreams over HTTP, or stdio
#        servers that are plain binaries.
#   full: the gateway with Node.js (npm, npx) and Python with uv (uvx), so stdio servers
#        declared with `command = "npx"` or `command = "uvx"` run inside the container.
#        Their downloads go to /cache (npm's cache, uv's cache, tools and Pythons), owned
#        by the gateway's user; mount a volume there to keep them across containers.
#
# Build: docker build -t omni-bridge .                            # slim
#        docker build --target full -t omni-bridge:full .         # full
# Run:   the image listens on 0.0.0.0, where omni-bridge refuses to start without an API
#        key (exit 2). Create one first, in the same volume (it prints the secret once):
#          docker run --rm -v omni-data:/data omni-bridge keys create --name ops --role admin
#          docker run -p 8080:8080 -v omni-data:/data omni-bridge
#        Only on a trusted network, run open instead:
#          docker run -p 8080:8080 -v omni-data:/data omni-bridge serve --insecure-no-auth
#        stdio servers come from a config file (mount it, point OMNI_CONFIG at it):
#          docker run -p 8080:8080 -v omni-data:/data -v omni-cache:/cache \
#            -v "$PWD/omni.toml:/etc/omni-bridge.toml:ro" -e OMNI_CONFIG=/etc/omni-bridge.toml \
#            omni-bridge:full
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

# The official Node.js image (a current LTS on the same Debian as the slim target):
# Debian's own nodejs is older than what many MCP servers on npm now require.
FROM node:24-bookworm-slim AS full
# Debian's stable archive keeps only the current build of each package, so pinned
# versions would break the build at its next security update; the base image pins the
# release. uv comes from PyPI, pinned, in a venv of its own (Debian has no uv package).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check uv==0.13.9 \
    && ln -s /opt/uv/bin/uv /opt/uv/bin/uvx /usr/local/bin/ \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin omni \
    && mkdir -p /data /cache && chown omni /data /cache
COPY --from=build /src/target/release/omni-bridge /usr/local/bin/omni-bridge
COPY --from=build /src/target/release/omni-test-mcp /usr/local/bin/omni-test-mcp
USER 10001
WORKDIR /data
# stdio servers inherit these (the gateway removes only its own OMNI_* variables):
# every cache, tool and interpreter download lands under /cache, and nothing needs the
# read-only parts of the image. npx without a terminal installs without asking. Node
# adds the system's CA bundle to its own, and uv reads the system's store instead of
# its built-in one, so a derived image that adds a company CA (update-ca-certificates)
# reaches a registry mirror or proxy that presents it.
ENV OMNI_BIND=0.0.0.0:8080 \
    OMNI_DATA_DIR=/data \
    HOME=/data \
    XDG_CACHE_HOME=/cache \
    NPM_CONFIG_CACHE=/cache/npm \
    NPM_CONFIG_UPDATE_NOTIFIER=false \
    NPM_CONFIG_FUND=false \
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    UV_SYSTEM_CERTS=1 \
    UV_CACHE_DIR=/cache/uv \
    UV_TOOL_DIR=/cache/uv-tools \
    UV_PYTHON_INSTALL_DIR=/cache/uv-python \
    UV_NO_PROGRESS=1
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--", "omni-bridge"]
CMD ["serve"]

FROM debian:bookworm-slim AS slim
# As in the full target: Debian's archive moves on, the base image pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin omni \
    && mkdir -p /data && chown omni /data
COPY --from=build /src/target/release/omni-bridge /usr/local/bin/omni-bridge
COPY --from=build /src/target/release/omni-test-mcp /usr/local/bin/omni-test-mcp
USER 10001
WORKDIR /data
ENV OMNI_BIND=0.0.0.0:8080 \
    OMNI_DATA_DIR=/data
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--", "omni-bridge"]
CMD ["serve"]
