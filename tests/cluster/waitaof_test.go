package cluster

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/kvtest"
)

// TestWaitAOF: on a cluster of three, WAITAOF 1 1 answers [1, 1] on the
// leader and on a follower: this node's log and one other voter's (a
// quorum with it) have fsynced the connection's last write, an async one.
func TestWaitAOF(t *testing.T) {
	c := newCluster(t, "async")
	ctx := t.Context()
	for _, n := range c.nodes {
		conn := c.client(n).Conn()
		// A young cluster on a loaded machine may still change leaders:
		// a write whose outcome is unknown is written again (SET is
		// idempotent), so that WAITAOF asks about a known write.
		var err error
		for try := 0; try < 20; try++ {
			if err = conn.Set(ctx, "k-"+n.name, "v", 0).Err(); err == nil ||
				!strings.HasPrefix(err.Error(), "UNKNOWN") && !strings.HasPrefix(err.Error(), "CLUSTERDOWN") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := conn.Do(ctx, "WAITAOF", 1, 1, 5000).Int64Slice()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0] != 1 || got[1] != 1 {
			t.Fatalf("WAITAOF 1 1 5000 on %s after an async write: %v, want [1 1]", n.name, got)
		}
		// Three replicas are more than a cluster of three has besides
		// this node: the answer says how many it could confirm.
		got, err = conn.Do(ctx, "WAITAOF", 0, 3, 200).Int64Slice()
		if err != nil || len(got) != 2 || got[1] != 1 {
			t.Fatalf("WAITAOF 0 3 200 on %s: %v, %v; want one replica confirmed", n.name, got, err)
		}
		conn.Close()
	}
}

// TestClusterMetrics: /metrics shows each node's Raft figures, one leader
// among them.
func TestClusterMetrics(t *testing.T) {
	c := newCluster(t, "sync")
	l := c.leader()
	for _, n := range c.nodes {
		leader := `kvd_raft_state{state="leader"} 0`
		if n == l {
			leader = `kvd_raft_state{state="leader"} 1`
		}
		// A node that joined a moment ago learns the configuration from
		// the leader's next entries: wait for it.
		var body []byte
		var missing string
		ok := kvtest.WaitFor(20*time.Second, kvtest.PollInterval, func() bool {
			resp, err := http.Get("http://" + n.p.HTTPAddr + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, want := range []string{leader, `kvd_raft_members{suffrage="voter"} 3`, "kvd_raft_term ", "kvd_raft_commit_index ", "kvd_raft_diverged 0",
				"kvd_raft_state_checks_total ", "kvd_raft_state_check_mismatches_total 0"} {
				if !strings.Contains(string(body), want) {
					missing = want
					return false
				}
			}
			return true
		})
		if !ok {
			t.Fatalf("%s /metrics lacks %q:\n%s", n.name, missing, body)
		}
	}
}

// TestRedirect: with CLIENT REDIRECT ON a write sent to a follower gets
// -MOVED with the leader's RESP address and is not executed; over HTTP,
// ?redirect=true gets a 307 to the leader's HTTP address, which curl-like
// clients follow with the same method and body.
func TestRedirect(t *testing.T) {
	c := newCluster(t, "sync")
	ctx := t.Context()
	l := c.leader()
	f := c.others(l)[0]
	conn := c.client(f).Conn()
	defer conn.Close()
	if err := conn.Do(ctx, "CLIENT", "REDIRECT", "ON").Err(); err != nil {
		t.Fatal(err)
	}
	// Until it hears from the leader a follower has no one to redirect to.
	kvtest.Eventually(t, 10*time.Second, f.name+" to know the leader", func() bool {
		m, err := info(ctx, c.client(f))
		return err == nil && m["leader_id"] == l.name
	})
	err := conn.Set(ctx, "moved", "v", 0).Err()
	if err == nil || err.Error() != "MOVED 0 "+l.p.RESPAddr {
		t.Fatalf("SET on a follower with CLIENT REDIRECT ON: %v, want MOVED 0 %s", err, l.p.RESPAddr)
	}
	if n, err := c.client(l).Exists(ctx, "moved").Result(); err != nil || n != 0 {
		t.Fatalf("the redirected write was executed: exists %d, %v", n, err)
	}
	if v, err := conn.Do(ctx, "GET", "moved").Result(); err == nil {
		t.Fatalf("GET after a redirected write found %v", v)
	}
	// Over HTTP: net/http follows a 307 with the same method and body.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+f.p.HTTPAddr+"/v1/kv/h?redirect=true", strings.NewReader("hello"))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("hello")), nil }
	var hops []string
	hc := &http.Client{CheckRedirect: func(r *http.Request, via []*http.Request) error {
		hops = append(hops, r.URL.Host)
		return nil
	}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(hops) != 1 || hops[0] != l.p.HTTPAddr {
		t.Fatalf("PUT ?redirect=true on a follower: %s after hops %v, want 200 after one hop to %s", resp.Status, hops, l.p.HTTPAddr)
	}
	if v, err := c.client(l).Get(ctx, "h").Result(); err != nil || v != "hello" {
		t.Fatalf("the redirected PUT: %q, %v", v, err)
	}
}

// TestClusterWatch: every node's change feed holds the same changes at the
// same revisions: a watch gives the same history on any node.
func TestClusterWatch(t *testing.T) {
	c := newCluster(t, "async")
	ctx := t.Context()
	rdb := c.client(c.nodes[1])
	for i := range 30 {
		key := fmt.Sprintf("w%d", i%7)
		switch i % 3 {
		case 0:
			if err := rdb.Set(ctx, key, i, 0).Err(); err != nil {
				t.Fatal(err)
			}
		case 1:
			if err := rdb.IncrBy(ctx, key, 5).Err(); err != nil && !strings.Contains(err.Error(), "not an integer") {
				t.Fatal(err)
			}
		case 2:
			if err := rdb.Del(ctx, key).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	var want any
	for _, n := range c.nodes {
		// WAITAOF on the node: its own log has fsynced the writes, which
		// the feed delivers only then.
		conn := c.client(n).Conn()
		var got any
		kvtest.Eventually(t, 10*time.Second, n.name+" to deliver the 30 writes", func() bool {
			r, err := conn.Do(ctx, "CHANGES", "FROM", 1, "PREFIX", "w", "COUNT", 1000).Slice()
			if err != nil || len(r) != 3 {
				return false
			}
			got = r[1]
			evs, _ := r[1].([]any)
			return r[0] == int64(31) && len(evs) > 0
		})
		conn.Close()
		if want == nil {
			want = got
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s's change feed differs from %s's:\n%v\n%v", n.name, c.nodes[0].name, got, want)
		}
	}
}
