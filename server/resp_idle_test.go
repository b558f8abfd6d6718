package server_test

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/kvtest"
	"github.com/kvdstore/kvd/server"
)

// TestRESPIdleTimeout checks CONFIG SET timeout: a connection silent for
// longer is closed, one that keeps talking is not, and 0 turns it off.
func TestRESPIdleTimeout(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		admin := dialRaw(t, ts.respAddr)
		if got := admin.do("CONFIG", "GET", "timeout"); got != array(bulk("timeout"), bulk("0")) {
			t.Fatalf("CONFIG GET timeout = %q, want 0 by default", got)
		}
		if got := admin.do("CONFIG", "SET", "timeout", "-1"); !strings.HasPrefix(got, "-ERR invalid timeout") {
			t.Fatalf("CONFIG SET timeout -1 = %q", got)
		}
		if got := admin.do("CONFIG", "SET", "timeout", "1"); got != ok {
			t.Fatalf("CONFIG SET timeout 1 = %q", got)
		}
		idle := dialRaw(t, ts.respAddr)
		half := dialRaw(t, ts.respAddr)
		half.sendRaw("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\nabc") // then silence
		busy := dialRaw(t, ts.respAddr)
		start := time.Now()
		for time.Since(start) < 2500*time.Millisecond {
			if got := busy.do("PING"); got != "+PONG\r\n" {
				t.Fatalf("PING on a busy connection = %q", got)
			}
			time.Sleep(200 * time.Millisecond) // the client's pace, not a synchronization
		}
		idle.expectClosed()
		half.expectClosed()
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("idle connections closed after %v, want about 1-2s", d)
		}
		admin.expectClosed() // silent too
		admin = dialRaw(t, ts.respAddr)
		if got := admin.do("CONFIG", "SET", "timeout", "0"); got != ok {
			t.Fatalf("CONFIG SET timeout 0 = %q", got)
		}
	})
}

var pendingRE = regexp.MustCompile(`pending_request_bytes:(\d+)`)

func pendingBytes(t *testing.T, c *rawConn) int {
	t.Helper()
	m := pendingRE.FindStringSubmatch(c.do("INFO", "clients"))
	if m == nil {
		t.Fatal("INFO has no pending_request_bytes")
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestRESPPendingBudget checks the budget of incomplete requests: while
// one client holds most of it with a value half sent, another whose value
// would pass it is refused and closed; once the first completes, the
// budget is free again.
func TestRESPPendingBudget(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model, cfg: server.Config{RESPPendingBytes: 4 << 20}})
		admin := dialRaw(t, ts.respAddr)
		value := strings.Repeat("v", 3<<20)
		head := fmt.Sprintf("*3\r\n$3\r\nSET\r\n$1\r\na\r\n$%d\r\n", len(value))
		a := dialRaw(t, ts.respAddr)
		a.sendRaw(head + value[:len(value)-10])
		kvtest.Eventually(t, 10*time.Second, "the half-sent value to be buffered", func() bool {
			return pendingBytes(t, admin) >= 2<<20
		})

		b := dialRaw(t, ts.respAddr)
		b.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		b.nc.Write([]byte(strings.Replace(head, "$1\r\na", "$1\r\nb", 1) + value + "\r\n")) // may fail once refused
		if got := b.reply(); !strings.HasPrefix(got, "-ERR incomplete requests hold too much memory") {
			t.Fatalf("a value past the budget: %q", got)
		}
		b.expectClosed()

		a.sendRaw(value[len(value)-10:] + "\r\n")
		if got := a.reply(); got != ok {
			t.Fatalf("completing the half-sent value: %q", got)
		}
		kvtest.Eventually(t, 10*time.Second, "the budget to be given back", func() bool {
			return pendingBytes(t, admin) == 0
		})
		c := dialRaw(t, ts.respAddr)
		c.sendRaw(strings.Replace(head, "$1\r\na", "$1\r\nc", 1) + value + "\r\n")
		if got := c.reply(); got != ok {
			t.Fatalf("a value within the budget: %q", got)
		}
	})
}
