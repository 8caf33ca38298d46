package router

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// retry runs op until it succeeds, ctx ends or maxElapsed passes (0: no
// limit), waiting between attempts with exponential backoff from initial to
// at most maxInterval, each wait randomized by ±50% so routers that fail
// together do not retry together. notify is called before each wait.
func retry(ctx context.Context, initial, maxInterval, maxElapsed time.Duration, op func() error, notify func(err error, wait time.Duration)) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.Multiplier, b.RandomizationFactor = initial, maxInterval, 2, 0.5
	_, err := backoff.Retry(ctx, func() (struct{}, error) { return struct{}{}, op() },
		backoff.WithBackOff(b), backoff.WithMaxElapsedTime(maxElapsed), backoff.WithNotify(notify))
	return err
}
