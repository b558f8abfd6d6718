package cluster

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kvdstore/kvd/internal/kvtest"
)

// TestDivergedNode: a node that applied entries the rest of the cluster
// lost finds out, refuses to serve, and is rebuilt as the README says
// ("Rebuilding a diverged node"). In async mode the followers keep the
// leader's entries unsynced (flush and checkpoint intervals of an hour)
// while the
// leader's process is killed with its disk intact; the followers' power is
// cut, so they lose those entries, elect a leader of their own and take a
// write; the old leader comes back holding entries, applied, that the
// cluster replaces.
func TestDivergedNode(t *testing.T) {
	requireFUSE(t)
	pc := newPowerCluster(t, "async", powerSeed(t))
	ctx := t.Context()
	old := pc.leader()
	fs := pc.others(old)
	// The followers write what they receive and fsync nothing for an hour:
	// neither their log's flusher nor a checkpoint of their state file
	// (which fsyncs the log first).
	for _, f := range fs {
		if err := f.p.Stop(os.Interrupt, 10*time.Second); err != nil {
			t.Fatalf("stop %s: %v", f.name, err)
		}
		pc.start(f, "--flush-interval", "1h", "--checkpoint-interval", "1h")
	}
	if l := pc.leader(); l != old {
		t.Fatalf("%s leads after the followers' restart, want %s", l.name, old.name)
	}
	rdb := pc.client(old)
	const lost = 50
	for i := range lost {
		if err := rdb.Set(ctx, fmt.Sprintf("lost%d", i), "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}

	// The old leader's state file holds them: a node restarts from its
	// state file, so entries only in its memory would be gone with its
	// process, and it would take the cluster's log without diverging.
	kvtest.Eventually(t, 30*time.Second, old.name+" checkpointing the writes", func() bool {
		m, err := infoSection(ctx, rdb, "persistence")
		if err != nil {
			return false
		}
		cp, _ := strconv.Atoi(m["checkpointed_revision"])
		return cp >= lost
	})
	old.p.Kill()
	pc.cutPowerPlain(fs...)
	pc.restart(fs...)
	l := pc.leaderAmong(fs)
	kvtest.Eventually(t, 30*time.Second, "a write through the new leader "+l.name, func() bool {
		return pc.client(l).Set(ctx, "after-cut", "x", 0).Err() == nil
	})
	if n, err := pc.client(l).Exists(ctx, fmt.Sprintf("lost%d", lost-1)).Result(); err != nil || n != 0 {
		t.Fatalf("the new leader has lost%d (%d, %v): the followers' power cut did not drop the unsynced writes", lost-1, n, err)
	}

	pc.start(old)
	diverged := pc.divergedOrCaughtUp(l)
	if !slices.Equal(diverged, []*node{old}) {
		t.Fatalf("diverged: %v, want [%s]", names(diverged), old.name)
	}
	orc := pc.client(old)
	for _, err := range []error{orc.Get(ctx, "lost0").Err(), orc.Set(ctx, "k", "v", 0).Err()} {
		if err == nil || !strings.HasPrefix(err.Error(), "DIVERGED") {
			t.Fatalf("%s diverged, and a request on it answered %v, want DIVERGED", old.name, err)
		}
	}
	resp, err := http.Get("http://" + old.p.HTTPAddr + "/v1/kv/lost0")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("GET /v1/kv on the diverged %s: %s, want 503", old.name, resp.Status)
	}

	// The rebuild: stop it, remove it, set its data directory aside, start
	// it empty with --join (and its old ID).
	if err := old.p.Stop(os.Interrupt, 10*time.Second); err != nil {
		t.Logf("stop %s: %v", old.name, err)
	}
	kvctl(t, l, "member", "remove", old.name)
	if err := os.Rename(old.dir, old.dir+".diverged"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(old.dir, 0o750); err != nil {
		t.Fatal(err)
	}
	pc.start(old, "--join", l.adv)
	pc.waitMembers(3)
	pc.checkConvergedAmong(pc.nodes)
	v, err := pc.client(old).Get(ctx, "after-cut").Result()
	if err != nil || v != "x" {
		t.Fatalf("the rebuilt %s: after-cut = %q, %v", old.name, v, err)
	}
	last := fmt.Sprintf("lost%d", lost-1)
	if err := pc.client(old).Get(ctx, last).Err(); err != redis.Nil {
		t.Fatalf("the rebuilt %s: %s: %v, want nil (the cluster lost it)", old.name, last, err)
	}
}
