# Multi-stage build: compile in the Rust image, run on a slim Debian with only CA certificates.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin gameye-bridge --bin gameye-emulator

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/gameye-bridge /usr/local/bin/gameye-bridge
COPY --from=build /src/target/release/gameye-emulator /usr/local/bin/gameye-emulator
# No root inside the container.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["gameye-bridge"]
CMD ["serve"]
