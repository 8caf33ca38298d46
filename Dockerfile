# One image for every service; -target picks which (deploy/compose, deploy/k8s).
# It holds no PostgreSQL server, so single-machine mode (-target=all) needs
# CHAT_DATABASE_URL; without arguments the image runs an edge, which serves
# the page and answers /readyz 503 until the broker in CHAT_KAFKA_BROKERS
# answers.
FROM golang:1.26 AS build
WORKDIR /src
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/chat ./cmd/chat && \
    CGO_ENABLED=0 go build -trimpath -o /out/chatctl ./cmd/chatctl

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/chat /out/chatctl /usr/local/bin/
# Numeric, so that Kubernetes can verify runAsNonRoot (distroless nonroot).
USER 65532:65532
ENV CHAT_HTTP_ADDR=0.0.0.0:8080 CHAT_DATA_DIR=/home/nonroot/data CHAT_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/chat"]
# e.g. docker run -e CHAT_KAFKA_BROKERS=kafka:9092 -e CHAT_JWT_SECRET=… IMAGE
CMD ["-target=edge"]
