# syntax=docker/dockerfile:1

# Build stage. cgo is on: schemas/xsd binds libxml2.
FROM golang:1.26-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libxml2-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that a source change doesn't download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=1 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/iotgate ./cmd/iotgate

# Runtime stage: the binary, libxml2 and CA certificates, run as a
# non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libxml2 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 iotgate \
 && useradd --system --uid 10001 --gid iotgate --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin iotgate
COPY --from=build /out/iotgate /usr/local/bin/iotgate
USER 10001:10001
# Inside a container the API must listen beyond loopback to be published.
ENV IOTGATE_HTTP_ADDR=0.0.0.0:8080 \
    IOTGATE_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/iotgate"]
CMD ["serve"]
