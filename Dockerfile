# One image for every service; -target picks which (deploy/compose, deploy/k8s).
FROM golang:1.26 AS build
WORKDIR /src
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/chat ./cmd/chat && \
    CGO_ENABLED=0 go build -trimpath -o /out/chatctl ./cmd/chatctl

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/chat /out/chatctl /usr/local/bin/
USER nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/chat"]
CMD ["-target=all", "-http.addr=0.0.0.0:8080", "-data.dir=/home/nonroot/data", "-log.format=json"]
