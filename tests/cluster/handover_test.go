package cluster

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLeaderHandsOverOnShutdown: SIGTERM to the leader under writes hands
// its leadership to another node before it stops (its log says so and a
// new leader is at the next term), it exits 0, and no acknowledged write
// is lost. Without the handover the followers would elect a leader only
// after their election timeout, and the log line would be missing.
func TestLeaderHandsOverOnShutdown(t *testing.T) {
	c := newCluster(t, "sync")
	h := newHistory()
	stop := make(chan struct{})
	wg := c.writers(4, h, stop)
	time.Sleep(500 * time.Millisecond)
	l := c.leader()
	m, err := info(t.Context(), c.client(l))
	if err != nil {
		t.Fatal(err)
	}
	term, _ := strconv.ParseUint(m["raft_term"], 10, 64)
	if err := l.p.Stop(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Fatalf("the leader's SIGTERM: %v\n%s", err, l.p.Log())
	}
	if !strings.Contains(l.p.Log(), "leadership transferred before shutdown") {
		t.Fatalf("the stopped leader's log says nothing of a handover:\n%s", l.p.Log())
	}
	nl := c.leader()
	if nl == l {
		t.Fatal("the stopped node is still the leader")
	}
	m, err = info(t.Context(), c.client(nl))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := strconv.ParseUint(m["raft_term"], 10, 64); got <= term {
		t.Fatalf("new leader %s at term %d, the old one was at %d", nl.name, got, term)
	}
	time.Sleep(300 * time.Millisecond) // writes go on under the new leader
	close(stop)
	wg.Wait()
	if len(h.acked) == 0 {
		t.Fatalf("no write acknowledged: %v", h.errs)
	}
	c.start(l)
	c.checkAcked(h)
	t.Logf("leadership handed from %s to %s (term %d to %s); %d writes acknowledged, %d of unknown outcome %v",
		l.name, nl.name, term, m["raft_term"], len(h.acked), h.unknown, h.errs)
}
