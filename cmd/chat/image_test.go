package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chatsys/chat/pkg/embedkafka"
)

// image is what the Dockerfile's final stage says about running chat.
type image struct {
	env        map[string]string
	entrypoint []string
	cmd        []string
}

func readImage(t *testing.T) image {
	t.Helper()
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var img image
	for _, line := range strings.Split(string(b), "\n") {
		kw, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch strings.ToUpper(kw) {
		case "FROM": // a new stage: only the last one counts
			img = image{env: map[string]string{}}
		case "ENV":
			for _, kv := range strings.Fields(rest) {
				k, v, _ := strings.Cut(kv, "=")
				img.env[k] = v
			}
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &img.entrypoint); err != nil {
				t.Fatalf("ENTRYPOINT %s: %v", rest, err)
			}
		case "CMD":
			if err := json.Unmarshal([]byte(rest), &img.cmd); err != nil {
				t.Fatalf("CMD %s: %v", rest, err)
			}
		}
	}
	if len(img.entrypoint) != 1 || !strings.HasSuffix(img.entrypoint[0], "/chat") {
		t.Fatalf("ENTRYPOINT %v, want chat", img.entrypoint)
	}
	return img
}

// TestImageDefaultCommand: the image's default command is a service
// target that needs nothing the image lacks (it has no PostgreSQL server):
// an edge, which with the image's environment, CHAT_KAFKA_BROKERS and
// CHAT_JWT_SECRET (as README's docker run gives them) serves and gets ready.
func TestImageDefaultCommand(t *testing.T) {
	img := readImage(t)
	if len(img.cmd) != 1 || img.cmd[0] != "-target=edge" {
		t.Fatalf("CMD %v, want [-target=edge] (a service target that runs in the image)", img.cmd)
	}
	for k, v := range img.env {
		t.Setenv(k, v)
	}
	b := embedkafka.New(embedkafka.Config{Addr: "127.0.0.1:0"}, nil)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Stop(context.Background())
	t.Setenv("CHAT_KAFKA_BROKERS", b.Addr())
	t.Setenv("CHAT_JWT_SECRET", "image-test-secret-0123456789")
	t.Setenv("CHAT_DATA_DIR", t.TempDir()) // the image's is /home/nonroot/data
	addr := freeAddr(t)                    // the image's 0.0.0.0:8080 may be taken here
	t.Setenv("CHAT_HTTP_ADDR", addr)
	startRun(t, img.cmd...)
	waitFor(t, 30*time.Second, "the edge ready", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}
