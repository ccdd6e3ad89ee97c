# Portcullis container image.
#
#   docker build -t portcullis .
#   docker run --rm -p 8080:8080 -p 9090:9090 portcullis
#
# The image's configuration, /etc/portcullis/gateway.yaml, is
# deploy/container/gateway.yaml: the client listener on 0.0.0.0:8080 and the admin
# listener (/metrics, /healthz, /ready) on 0.0.0.0:9090, so published ports reach them,
# and one upstream, `app`, at http://app:8080, to be replaced with your own. Mount your
# file over it, and check it first:
#
#   docker run --rm -v "$PWD/gateway.yaml:/etc/portcullis/gateway.yaml:ro" portcullis check
#   docker run --rm -p 8080:8080 -p 9090:9090 \
#     -v "$PWD/gateway.yaml:/etc/portcullis/gateway.yaml:ro" portcullis
#
# Listeners must bind 0.0.0.0 (not 127.0.0.1, the container's own loopback), and
# endpoints must be addresses or names the container can reach. The repository's root
# gateway.yaml is the loopback demo (`portcullis demo`) and is not in the image.
# Kubernetes manifests and a systemd unit are in deploy/ (deploy/README.md).

FROM rust:1-bookworm AS builder
WORKDIR /build

# Dependencies first, built against stub sources, so this layer stays cached until
# Cargo.toml or Cargo.lock change. Cargo.toml declares `[[bench]] name = "hot_path"`,
# so benches/hot_path.rs must exist for cargo to load the manifest at all.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/hot_path.rs \
    && cargo build --release --locked \
    && rm -rf src

# The real sources. COPY keeps their modification times, which can be older than the
# stub build's artifacts: touch them so cargo rebuilds the crate itself.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked

FROM debian:bookworm-slim
RUN useradd --system --user-group --uid 10001 --no-create-home \
        --shell /usr/sbin/nologin portcullis
COPY --from=builder /build/target/release/portcullis /usr/local/bin/portcullis
COPY deploy/container/gateway.yaml /etc/portcullis/gateway.yaml
# The default `-c gateway.yaml` resolves here, so `docker run portcullis check` works too.
WORKDIR /etc/portcullis
USER portcullis
EXPOSE 8080 9090
# Exec form: portcullis is PID 1 and receives SIGTERM itself, which starts its graceful
# shutdown (shutdown_timeout: 20s in deploy/container/gateway.yaml); give `docker stop -t`
# more than that (its default is 10s). SIGHUP (`docker kill -s HUP`) reloads the file.
ENTRYPOINT ["portcullis"]
CMD ["run", "-c", "/etc/portcullis/gateway.yaml"]
