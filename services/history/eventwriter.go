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
	seq     uint64
	pending map[string]string // write id → its position once written ("" until then)
}

// headerWrite carries a record's write id, so its position finds the call
// that wrote it even when two records are byte for byte the same (an edit
// submitted twice). Readers ignore it.
const headerWrite = "chat-write"

func newEventWriter(k kafkaio.Config, topic string) *eventWriter {
	ew := &eventWriter{w: k.NewWriter(topic), pending: map[string]string{}}
	// kafka-go reports the offsets of a produced batch only to Completion,
	// which runs before WriteMessages returns; the write id header
	// identifies each record's call.
	ew.w.Completion = func(msgs []kafka.Message, err error) {
		if err != nil {
			return
		}
		ew.mu.Lock()
		defer ew.mu.Unlock()
		for _, m := range msgs {
			for _, h := range m.Headers {
				if h.Key == headerWrite {
					if _, ok := ew.pending[string(h.Value)]; ok {
						ew.pending[string(h.Value)] = chatevent.Pos{Partition: m.Partition, Offset: m.Offset}.String()
					}
				}
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
	ew.mu.Lock()
	ew.seq++
	v := strconv.FormatUint(ew.seq, 10)
	ew.pending[v] = ""
	ew.mu.Unlock()
	defer func() {
		ew.mu.Lock()
		delete(ew.pending, v)
		ew.mu.Unlock()
	}()
	err = ew.w.WriteMessages(ctx, kafka.Message{Key: []byte(key), Value: value,
		Headers: []kafka.Header{{Key: chatevent.HeaderSchema, Value: schemaHeader}, {Key: headerWrite, Value: []byte(v)}}})
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
