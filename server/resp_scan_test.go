package server_test

import (
	"strings"
	"testing"
)

// scanCursor returns the cursor of a raw SCAN reply.
func scanCursor(t *testing.T, reply string) string {
	t.Helper()
	// *2\r\n$N\r\n<cursor>\r\n*...
	parts := strings.SplitN(reply, "\r\n", 4)
	if len(parts) < 4 || parts[0] != "*2" {
		t.Fatalf("bad SCAN reply %q", reply)
	}
	return parts[2]
}

// TestScanCursorsPerConnection checks that a client opening more scans
// than the server keeps cursors for evicts only its own: another client's
// cursor, and a cursor continued on another connection, still work.
func TestScanCursorsPerConnection(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		a := dialRaw(t, ts.respAddr)
		for _, k := range []string{"k1", "k2", "k3"} {
			if got := a.do("SET", k, "v"); got != ok {
				t.Fatalf("SET: %q", got)
			}
		}
		cursorA := scanCursor(t, a.do("SCAN", "0", "COUNT", "1"))

		b := dialRaw(t, ts.respAddr)
		const n = 10001
		var pipeline strings.Builder
		for range n {
			pipeline.WriteString(encode("SCAN", "0", "COUNT", "1"))
		}
		b.sendRaw(pipeline.String())
		var first string
		for i := range n {
			c := scanCursor(t, b.reply())
			if i == 0 {
				first = c
			}
		}
		if got := b.do("SCAN", first, "COUNT", "1"); !strings.HasPrefix(got, "-ERR invalid or expired cursor") {
			t.Errorf("b's oldest cursor, after %d more: %q, want it evicted", n, got)
		}

		// a's cursor survives, on a and on another connection.
		other := dialRaw(t, ts.respAddr)
		for _, c := range []*rawConn{a, other} {
			if got := c.do("SCAN", cursorA, "COUNT", "1"); !strings.HasSuffix(got, array(bulk("k2"))) {
				t.Errorf("a's cursor after %d scans of b: %q, want k2 next", n, got)
			}
		}
	})
}
