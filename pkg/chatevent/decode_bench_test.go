package chatevent

import "testing"

// The edge decodes every client frame and every log record it serves;
// history decodes every record.

var benchRecord = []byte(`{"id":"01970c3e-8a4b-7c1d-9e2f-3a4b5c6d7e8f","type":"chat","room":"r123","username":"p42","content":"1764532800000000000:3:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","timestamp":"2026-11-30T20:00:00.123Z","client_id":"1764532800000000000:3:17"}`)

var benchFrame = []byte(`{"type":"chat","room":"r123","content":"1764532800000000000:3:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","client_id":"1764532800000000000:3:17"}`)

func BenchmarkDecode(b *testing.B) {
	for b.Loop() {
		if _, err := Decode(benchRecord); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeFrame(b *testing.B) {
	for b.Loop() {
		if _, err := DecodeFrame(benchFrame, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}
