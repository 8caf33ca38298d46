package history

import (
	"context"
	"strconv"
	"sync"

	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
)

// eventWriter appends events (edits and deletes) to one topic durably and
// reports the log position each was given.
type eventWriter struct {
	w       *kafka.Writer
	mu      sync.Mutex
	pending map[string]string // record value → its position once written ("" until then)
}

func newEventWriter(k kafkaio.Config, topic string) *eventWriter {
	ew := &eventWriter{w: k.NewWriter(topic), pending: map[string]string{}}
	// kafka-go reports the offsets of a produced batch only to Completion,
	// which runs before WriteMessages returns; values are unique (each
	// holds its event's id and timestamp) and identify the records.
	ew.w.Completion = func(msgs []kafka.Message, err error) {
		if err != nil {
			return
		}
		ew.mu.Lock()
		defer ew.mu.Unlock()
		for _, m := range msgs {
			if _, ok := ew.pending[string(m.Value)]; ok {
				ew.pending[string(m.Value)] = chatevent.Pos{Partition: m.Partition, Offset: m.Offset}.String()
			}
		}
	}
	return ew
}

var schemaHeader = []byte(strconv.Itoa(chatevent.SchemaVersion))

// write appends ev with key and sets ev.Pos to its position.
func (ew *eventWriter) write(ctx context.Context, key string, ev *chatevent.Event) error {
	value, err := ev.Encode()
	if err != nil {
		return err
	}
	v := string(value)
	ew.mu.Lock()
	ew.pending[v] = ""
	ew.mu.Unlock()
	defer func() {
		ew.mu.Lock()
		delete(ew.pending, v)
		ew.mu.Unlock()
	}()
	err = ew.w.WriteMessages(ctx, kafka.Message{Key: []byte(key), Value: value,
		Headers: []kafka.Header{{Key: chatevent.HeaderSchema, Value: schemaHeader}}})
	if err != nil {
		return err
	}
	ew.mu.Lock()
	ev.Pos = ew.pending[v]
	ew.mu.Unlock()
	return nil
}

// Close closes the writer.
func (ew *eventWriter) Close() error { return ew.w.Close() }
