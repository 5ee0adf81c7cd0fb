# dockns container image for users with a registry: build in the official Rust image, run on a
# distroless base (glibc, no shell, no package manager) as the non-root `nonroot` user.
#
#   docker build -t dockns:local .
#   docker run -d --restart unless-stopped --network host \
#       -v $PWD/config/demo.toml:/etc/dockns/dockns.toml:ro dockns:local
#   dig @127.0.0.1 -p 5353 api
#
# The image reads /etc/dockns/dockns.toml. Its HEALTHCHECK (`dockns health`, no shell needed)
# reads the admin API's /readyz when the configuration has [admin], so a dockns that cannot use
# the Docker socket turns the container `unhealthy` within about 6 s.
#
# Without a registry (air-gapped hosts, CI here), contrib/image/build-offline.sh builds an
# equivalent image from a locally built binary.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
# Without debug info and symbols: the image only needs to run.
RUN CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --bin dockns

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/dockns /usr/local/bin/dockns
COPY config/demo.toml /etc/dockns/demo.toml
USER nonroot:nonroot
HEALTHCHECK --interval=3s --timeout=2s --retries=2 CMD ["/usr/local/bin/dockns", "health"]
# Port 53 inside the container: Docker lets unprivileged users bind it (ip_unprivileged_port_start=0).
EXPOSE 53/udp 53/tcp 9153/tcp
ENTRYPOINT ["/usr/local/bin/dockns"]
CMD ["serve", "--config", "/etc/dockns/dockns.toml"]
