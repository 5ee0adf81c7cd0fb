# dockns container image for users with a registry: build in the official Rust image, run on a
# distroless base (glibc, no shell, no package manager) as the non-root `nonroot` user.
#
#   docker build -t dockns .
#   docker run --rm -p 5353:53/udp -v $PWD/config/demo.toml:/etc/dockns/dockns.toml:ro dockns
#
# Without a registry (air-gapped hosts, CI here), contrib/image/build-offline.sh builds an
# equivalent image from a locally built binary.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin dockns \
 && strip target/release/dockns

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/dockns /usr/local/bin/dockns
COPY config/demo.toml /etc/dockns/demo.toml
USER nonroot:nonroot
# Port 53 inside the container: Docker lets unprivileged users bind it (ip_unprivileged_port_start=0).
EXPOSE 53/udp 53/tcp 9153/tcp
ENTRYPOINT ["/usr/local/bin/dockns"]
CMD ["serve", "--config", "/etc/dockns/dockns.toml"]
