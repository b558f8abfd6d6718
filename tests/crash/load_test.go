package crash_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// opKind is what an operation of the load did.
type opKind uint8

const (
	opSet     opKind = iota // SET or PUT of one fresh key
	opMSet                  // MSET of fresh keys: one atomic batch
	opDel                   // DEL of keys created earlier: one atomic batch
	opBarrier               // WAITAOF 1 0 0 or POST /v1/sync
)

func (k opKind) String() string {
	return [...]string{"SET", "MSET", "DEL", "BARRIER"}[k]
}

// outcome is what the client saw of an operation.
type outcome uint8

const (
	outOK      outcome = iota // acknowledged
	outFailed                 // the server answered with an error
	outUnknown                // no answer: the connection broke or timed out
)

func (o outcome) String() string {
	return [...]string{"ok", "error", "unknown"}[o]
}

// op is one logged operation.
type op struct {
	id     int
	client int
	kind   opKind
	via    string // "resp" or "http"
	dur    string // per-request durability: "" (the server's mode), "sync" or "async"
	keys   []string
	vals   []string // values written, for SET and MSET

	call, ret time.Time
	out       outcome
	err       string

	rev      uint64 // revision of the write, 0 when unknown
	durable  bool   // the server said the write was durable when it answered
	delCount int    // DEL: keys the server said it deleted, -1 if unknown
}

// isWrite reports whether o wrote (every kind but the barrier).
func (o *op) isWrite() bool { return o.kind != opBarrier }

// syncAcked reports whether the acknowledgement waited for an fsync.
func (o *op) syncAcked(mode string) bool {
	return o.dur == "sync" || (o.dur == "" && mode == "sync")
}

func (o *op) String() string {
	rev := "rev ?"
	if o.rev != 0 {
		rev = "rev " + strconv.FormatUint(o.rev, 10)
	}
	keys := o.keys
	if len(keys) > 3 {
		keys = append(keys[:3:3], "…")
	}
	what := o.kind.String()
	if o.dur != "" {
		what += " " + strings.ToUpper(o.dur)
	}
	s := fmt.Sprintf("op %d (client %d, %s via %s, %s, %s, keys %v)", o.id, o.client, what, o.via, o.out, rev, keys)
	if o.err != "" {
		s += " err=" + tail(o.err, 200)
	}
	return s
}

// store is the history of one data dir across the cycles of a test: the
// state its last restart recovered and checked.
type store struct {
	base    map[string]string // recovered state after the last restart
	baseRev uint64            // its revision
	nextID  atomic.Int64      // ids, hence keys, are never reused
	lastRev bool              // the server has CLIENT LASTREV
}

func newStore() *store { return &store{base: map[string]string{}} }

// keyOwner returns the client that created key, or -1.
func keyOwner(key string) int {
	rest, ok := strings.CutPrefix(key, "c")
	if !ok {
		return -1
	}
	n, _, ok := strings.Cut(rest, "/")
	if !ok {
		return -1
	}
	c, err := strconv.Atoi(n)
	if err != nil {
		return -1
	}
	return c
}

// loadOpts shape the load.
type loadOpts struct {
	clients   int
	mode      string // the server's commit mode
	overrides bool   // some writes carry a per-request durability, sync or async
	barriers  bool   // some clients issue durability barriers
	reads     bool   // clients read back their own acknowledged keys
	valueMin  int    // value size range; 0 means the default mix
	valueMax  int
}

// load is the concurrent clients and the status poller.
type load struct {
	k       *kvd
	st      *store
	opts    loadOpts
	stopped atomic.Bool
	wg      sync.WaitGroup
	clients []*client
	failed  atomic.Int64 // writes answered with an error

	mu         sync.Mutex
	maxDurable uint64        // highest durable revision the server reported
	fsync      time.Duration // bound of the slowest fsync seen
	logError   string        // first log_error the status reported
	logErrorAt time.Time     // when the poller first saw it
}

// client is one connection of each protocol and its own keys.
type client struct {
	l    *load
	id   int
	rng  *rand.Rand
	rdb  *redis.Client
	hc   *http.Client
	live []liveKey // keys it created, saw acknowledged and may delete
	ops  []*op
	bad  []string // read-back violations
}

// liveKey is a key a client may delete, with its value.
type liveKey struct{ key, val string }

// startLoad starts the clients and the poller against k.
func startLoad(t testing.TB, k *kvd, st *store, rng *rand.Rand, opts loadOpts) *load {
	t.Helper()
	l := &load{k: k, st: st, opts: opts}
	owned := make([][]liveKey, opts.clients)
	for key, v := range st.base {
		if c := keyOwner(key); c >= 0 && c < opts.clients {
			owned[c] = append(owned[c], liveKey{key, v})
		}
	}
	for i := range opts.clients {
		live := owned[i]
		slices.SortFunc(live, func(a, b liveKey) int { return strings.Compare(a.key, b.key) })
		c := &client{
			l:    l,
			id:   i,
			rng:  rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64())),
			rdb:  k.redis(),
			hc:   &http.Client{Timeout: httpTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 1}},
			live: live,
		}
		l.clients = append(l.clients, c)
	}
	for _, c := range l.clients {
		l.wg.Go(c.run)
	}
	l.wg.Go(l.poll)
	// A test that fails before it stops the load (t.Fatalf in a fault's
	// injection) must not leave clients looping against a dead server
	// into the next test. Cleanups run last-in first-out, so this runs
	// before kvd is killed.
	t.Cleanup(func() { l.stop() })
	return l
}

// stop stops the load and returns its operations in id order. Calling it
// again returns the same operations.
func (l *load) stop() []*op {
	l.stopped.Store(true)
	l.wg.Wait()
	var ops []*op
	for _, c := range l.clients {
		ops = append(ops, c.ops...)
		c.rdb.Close() // a second Close only returns an error
		c.hc.CloseIdleConnections()
	}
	slices.SortFunc(ops, func(a, b *op) int { return a.id - b.id })
	return ops
}

// readViolations returns what the clients' read-backs found wrong.
func (l *load) readViolations() []string {
	var bad []string
	for _, c := range l.clients {
		bad = append(bad, c.bad...)
	}
	return bad
}

// snapshot returns what the poller saw.
func (l *load) snapshot() (maxDurable uint64, fsync time.Duration, logError string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.maxDurable, l.fsync, l.logError
}

// logFailedAt returns when the poller first saw the status report a failed
// log, or the zero time.
func (l *load) logFailedAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.logErrorAt
}

// poll reads /v1/status every few milliseconds until the load stops,
// keeping the highest durable revision reported (a durability claim the
// recovery must honour) and a bound of the slowest fsync.
func (l *load) poll() {
	hc := &http.Client{Timeout: httpTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer hc.CloseIdleConnections()
	base := "http://" + l.k.HTTPAddr
	tick := time.NewTicker(3 * time.Millisecond)
	defer tick.Stop()
	for n := 0; !l.stopped.Load(); n++ {
		<-tick.C
		st, err := getStatus(context.Background(), hc, base)
		if err != nil {
			continue
		}
		l.mu.Lock()
		l.maxDurable = max(l.maxDurable, st.Revisions.Durable)
		if l.logError == "" && st.LogError != "" {
			l.logError, l.logErrorAt = st.LogError, time.Now()
		}
		l.mu.Unlock()
		if n%8 == 0 {
			l.updateFsync(hc)
		}
	}
}

// updateFsync refreshes the bound of the slowest fsync; call it right
// before a fault too.
func (l *load) updateFsync(hc *http.Client) {
	d, err := fsyncBound(context.Background(), hc, "http://"+l.k.HTTPAddr)
	if err != nil {
		return
	}
	l.mu.Lock()
	l.fsync = max(l.fsync, d)
	l.mu.Unlock()
}

// run issues operations until the load stops.
func (c *client) run() {
	for !c.l.stopped.Load() {
		c.step()
	}
}

// step issues one random operation.
func (c *client) step() {
	r := c.rng.Float64()
	switch {
	case r < 0.04 && c.l.opts.barriers:
		c.barrier()
	case r < 0.12 && c.l.opts.reads && len(c.live) > 0:
		c.readBack()
	case r < 0.30 && len(c.live) > 0:
		c.del()
	case r < 0.55:
		c.create(opMSet, 2+c.rng.IntN(4))
	default:
		c.create(opSet, 1)
	}
}

// newOp returns an operation with a fresh id and, with overrides on,
// sometimes a per-request durability.
func (c *client) newOp(kind opKind) *op {
	o := &op{id: int(c.l.st.nextID.Add(1)), client: c.id, kind: kind, delCount: -1}
	if c.l.opts.overrides && c.rng.IntN(8) == 0 {
		o.dur = [...]string{"sync", "async"}[c.rng.IntN(2)]
	}
	return o
}

// valueSize returns the size of the next value.
func (c *client) valueSize() int {
	o := c.l.opts
	if o.valueMax > 0 {
		return o.valueMin + c.rng.IntN(o.valueMax-o.valueMin+1)
	}
	if c.rng.IntN(20) == 0 {
		return 1024 + c.rng.IntN(8<<10) // crosses page boundaries
	}
	return 8 + c.rng.IntN(200)
}

// create writes fresh keys with unique values.
func (c *client) create(kind opKind, n int) {
	o := c.newOp(kind)
	for i := range n {
		key := fmt.Sprintf("c%d/%08d/%d", c.id, o.id, i)
		prefix := fmt.Sprintf("%d.%d.", o.id, i)
		fill := byte('a' + (o.id+i)%26)
		val := prefix + strings.Repeat(string(fill), max(0, c.valueSize()-len(prefix)))
		o.keys = append(o.keys, key)
		o.vals = append(o.vals, val)
	}
	if kind == opSet && c.rng.IntN(3) != 0 {
		c.httpWrite(o, http.MethodPut)
	} else {
		args := []any{strings.ToLower(kind.String())}
		for i := range o.keys {
			args = append(args, o.keys[i], o.vals[i])
		}
		c.respWrite(o, args)
	}
	c.record(o)
	if o.out == outOK {
		for i := range o.keys {
			c.live = append(c.live, liveKey{o.keys[i], o.vals[i]})
		}
	}
}

// del deletes one to three of the client's live keys. They leave the live
// set whatever the outcome: no key is deleted twice.
func (c *client) del() {
	o := c.newOp(opDel)
	n := min(len(c.live), 1+c.rng.IntN(3))
	for range n {
		i := c.rng.IntN(len(c.live))
		o.keys = append(o.keys, c.live[i].key)
		c.live[i] = c.live[len(c.live)-1]
		c.live = c.live[:len(c.live)-1]
	}
	if n == 1 && c.rng.IntN(2) == 0 {
		c.httpWrite(o, http.MethodDelete)
	} else {
		args := []any{"del"}
		for _, k := range o.keys {
			args = append(args, k)
		}
		c.respWrite(o, args)
	}
	c.record(o)
}

// record logs a finished operation.
func (c *client) record(o *op) {
	if o.out == outFailed {
		c.l.failed.Add(1)
	}
	c.ops = append(c.ops, o)
}

// respWrite runs a write command (with the durability token, and CLIENT
// LASTREV pipelined after it when the server has it).
func (c *client) respWrite(o *op, args []any) {
	o.via = "resp"
	if o.dur != "" {
		args = append(args, strings.ToUpper(o.dur))
	}
	ctx := context.Background()
	o.call = time.Now()
	var res any
	var err error
	if c.l.st.lastRev {
		var cmds []redis.Cmder
		cmds, err = c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Do(ctx, args...)
			p.Do(ctx, "client", "lastrev")
			return nil
		})
		if len(cmds) == 2 {
			res, err = cmds[0].(*redis.Cmd).Val(), cmds[0].Err()
			if err == nil {
				if r, rerr := cmds[1].(*redis.Cmd).Uint64(); rerr == nil {
					o.rev = r
				}
			}
		}
	} else {
		res, err = c.rdb.Do(ctx, args...).Result()
	}
	o.ret = time.Now()
	o.out, o.err = classify(err)
	if o.out == outOK && o.kind == opDel {
		if n, ok := res.(int64); ok {
			o.delCount = int(n)
		}
		if o.delCount == 0 {
			o.rev = 0 // no write: LASTREV still names the one before
		}
	}
}

// classify tells an error reply (outFailed) from a broken connection.
func classify(err error) (outcome, string) {
	if err == nil {
		return outOK, ""
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		return outFailed, err.Error()
	}
	return outUnknown, err.Error()
}

// httpWrite runs PUT or DELETE /v1/kv/{key}, which answer with the revision.
func (c *client) httpWrite(o *op, method string) {
	o.via = "http"
	u := "http://" + c.l.k.HTTPAddr + "/v1/kv/" + o.keys[0]
	if o.dur != "" {
		u += "?" + url.Values{"durability": {o.dur}}.Encode()
	}
	var body io.Reader
	if method == http.MethodPut {
		body = strings.NewReader(o.vals[0])
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		panic(err)
	}
	o.call = time.Now()
	resp, err := c.hc.Do(req)
	b := finishHTTP(o, resp, err)
	if o.out != outOK {
		return
	}
	o.durable = resp.Header.Get("X-Kvd-Durable") == "true"
	if method == http.MethodDelete {
		var res struct {
			Deleted *bool `json:"deleted"`
		}
		if json.Unmarshal(b, &res) == nil && res.Deleted != nil {
			o.delCount = 0
			if *res.Deleted {
				o.delCount = 1
			}
		}
		if o.delCount == 0 {
			o.rev = 0 // no write: the revision is the last committed one
		}
	}
}

// finishHTTP records in o the outcome of an HTTP request that returned resp
// and err: when it returned, whether it failed or is unknown and, for a 200,
// the revision kvd reported. It returns a 200's body.
func finishHTTP(o *op, resp *http.Response, err error) []byte {
	if err != nil {
		o.ret = time.Now()
		o.out, o.err = outUnknown, err.Error()
		return nil
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	o.ret = time.Now()
	switch {
	case err != nil:
		o.out, o.err = outUnknown, err.Error()
		return nil
	case resp.StatusCode != http.StatusOK:
		o.out, o.err = outFailed, resp.Status+": "+string(bytes.TrimSpace(b))
		return nil
	}
	o.out = outOK
	o.rev, _ = strconv.ParseUint(resp.Header.Get("X-Kvd-Revision"), 10, 64)
	return b
}

// barrier asks for durability of everything acknowledged so far.
func (c *client) barrier() {
	o := c.newOp(opBarrier)
	o.dur = ""
	o.call = time.Now()
	if c.rng.IntN(2) == 0 {
		o.via = "resp"
		res, err := c.rdb.Do(context.Background(), "waitaof", 1, 0, 0).Int64Slice()
		o.ret = time.Now()
		o.out, o.err = classify(err)
		if o.out == outOK && (len(res) != 2 || res[0] != 1) {
			o.out, o.err = outFailed, fmt.Sprintf("WAITAOF 1 0 0 answered %v", res)
		}
	} else {
		o.via = "http"
		resp, err := c.hc.Post("http://"+c.l.k.HTTPAddr+"/v1/sync", "", nil)
		finishHTTP(o, resp, err)
	}
	if o.out == outOK {
		o.durable = true
		c.l.mu.Lock()
		c.l.maxDurable = max(c.l.maxDurable, o.rev)
		c.l.mu.Unlock()
	}
	c.record(o)
}

// readBack reads one of the client's live keys: reads see every
// acknowledged write, durable or not.
func (c *client) readBack() {
	lk := c.live[c.rng.IntN(len(c.live))]
	var got string
	var found bool
	if c.rng.IntN(2) == 0 {
		v, err := c.rdb.Get(context.Background(), lk.key).Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return // the connection broke: nothing learnt
		default:
			got, found = v, true
		}
	} else {
		resp, err := c.hc.Get("http://" + c.l.k.HTTPAddr + "/v1/kv/" + lk.key)
		if err != nil {
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			return
		case resp.StatusCode == http.StatusNotFound:
		case resp.StatusCode != http.StatusOK:
			c.bad = append(c.bad, fmt.Sprintf("read of %s failed: %s: %s", lk.key, resp.Status, b))
			return
		default:
			got, found = string(b), true
		}
	}
	switch {
	case !found:
		c.bad = append(c.bad, fmt.Sprintf("read of acknowledged key %s: not found", lk.key))
	case got != lk.val:
		c.bad = append(c.bad, fmt.Sprintf("read of acknowledged key %s: got %q, want %q", lk.key, tail(got, 40), tail(lk.val, 40)))
	}
}

// hasLastRev reports whether the server answers CLIENT LASTREV.
func hasLastRev(k *kvd) bool {
	rdb := k.redis()
	defer rdb.Close()
	_, err := rdb.Do(context.Background(), "client", "lastrev").Int64()
	return err == nil
}
