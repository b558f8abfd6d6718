// Package cluster holds end-to-end tests of kvd on a Raft cluster: three
// real kvd processes on 127.0.0.11-13 (Linux answers on all of 127/8),
// each behind a TCP proxy of the test that can cut or delay the links
// between nodes (proxy_test.go), driven by concurrent Redis clients while
// the tests kill, pause, partition and move nodes (faults_test.go), with
// checks that the histories are linearizable (porcupine, a register per
// key: linearizability_test.go), that no acknowledged write is lost and
// that the nodes converge to the same state.
//
// Each scenario runs once by default; KVD_CLUSTER_LONG=1 runs it 50 times.
// The nodes run with Raft timeouts of 200 ms (testTimeouts);
// KVD_CLUSTER_DEFAULT_TIMEOUTS=1 runs them with kvd's defaults.
// A history found not linearizable is written as porcupine's HTML
// visualization to $KVD_CLUSTER_ARTIFACTS (default: a temporary directory
// of the test), and the failure names the file.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kvdstore/kvd/internal/kvtest"
)

var kvdBin, kvctlBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := kvtest.Build(nil, "github.com/kvdstore/kvd/cmd/kvd", "github.com/kvdstore/kvd/cmd/kvctl")
	if err != nil {
		fmt.Fprintf(os.Stderr, "building kvd and kvctl: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	kvdBin, kvctlBin = filepath.Join(dir, "kvd"), filepath.Join(dir, "kvctl")
	return m.Run()
}

// rounds is how many times each scenario runs.
// testTimeouts are the Raft timeouts the tests give kvd, shorter than its
// defaults (500, 500 and 250 ms) so that the scenarios elect leaders sooner;
// KVD_CLUSTER_DEFAULT_TIMEOUTS=1 leaves kvd's defaults.
var testTimeouts = []string{"--raft-heartbeat-timeout", "200ms", "--raft-election-timeout", "200ms", "--raft-leader-lease-timeout", "100ms"}

func rounds() int {
	if os.Getenv("KVD_CLUSTER_LONG") == "1" {
		return 50
	}
	return 1
}

type node struct {
	name string
	ip   string
	dir  string
	raft string // cluster address it listens on
	adv  string // the address of its proxy, which it advertises (see netem)
	p    *kvtest.Proc
	// keptID: start without --node-id, so that the node uses the ID kept
	// in its data directory.
	keptID bool

	mu sync.Mutex // guards pc: p, for the goroutines of clients
	pc *kvtest.Proc
}

// proc returns the process running n, for goroutines other than the test's.
func (n *node) proc() *kvtest.Proc {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pc
}

type cluster struct {
	t     *testing.T
	mode  string
	nodes []*node
	net   *netem // the proxies between the nodes
	// dataDir returns the data directory of the node named name; nil: a
	// temporary directory of the test's.
	dataDir func(name string) string
}

// newCluster starts three nodes in commit mode mode: n1 bootstraps, the
// others join it.
func newCluster(t *testing.T, mode string) *cluster {
	t.Helper()
	return newClusterOn(t, mode, nil)
}

// newClusterOn is newCluster with each node's data directory chosen by
// dataDir (see cluster.dataDir).
func newClusterOn(t *testing.T, mode string, dataDir func(name string) string) *cluster {
	t.Helper()
	c := &cluster{t: t, mode: mode, net: newNetem(t), dataDir: dataDir}
	for i := range 3 {
		n := c.newNode(fmt.Sprintf("n%d", i+1), fmt.Sprintf("127.0.0.%d", 11+i))
		c.nodes = append(c.nodes, n)
		if i == 0 {
			c.start(n, "--bootstrap")
		} else {
			c.start(n, "--join", c.nodes[0].adv)
		}
	}
	c.waitMembers(3)
	return c
}

// newNode returns a node on ip, not started, with a cluster port of its
// own and a proxy in front of it (see netem).
func (c *cluster) newNode(name, ip string) *node {
	c.t.Helper()
	n := &node{name: name, ip: ip, raft: freePort(c.t, ip)}
	if c.dataDir != nil {
		n.dir = c.dataDir(name)
	} else {
		n.dir = filepath.Join(c.t.TempDir(), name)
	}
	n.adv = c.net.proxy(name, ip, n.raft)
	return n
}

// freePort returns an address on ip whose port was free a moment ago, a
// node's cluster address for its whole life. The port is below Linux's
// ephemeral range (32768-60999): a node dials the others from its own
// address, and an ephemeral port there could take the port of a node that
// restarts (a long run once failed to start a node with "bind: address
// already in use").
func freePort(t testing.TB, ip string) string {
	t.Helper()
	var err error
	for range 100 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", fmt.Sprintf("%s:%d", ip, 20000+rand.IntN(12000))); err == nil {
			defer ln.Close()
			return ln.Addr().String()
		}
	}
	t.Fatal(err)
	return ""
}

// start starts n on its cluster address, advertising its proxy's.
func (c *cluster) start(n *node, extra ...string) {
	c.t.Helper()
	args := []string{
		"--listen", n.ip + ":0", "--http-listen", n.ip + ":0",
		"--raft-listen", n.raft, "--raft-advertise", n.adv, "--commit-mode", c.mode,
		"--flush-interval", "10ms",
	}
	if os.Getenv("KVD_CLUSTER_DEFAULT_TIMEOUTS") != "1" {
		args = append(args, testTimeouts...)
	}
	if !n.keptID {
		args = append(args, "--node-id", n.name)
	}
	p, err := kvtest.Start(c.t, kvtest.Options{Bin: kvdBin, DataDir: n.dir, Args: append(args, extra...)})
	if err != nil {
		var ee *kvtest.ExitError
		if errors.As(err, &ee) {
			c.t.Fatalf("start %s: %v\n%s", n.name, err, ee.Log)
		}
		c.t.Fatalf("start %s: %v", n.name, err)
	}
	n.p = p
	n.mu.Lock()
	n.pc = p
	n.mu.Unlock()
}

func (c *cluster) client(n *node) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: n.p.RESPAddr, MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: 15 * time.Second, WriteTimeout: 5 * time.Second, PoolSize: 4})
	c.t.Cleanup(func() { rdb.Close() })
	return rdb
}

// info returns the replication section of n's INFO as a map.
func info(ctx context.Context, rdb redis.Cmdable) (map[string]string, error) {
	return infoSection(ctx, rdb, "replication")
}

// infoSection returns a section of n's INFO as a map.
func infoSection(ctx context.Context, rdb redis.Cmdable, section string) (map[string]string, error) {
	s, err := rdb.Info(ctx, section).Result()
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, line := range strings.Split(s, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = v
		}
	}
	return m, nil
}

func (c *cluster) waitMembers(want int) {
	c.t.Helper()
	rdb := c.client(c.nodes[0])
	kvtest.Eventually(c.t, 30*time.Second, fmt.Sprintf("%d members", want), func() bool {
		m, err := info(c.t.Context(), rdb)
		return err == nil && m["members"] == strconv.Itoa(want)
	})
}

// leader returns the node that is leader, waiting for one.
func (c *cluster) leader() *node {
	c.t.Helper()
	var l *node
	kvtest.Eventually(c.t, 30*time.Second, "a leader", func() bool {
		for _, n := range c.nodes {
			if n.p == nil || n.p.Exited() {
				continue
			}
			m, err := info(c.t.Context(), c.client(n))
			if err == nil && m["raft_state"] == "Leader" {
				l = n
				return true
			}
		}
		return false
	})
	return l
}

// history records what the writers were told.
type history struct {
	mu      sync.Mutex
	acked   map[string]string // key → value, acknowledged
	unknown int               // writes that got an error
	errs    map[string]int    // error texts, counted
	others  int               // at most how many keys other clients write
	// faultAt is when the test injected a fault (unix ns, 0: none yet);
	// backAt when the first write sent after it was acknowledged.
	faultAt, backAt atomic.Int64
	// lastAck is when the last acknowledged write was sent (unix ns).
	lastAck atomic.Int64
}

// fault records that a fault is injected now.
func (h *history) fault() { h.faultAt.Store(time.Now().UnixNano()) }

// unavailable is how long after the fault the first write sent after it
// was acknowledged, 0 if none was yet.
func (h *history) unavailable() time.Duration {
	if b := h.backAt.Load(); b != 0 {
		return time.Duration(b - h.faultAt.Load())
	}
	return 0
}

// writers runs w writers, each writing unique keys to the nodes in turn
// (moving on to the next node after an error), until stop is closed.
func (c *cluster) writers(w int, h *history, stop <-chan struct{}) *sync.WaitGroup {
	return c.runWriters(w, "w", stop, func(key, val string, sent time.Time, err error) {
		h.mu.Lock()
		defer h.mu.Unlock()
		if err == nil {
			h.acked[key] = val
			h.lastAck.Store(sent.UnixNano())
			if f := h.faultAt.Load(); f != 0 && sent.UnixNano() > f && h.backAt.Load() == 0 {
				h.backAt.Store(time.Now().UnixNano())
			}
		} else {
			h.unknown++
			h.errs[errClass(err)]++
		}
	})
}

// runWriters runs w writers, each writing unique keys (PREFIX<writer>-<seq>)
// to the nodes in turn, moving on to the next node after an error, until
// stop is closed; done is told of each write as it returns, from the
// writer's goroutine.
func (c *cluster) runWriters(w int, prefix string, stop <-chan struct{}, done func(key, val string, sent time.Time, err error)) *sync.WaitGroup {
	var wg sync.WaitGroup
	for i := range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at := i % len(c.nodes)
			clients := map[*kvtest.Proc]*redis.Client{}
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				p := c.nodes[at].proc()
				if p == nil || p.Exited() {
					at = (at + 1) % len(c.nodes)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				rdb := clients[p]
				if rdb == nil {
					rdb = redis.NewClient(&redis.Options{Addr: p.RESPAddr, MaxRetries: -1, DialTimeout: time.Second,
						ReadTimeout: 15 * time.Second, PoolSize: 1})
					defer rdb.Close()
					clients[p] = rdb
				}
				key, val := fmt.Sprintf("%s%d-%d", prefix, i, seq), fmt.Sprintf("v%d-%d", i, seq)
				sent := time.Now()
				err := rdb.Set(context.Background(), key, val, 0).Err()
				done(key, val, sent, err)
				if err != nil {
					at = (at + 1) % len(c.nodes)
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	return &wg
}

func errClass(err error) string {
	s := err.Error()
	for _, p := range []string{"CLUSTERDOWN", "UNKNOWN", "connection refused", "broken pipe", "EOF", "i/o timeout", "connection reset"} {
		if strings.Contains(s, p) {
			return p
		}
	}
	return s
}

// checkAcked checks that every acknowledged write is on every node, and
// that the nodes hold the same number of keys and the same revision.
func (c *cluster) checkAcked(h *history) {
	c.t.Helper()
	ctx := c.t.Context()
	var revs []string
	// Every node must catch up with the leader: its applied revision stops
	// moving and equals the others'.
	if !kvtest.WaitFor(30*time.Second, 50*time.Millisecond, func() bool {
		revs = revs[:0]
		for _, n := range c.nodes {
			m, err := info(ctx, c.client(n))
			if err != nil {
				return false
			}
			revs = append(revs, m["applied_revision"])
		}
		return revs[0] != "" && revs[0] == revs[1] && revs[1] == revs[2]
	}) {
		c.t.Fatalf("the nodes did not apply the same revision within 30 s: revisions %v; Raft: %s", revs, c.raftStates())
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var sizes []int64
	for _, n := range c.nodes {
		rdb := c.client(n)
		keys := make([]string, 0, len(h.acked))
		for k := range h.acked {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for len(keys) > 0 {
			batch := keys[:min(500, len(keys))]
			keys = keys[len(batch):]
			vals, err := rdb.MGet(ctx, batch...).Result()
			if err != nil {
				c.t.Fatalf("%s: MGET: %v", n.name, err)
			}
			for i, v := range vals {
				if s, _ := v.(string); s != h.acked[batch[i]] {
					c.t.Fatalf("%s: acknowledged write %s=%s lost: got %v", n.name, batch[i], h.acked[batch[i]], v)
				}
			}
		}
		size, err := rdb.DBSize(ctx).Result()
		if err != nil {
			c.t.Fatal(err)
		}
		sizes = append(sizes, size)
	}
	if sizes[0] != sizes[1] || sizes[1] != sizes[2] {
		c.t.Fatalf("the nodes hold different numbers of keys: %v", sizes)
	}
	if sizes[0] < int64(len(h.acked)) || sizes[0] > int64(len(h.acked)+h.unknown+h.others) {
		c.t.Fatalf("the nodes hold %d keys; %d writes were acknowledged, %d failed, and other clients wrote up to %d keys", sizes[0], len(h.acked), h.unknown, h.others)
	}
}

func newHistory() *history {
	return &history{acked: map[string]string{}, errs: map[string]int{}}
}

// TestKillAllAsync: in async mode, kill -9 every node at once while
// writers run; after a restart of all, no acknowledged write is lost (a
// quorum had each in its page cache, which a process crash keeps).
func TestKillAllAsync(t *testing.T) {
	for r := range rounds() {
		t.Run(fmt.Sprintf("round%d", r), func(t *testing.T) {
			c := newCluster(t, "async")
			h := newHistory()
			stop := make(chan struct{})
			wg := c.writers(6, h, stop)
			time.Sleep(time.Second)
			for _, n := range c.nodes {
				n.p.Kill()
			}
			close(stop)
			wg.Wait()
			if len(h.acked) == 0 {
				t.Fatalf("no write was acknowledged before the kill: %v", h.errs)
			}
			for _, n := range c.nodes {
				c.start(n)
			}
			c.leader()
			c.checkAcked(h)
			t.Logf("%d writes acknowledged before kill -9 of every node, %d failed %v", len(h.acked), h.unknown, h.errs)
		})
	}
}

// TestAnyNodeServes: every node takes writes and reads over RESP and HTTP
// (followers forward them); a connection's stale reads on a follower see
// its own writes; bad consistency options get clear errors.
func TestAnyNodeServes(t *testing.T) {
	c := newCluster(t, "sync")
	ctx := t.Context()
	l := c.leader()
	f := c.others(l)[0]
	// RESP on a follower, through the leader.
	rdb := c.client(f)
	for i := range 20 {
		if err := rdb.Set(ctx, fmt.Sprintf("r%d", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := rdb.Incr(ctx, "counter").Result(); err != nil || n != 1 {
		t.Fatalf("INCR on a follower: %d, %v", n, err)
	}
	// Stale reads with read-your-writes on the connection.
	conn := rdb.Conn()
	defer conn.Close()
	if err := conn.Do(ctx, "CLIENT", "CONSISTENCY", "stale").Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		key := fmt.Sprintf("s%d", i)
		if err := conn.Set(ctx, key, i, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if v, err := conn.Get(ctx, key).Result(); err != nil || v != strconv.Itoa(i) {
			t.Fatalf("stale read of the connection's own write %s on a follower: %q, %v", key, v, err)
		}
	}
	if err := conn.Do(ctx, "CLIENT", "CONSISTENCY", "eventually").Err(); err == nil || !strings.Contains(err.Error(), "consistency must be") {
		t.Fatalf("CLIENT CONSISTENCY eventually: %v, want a clear error", err)
	}

	// HTTP on a follower.
	base := "http://" + f.p.HTTPAddr
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, base+"/v1/kv/h1", strings.NewReader("hello"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT on a follower: %s", resp.Status)
	}
	for _, q := range []string{"", "?consistency=linearizable", "?consistency=leader", "?consistency=stale&min_rev=1", "?consistency=stale&max_stale=5s"} {
		resp, err := http.Get(base + "/v1/kv/h1" + q)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "hello" {
			t.Fatalf("GET%s on a follower: %s %q", q, resp.Status, body)
		}
		if !strings.HasPrefix(resp.Header.Get("X-Kvd-Leader"), l.name+"@") {
			t.Fatalf("GET%s: X-Kvd-Leader %q, want the leader %s", q, resp.Header.Get("X-Kvd-Leader"), l.name)
		}
	}
	resp, err = http.Get(base + "/v1/kv/h1?consistency=sometimes")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("GET with a bad consistency: %s, want 400", resp.Status)
	}
}

// kvctl runs kvctl against n and returns its output.
func kvctl(t *testing.T, n *node, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), kvctlBin, append([]string{"--addr", n.p.RESPAddr}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kvctl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestMembership: kvctl lists the members, hands the leadership over,
// adds a node as a nonvoter that catches up and is promoted, and removes a
// member; /readyz answers 200 on a node that caught up.
func TestMembership(t *testing.T) {
	c := newCluster(t, "sync")
	ctx := t.Context()
	rdb := c.client(c.nodes[0])
	for i := range 50 {
		if err := rdb.Set(ctx, fmt.Sprintf("k%d", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if out := kvctl(t, c.nodes[1], "member", "list"); strings.Count(out, "voter") != 3 || !strings.Contains(out, "leader") {
		t.Fatalf("member list:\n%s", out)
	}

	// Leadership transfer to a named follower.
	l := c.leader()
	to := c.others(l)[0]
	out := kvctl(t, c.nodes[2], "leader", "transfer", to.name)
	if !strings.HasPrefix(out, to.name+" ") {
		t.Fatalf("leader transfer %s printed %q", to.name, out)
	}
	if got := c.leader(); got != to {
		t.Fatalf("leader after transfer to %s: %s", to.name, got.name)
	}

	// A fourth node, started with neither --bootstrap nor --join, added as
	// a nonvoter: it receives the log, then is promoted.
	n4 := c.newNode("n4", "127.0.0.14")
	c.start(n4)
	kvctl(t, c.nodes[0], "member", "add", "n4", n4.adv, "--nonvoter")
	r4 := c.client(n4)
	kvtest.Eventually(t, 30*time.Second, "n4 to catch up", func() bool {
		v, err := r4.Do(ctx, "GET", "k49").Text()
		return err == nil && v == "49"
	})
	resp, err := http.Get("http://" + n4.p.HTTPAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz on n4 after catching up: %s", resp.Status)
	}
	if out := kvctl(t, c.nodes[0], "member", "list"); !strings.Contains(out, "nonvoter") {
		t.Fatalf("member list after adding n4 as a nonvoter:\n%s", out)
	}
	kvctl(t, c.nodes[0], "member", "promote", "n4", n4.adv)
	// The node asked shows the new configuration once it has it.
	waitMembers := func(n *node, what string, ok func(out string) bool) {
		t.Helper()
		var out string
		if !kvtest.WaitFor(10*time.Second, 100*time.Millisecond, func() bool {
			out = kvctl(t, n, "member", "list")
			return ok(out)
		}) {
			t.Fatalf("member list on %s %s:\n%s", n.name, what, out)
		}
	}
	waitMembers(c.nodes[0], "after promoting n4", func(out string) bool {
		return strings.Count(out, "nonvoter") == 0 && strings.Count(out, "voter") == 4
	})

	// Remove a follower: three members remain, and writes go on.
	var gone *node
	for _, n := range c.nodes {
		if n != c.leader() {
			gone = n
			break
		}
	}
	kvctl(t, n4, "member", "remove", gone.name)
	waitMembers(n4, "after removing "+gone.name, func(out string) bool {
		return !strings.Contains(out, gone.name+" ") && strings.Count(out, "voter") == 3
	})
	if err := r4.Set(ctx, "after-remove", "v", 0).Err(); err != nil {
		t.Fatalf("write after removing a member: %v", err)
	}

	// The cluster endpoints answer as documented.
	var st struct {
		State   string `json:"state"`
		Members []struct {
			ID string `json:"id"`
		} `json:"members"`
	}
	if err := kvtest.GetJSON(ctx, http.DefaultClient, "http://"+n4.p.HTTPAddr+"/v1/cluster", &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Members) != 3 || st.State == "" {
		t.Fatalf("/v1/cluster on n4: %+v", st)
	}
}
