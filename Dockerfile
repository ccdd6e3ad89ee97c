# Portcullis container image.
#
#   docker build -t portcullis .
#   docker run --rm -p 8080:8080 -p 9090:9090 \
#     -v "$PWD/my-gateway.yaml:/etc/portcullis/gateway.yaml:ro" portcullis
#
# The repository's gateway.yaml is copied in only as an example: it binds 127.0.0.1 and
# routes to the demo services on loopback. Inside a container, listeners and the admin
# listener must bind 0.0.0.0 (e.g. `address: 0.0.0.0:8080`) or published ports reach
# nothing, and endpoints must be addresses the container can reach. Mount your own
# gateway.yaml over /etc/portcullis/gateway.yaml, and check it first with
#   docker run --rm -v "$PWD/my-gateway.yaml:/etc/portcullis/gateway.yaml:ro" portcullis check

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
COPY gateway.yaml /etc/portcullis/gateway.yaml
# The default `-c gateway.yaml` resolves here, so `docker run portcullis check` works too.
WORKDIR /etc/portcullis
USER portcullis
EXPOSE 8080 9090
# Exec form: portcullis is PID 1 and receives SIGTERM itself, which starts its graceful
# shutdown (see shutdown_timeout); give `docker stop -t` at least that long.
ENTRYPOINT ["portcullis"]
CMD ["run", "-c", "/etc/portcullis/gateway.yaml"]
