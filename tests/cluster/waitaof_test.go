package cluster

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestWaitAOF: on a cluster of three, WAITAOF 1 1 answers [1, 1] on the
// leader and on a follower: this node's log and one other voter's (a
// quorum with it) have fsynced the connection's last write, an async one.
func TestWaitAOF(t *testing.T) {
	c := newCluster(t, "async")
	ctx := t.Context()
	for _, n := range c.nodes {
		conn := c.client(n).Conn()
		if err := conn.Set(ctx, "k-"+n.name, "v", 0).Err(); err != nil {
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
		resp, err := http.Get("http://" + n.p.HTTPAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		leader := `kvd_raft_state{state="leader"} 0`
		if n == l {
			leader = `kvd_raft_state{state="leader"} 1`
		}
		for _, want := range []string{leader, `kvd_raft_members{suffrage="voter"} 3`, "kvd_raft_term ", "kvd_raft_commit_index ", "kvd_raft_diverged 0"} {
			if !strings.Contains(string(body), want) {
				t.Fatalf("%s /metrics lacks %q", n.name, want)
			}
		}
	}
}
