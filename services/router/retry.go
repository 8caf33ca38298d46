package router

import (
	"context"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/kafkaio"
)

// retry: see kafkaio.Retry.
func retry(ctx context.Context, initial, maxInterval, maxElapsed time.Duration, op func() error, notify func(err error, wait time.Duration)) error {
	return kafkaio.Retry(ctx, initial, maxInterval, maxElapsed, op, notify)
}

// fetch: see kafkaio.Fetch.
func fetch(ctx context.Context, rd *kafka.Reader, stopped func() bool, notify func(err error, wait time.Duration)) (kafka.Message, error) {
	return kafkaio.Fetch(ctx, rd, stopped, notify)
}
