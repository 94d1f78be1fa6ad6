# Multi-stage build of the one l4lb binary (controller and dataplane modes).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY controllers/ controllers/
COPY dataplane/ dataplane/
COPY internal/ internal/
COPY *.go ./
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/l4lb .

# Static binary on distroless: no shell, no package manager. The controller runs as the
# non-root user; the dataplane DaemonSet grants only NET_ADMIN, NET_BIND_SERVICE and NET_RAW.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/l4lb /l4lb
USER 65532:65532
ENTRYPOINT ["/l4lb"]
