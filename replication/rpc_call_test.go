package replication

import (
	"bufio"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/kvtest"
)

// TestCallNotSent: a call that cannot reach its node fails with errNotSent
// (the node did nothing; onLeader retries it and ends in ErrNoLeader), and
// a call on a kept connection that the node reset or closed meanwhile is
// sent on a new connection instead of failing (checked before it is sent,
// or, for an idempotent call, after it failed).
func TestCallNotSent(t *testing.T) {
	for _, reset := range []bool{true, false} {
		t.Run(map[bool]string{true: "reset", false: "closed"}[reset], func(t *testing.T) { testCallNotSent(t, reset) })
	}
}

func testCallNotSent(t *testing.T, reset bool) {
	ln := kvtest.Listen(t)
	addr := ln.Addr().String()
	closed := make(chan struct{}, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// One call per connection, then a reset (linger 0) or a
			// close.
			r, w := bufio.NewReader(c), bufio.NewWriter(c)
			if proto, err := r.ReadByte(); err == nil && proto == protoCluster {
				if _, p, err := readFrame(r); err == nil {
					writeFrame(w, statusOK, p)
				}
			}
			if reset {
				c.(*net.TCPConn).SetLinger(0)
			}
			c.Close()
			closed <- struct{}{}
		}
	}()
	var p peers
	defer p.close()
	for i := range 4 {
		// opTerm is idempotent: sent on a kept connection unchecked, and
		// sent again on a new one when the kept one fails.
		op := []byte{opStatus, opTerm}[i%2]
		resp, err := p.call(addr, op, []byte("ping"), 5*time.Second)
		if err != nil || string(resp) != "ping" {
			t.Fatalf("call %d (op %d): %q, %v", i, op, resp, err)
		}
		<-closed
		time.Sleep(10 * time.Millisecond) // the reset or end reaches this side
	}

	ln.Close()
	_, err := p.call(addr, opStatus, nil, time.Second)
	if !errors.Is(err, errNotSent) || errors.Is(err, errSentNoAnswer) {
		t.Fatalf("call to a closed port: %v, want errNotSent", err)
	}
}
