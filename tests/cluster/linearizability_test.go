package cluster

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/redis/go-redis/v9"

	"github.com/kvdstore/kvd/internal/kvtest"
)

// The linearizability check: concurrent clients, each on one node, run
// GET, SET and GETSET on a few keys with values never written twice, and
// record every operation with the times it was called and returned;
// porcupine then looks for an order of the operations, each taking effect
// at one instant between its call and its return, in which every key
// behaves as a register.
//
// As in etcd's robustness tests, an operation that got an error other than
// one that says it was not executed is indeterminate: it may have taken
// effect at any time after its call, or never, so it returns at infinity
// (a write that never took effect is one ordered after everything else).
// Reads that failed, and operations refused with CLUSTERDOWN ("nothing was
// executed") or a refused connection (never sent), are left out.
//
// Values are unique, so (again as etcd does) indeterminate writes are
// patched before the check, which keeps porcupine's search small: one
// whose value no read returned is left out (had it taken effect, nothing
// saw it), and one whose value was read returns when the first read that
// returned it did (it took effect before).

type regKind uint8

const (
	regGet regKind = iota
	regPut
	regSwap // GETSET: put, returning the value it replaced
)

type regInput struct {
	kind       regKind
	key, value string
}

type regOutput struct {
	value   string // what a GET or GETSET returned; "" when the key was absent
	unknown bool   // the outcome is unknown
}

// registerModel is a register per key: the state is the key's value, ""
// while absent (values written are never empty).
var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(regInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(string), input.(regInput), output.(regOutput)
		switch in.kind {
		case regGet:
			return out.value == s, s
		case regPut:
			return true, in.value
		default: // regSwap
			return out.unknown || out.value == s, in.value
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regOutput)
		res := fmt.Sprintf("%q", out.value)
		if out.unknown {
			res = "unknown"
		}
		switch in.kind {
		case regGet:
			return fmt.Sprintf("get(%s) → %s", in.key, res)
		case regPut:
			if out.unknown {
				return fmt.Sprintf("set(%s, %s) → unknown", in.key, in.value)
			}
			return fmt.Sprintf("set(%s, %s)", in.key, in.value)
		default:
			return fmt.Sprintf("getset(%s, %s) → %s", in.key, in.value, res)
		}
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%q", state) },
}

// linHistory records the operations of the clients.
type linHistory struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
	// counts of what happened, for the log
	ok, unknown, dropped int
}

func newLinHistory() *linHistory { return &linHistory{start: time.Now()} }

func (h *linHistory) now() int64 { return int64(time.Since(h.start)) }

// notExecuted tells errors that say the operation was not executed.
func notExecuted(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "CLUSTERDOWN") || strings.Contains(s, "connection refused")
}

func (h *linHistory) record(client int, in regInput, call int64, value string, err error) {
	ret := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil && !errors.Is(err, redis.Nil) {
		if in.kind == regGet || notExecuted(err) {
			h.dropped++
			return
		}
		h.unknown++
		h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call,
			Output: regOutput{unknown: true}, Return: math.MaxInt64})
		return
	}
	h.ok++
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call,
		Output: regOutput{value: value}, Return: ret})
}

// linClients runs w clients, client i on node i%3 (on whatever process
// runs it: kills and restarts are followed), each running random GET, SET
// and GETSET on keys lin0..lin{keys-1} until stop is closed. Reads are
// linearizable: the nodes' default.
func (c *cluster) linClients(w, keys int, h *linHistory, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for i := range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := c.nodes[i%len(c.nodes)]
			rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			clients := map[*kvtest.Proc]*redis.Client{}
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				p := n.proc()
				if p == nil || p.Exited() {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				rdb := clients[p]
				if rdb == nil {
					// Bounded timeouts: a node that hangs makes operations
					// indeterminate, not the test stuck.
					rdb = redis.NewClient(&redis.Options{Addr: p.RESPAddr, MaxRetries: -1, DialTimeout: time.Second,
						ReadTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second, PoolSize: 1})
					defer rdb.Close()
					clients[p] = rdb
				}
				in := regInput{key: fmt.Sprintf("lin%d", rng.IntN(keys)), value: fmt.Sprintf("c%d-%d", i, seq)}
				switch r := rng.IntN(10); {
				case r < 5:
					in.kind = regGet
				case r < 8:
					in.kind = regPut
				default:
					in.kind = regSwap
				}
				ctx := context.Background()
				call := h.now()
				var v string
				var err error
				switch in.kind {
				case regGet:
					v, err = rdb.Get(ctx, in.key).Result()
				case regPut:
					err = rdb.Set(ctx, in.key, in.value, 0).Err()
				case regSwap:
					v, err = rdb.GetSet(ctx, in.key, in.value).Result()
				}
				h.record(i, in, call, v, err)
				if err != nil && !errors.Is(err, redis.Nil) {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	return &wg
}

// artifactDir is where failing histories are written: $KVD_CLUSTER_ARTIFACTS
// if set (CI keeps it), else a directory of the test's.
func artifactDir(t testing.TB) string {
	if d := os.Getenv("KVD_CLUSTER_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// checkLinearizable checks h with porcupine; on a violation it writes
// porcupine's visualization of the history and fails naming the file.
func checkLinearizable(t testing.TB, h *linHistory) {
	t.Helper()
	h.mu.Lock()
	ops := slices.Clone(h.ops)
	ok, unknown, dropped := h.ok, h.unknown, h.dropped
	h.mu.Unlock()
	if ok == 0 {
		t.Fatalf("no operation of the linearizability clients succeeded (%d unknown, %d failed)", unknown, dropped)
	}
	res, info := porcupine.CheckOperationsVerbose(registerModel, patch(ops), time.Minute)
	t.Logf("linearizability: %s over %d operations (%d indeterminate; %d failed reads and refused writes left out)", res, len(ops), unknown, dropped)
	if res == porcupine.Ok {
		return
	}
	name := filepath.Join(artifactDir(t), strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+"-linearizability.html")
	if err := porcupine.VisualizePath(registerModel, info, name); err != nil {
		t.Errorf("writing the visualization: %v", err)
	}
	if res == porcupine.Illegal {
		t.Fatalf("the history is not linearizable; porcupine's visualization: %s", name)
	}
	t.Fatalf("porcupine could not decide within a minute whether the history is linearizable (%s); visualization: %s", res, name)
}

// patch patches the indeterminate writes of ops (see above).
func patch(ops []porcupine.Operation) []porcupine.Operation {
	seen := map[string]int64{} // value → earliest return of a read of it
	for _, op := range ops {
		if out := op.Output.(regOutput); !out.unknown && out.value != "" {
			if r, ok := seen[out.value]; !ok || op.Return < r {
				seen[out.value] = op.Return
			}
		}
	}
	var out []porcupine.Operation
	for _, op := range ops {
		if op.Output.(regOutput).unknown {
			r, ok := seen[op.Input.(regInput).value]
			if !ok {
				continue
			}
			op.Return = max(r, op.Call)
		}
		out = append(out, op)
	}
	return out
}

// TestCheckerRejects: the checker tells a stale read and a lost write from
// linearizable histories, and takes indeterminate writes both ways.
func TestCheckerRejects(t *testing.T) {
	op := func(kind regKind, key, value string, call, ret int64, out string, unknown bool) porcupine.Operation {
		if unknown {
			ret = math.MaxInt64
		}
		return porcupine.Operation{Input: regInput{kind, key, value}, Call: call, Output: regOutput{out, unknown}, Return: ret}
	}
	for _, tc := range []struct {
		name string
		ops  []porcupine.Operation
		want porcupine.CheckResult
	}{
		{"read after write", []porcupine.Operation{op(regPut, "k", "a", 0, 10, "", false), op(regGet, "k", "", 20, 30, "a", false)}, porcupine.Ok},
		{"stale read", []porcupine.Operation{
			op(regPut, "k", "a", 0, 10, "", false), op(regPut, "k", "b", 20, 30, "", false), op(regGet, "k", "", 40, 50, "a", false)}, porcupine.Illegal},
		{"concurrent read", []porcupine.Operation{
			op(regPut, "k", "a", 0, 10, "", false), op(regPut, "k", "b", 20, 30, "", false), op(regGet, "k", "", 25, 50, "a", false)}, porcupine.Ok},
		{"unknown write seen", []porcupine.Operation{op(regPut, "k", "a", 0, 0, "", true), op(regGet, "k", "", 20, 30, "a", false)}, porcupine.Ok},
		{"unknown write not seen", []porcupine.Operation{op(regPut, "k", "a", 0, 0, "", true), op(regGet, "k", "", 20, 30, "", false)}, porcupine.Ok},
		{"unknown write seen then not", []porcupine.Operation{
			op(regPut, "k", "a", 0, 0, "", true), op(regGet, "k", "", 20, 30, "a", false), op(regGet, "k", "", 40, 50, "", false)}, porcupine.Illegal},
		{"unknown write read before it was sent", []porcupine.Operation{op(regGet, "k", "", 0, 10, "a", false), op(regPut, "k", "a", 20, 0, "", true)}, porcupine.Illegal},
		{"swap", []porcupine.Operation{op(regPut, "k", "a", 0, 10, "", false), op(regSwap, "k", "b", 20, 30, "a", false), op(regGet, "k", "", 40, 50, "b", false)}, porcupine.Ok},
		{"lost swap", []porcupine.Operation{op(regPut, "k", "a", 0, 10, "", false), op(regSwap, "k", "b", 20, 30, "a", false), op(regSwap, "k", "c", 40, 50, "a", false)}, porcupine.Illegal},
		{"keys apart", []porcupine.Operation{op(regPut, "k", "a", 0, 10, "", false), op(regGet, "j", "", 20, 30, "", false)}, porcupine.Ok},
	} {
		if got := porcupine.CheckOperations(registerModel, patch(tc.ops)); (got && tc.want != porcupine.Ok) || (!got && tc.want == porcupine.Ok) {
			t.Errorf("%s: linearizable %v, want %s", tc.name, got, tc.want)
		}
	}
}
