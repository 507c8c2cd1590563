# syntax=docker/dockerfile:1
# The one `meridian` binary (every role: producer, manager, commander) built
# the way the README says, copied alone into a small runtime image.
#
#   docker build -t meridian .
#   docker run --rm meridian manager --role frontend --redis redis://redis:6379/
#
# tests/deployment.rs keeps this file in step with the README, the workspace
# members and the toolchain version.

# At least the workspace's rust-version (Cargo.toml).
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# Every workspace member, the lock file and nothing else (.dockerignore keeps
# target/ and the rest out of the context).
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY proto proto
COPY config config
COPY store store
COPY quic quic
COPY sim sim
COPY producer producer
COPY manager manager
COPY commander commander
COPY testkit testkit
COPY bench bench
COPY src src
# Registry and target directory cached between builds; the binary is copied
# out of the cache mount in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release \
    && cp target/release/meridian /usr/local/bin/meridian

# The control-room dashboard (web/ -> dist), as scripts/build-dashboard builds it.
FROM node:20-bookworm-slim AS dashboard
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY web/index.html web/vite.config.ts web/tsconfig.json ./
COPY web/src src
RUN npm run build

FROM debian:bookworm-slim AS runtime
# coreutils' sleep serves the frontend's preStop pause (deploy/base/frontend.yaml).
COPY --from=build /usr/local/bin/meridian /usr/local/bin/meridian
# The dashboard the frontend serves at / (frontend.dashboard_dir).
COPY --from=dashboard /web/dist /usr/share/meridian/dashboard
# The example configurations, as a starting point at a known path.
COPY config/examples /etc/meridian/examples
USER 10001:10001
# QUIC (ingest), HTTP/WebSocket (frontend), commander, metrics/health.
EXPOSE 7400/udp 8080/tcp 8081/tcp 9090/tcp
ENTRYPOINT ["meridian"]
CMD ["--help"]
