package client_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/internal/kvtest"
)

// TestSetRedisLogger: go-redis's line about a failed dial goes to the
// logger given, and nowhere once it is nil. The logger is process-wide:
// the test leaves it discarding, which keeps the other tests' output
// clean too.
func TestSetRedisLogger(t *testing.T) {
	ln := kvtest.Listen(t)
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now

	var buf bytes.Buffer
	client.SetRedisLogger(slog.New(slog.NewTextHandler(&buf, nil)))
	defer client.SetRedisLogger(nil)
	if _, err := client.Dial(t.Context(), addr, client.Options{}); err == nil {
		t.Fatal("dial of a closed port succeeded")
	}
	if got := buf.String(); !strings.Contains(got, "level=WARN msg=go-redis") || !strings.Contains(got, "failed to dial") {
		t.Errorf("logged %q, want go-redis's dial failure", got)
	}

	client.SetRedisLogger(nil)
	buf.Reset()
	if _, err := client.Dial(t.Context(), addr, client.Options{}); err == nil {
		t.Fatal("dial of a closed port succeeded")
	}
	if buf.Len() != 0 {
		t.Errorf("logged %q after SetRedisLogger(nil)", buf.String())
	}
}
