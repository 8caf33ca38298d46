package kafkaio

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/segmentio/kafka-go"
)

// Retry runs op until it succeeds, ctx ends or maxElapsed passes (0: no
// limit), waiting between attempts with exponential backoff from initial to
// at most maxInterval, each wait randomized by ±50% so that processes that
// fail together do not retry together. notify is called before each wait.
// An op error wrapped with backoff.Permanent ends the retries.
func Retry(ctx context.Context, initial, maxInterval, maxElapsed time.Duration, op func() error, notify func(err error, wait time.Duration)) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.Multiplier, b.RandomizationFactor = initial, maxInterval, 2, 0.5
	_, err := backoff.Retry(ctx, func() (struct{}, error) { return struct{}{}, op() },
		backoff.WithBackOff(b), backoff.WithMaxElapsedTime(maxElapsed), backoff.WithNotify(notify))
	return err
}

// Fetch returns the next message of a consumer-group reader, riding out
// errors: the reader keeps retrying underneath, but queues its partition
// readers' errors (up to its queue capacity) while the broker is away, so
// queued errors are drained at once and only errors that keep coming are
// waited out, with backoff from 100ms to 2s. It fails only when ctx ends or
// stopped reports true (the reader was closed).
func Fetch(ctx context.Context, rd *kafka.Reader, stopped func() bool, notify func(err error, wait time.Duration)) (kafka.Message, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.Multiplier, b.RandomizationFactor = 100*time.Millisecond, 2*time.Second, 2, 0.5
	return backoff.Retry(ctx, func() (kafka.Message, error) {
		m, err := rd.FetchMessage(ctx)
		for drained := 0; err != nil && drained < 10000; drained++ {
			if ctx.Err() != nil || stopped() {
				return m, backoff.Permanent(err)
			}
			dctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
			var next error
			m, next = rd.FetchMessage(dctx)
			cancel()
			if errors.Is(next, context.DeadlineExceeded) && ctx.Err() == nil {
				break // nothing queued: wait before asking again
			}
			err = next
		}
		return m, err
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(0), backoff.WithNotify(notify))
}
