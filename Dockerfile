# syntax=docker/dockerfile:1
# Build: docker build -t meridian .
# Run the dev stack: docker run --rm -it --network host meridian
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/meridian ./cmd/meridian \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/meridian /usr/local/bin/meridian
COPY --from=build --chown=nonroot:nonroot /out/data /var/lib/meridian
WORKDIR /var/lib/meridian
USER nonroot:nonroot
# DNS 5353 (udp+tcp), PoPs 8080, admin 9090, NATS 4222; the dev stack binds loopback,
# so run it with --network host, or give it a config that listens on 0.0.0.0.
EXPOSE 5353/udp 5353/tcp 8080 9090 4222
ENTRYPOINT ["/usr/local/bin/meridian"]
CMD ["dev"]
