package server_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/server"
)

// TestMixedPipelines sends pipelines of interleaved GETs and SETs (sync and
// async) and checks every reply: each GET sees the SETs before it, even in
// the same pipeline, and every pipeline is answered. The event loop parks a
// connection on each SET run's commit and must resume it with the commands
// it has already read; losing track of buffered input shows up here as a
// reply that never comes (the read deadline fails the test).
func TestMixedPipelines(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		c := dialRaw(t, ts.respAddr)
		rng := rand.New(rand.NewPCG(1, 2))
		values := map[string]string{}
		for round := range 300 {
			n := 1 + rng.IntN(9)
			var req strings.Builder
			want := make([]string, n)
			for i := range n {
				key := fmt.Sprintf("k%d", rng.IntN(8))
				switch rng.IntN(3) {
				case 0:
					if v, ok := values[key]; ok {
						want[i] = fmt.Sprintf("$%d\r\n%s\r\n", len(v), v)
					} else {
						want[i] = "$-1\r\n"
					}
					req.WriteString(encode("GET", key))
				default:
					v := fmt.Sprintf("%d-%d-%s", round, i, strings.Repeat("v", rng.IntN(200)))
					values[key] = v
					want[i] = ok
					if rng.IntN(2) == 0 {
						req.WriteString(encode("SET", key, v))
					} else {
						req.WriteString(encode("SET", key, v, []string{"SYNC", "ASYNC"}[rng.IntN(2)]))
					}
				}
			}
			c.sendRaw(req.String())
			for i := range n {
				if got := c.reply(); got != want[i] {
					t.Fatalf("round %d, command %d of %d: got %q, want %q", round, i, n, got, want[i])
				}
			}
		}
	})
}

// TestSmallReplyAfterLargeOne: a reply over 1 MiB makes the connection
// drop its grown reply buffer once it is written; the small replies after
// it, in the same pipeline, must still be sent.
func TestSmallReplyAfterLargeOne(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model, cfg: server.Config{MaxValueSize: 4 << 20}})
		c := dialRaw(t, ts.respAddr)
		big := strings.Repeat("b", 2<<20)
		if got := c.do("SET", "big", big); got != ok {
			t.Fatalf("SET = %q", got)
		}
		for i := range 3 {
			c.sendRaw(encode("GET", "big") + encode("PING"))
			if got := c.reply(); got != bulk(big) {
				t.Fatalf("round %d: GET big = %d bytes", i, len(got))
			}
			if got := c.reply(); got != "+PONG\r\n" {
				t.Fatalf("round %d: PING after the large reply = %q", i, got)
			}
		}
	})
}

// TestGetValueSizes: GET writes values straight from the store's lookup
// into the reply. Pipelined GETs of values from 0 bytes to 100 KiB, and of
// missing keys, each get their own value.
func TestGetValueSizes(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		c := dialRaw(t, ts.respAddr)
		vals := map[string]string{
			"big":   strings.Repeat("b", 100<<10),
			"small": "s",
			"mid":   strings.Repeat("m", 70<<10),
			"empty": "",
			"tiny":  "t",
		}
		for k, v := range vals {
			if got := c.do("SET", k, v); got != ok {
				t.Fatalf("SET %s = %q", k, got)
			}
		}
		keys := []string{"small", "big", "small", "missing", "mid", "empty", "tiny", "big", "tiny"}
		var req strings.Builder
		for _, k := range keys {
			req.WriteString(encode("GET", k))
		}
		req.WriteString(encode("EXISTS", "big", "missing", "small"))
		req.WriteString(encode("GET", "small"))
		c.sendRaw(req.String())
		for _, k := range keys {
			want := "$-1\r\n"
			if v, found := vals[k]; found {
				want = bulk(v)
			}
			if got := c.reply(); got != want {
				t.Fatalf("GET %s: got %d bytes %.40q, want %d bytes %.40q", k, len(got), got, len(want), want)
			}
		}
		if got := c.reply(); got != integer(2) {
			t.Fatalf("EXISTS = %q, want 2", got)
		}
		if got := c.reply(); got != bulk("s") {
			t.Fatalf("GET small after EXISTS = %q", got)
		}
	})
}

// TestMGetIsAtomic: MSET and DEL of two keys are atomic batches, and MGET
// and EXISTS, served on another connection meanwhile, see either all of one
// or none of it: both keys with the same value, or neither. Checkpoints run
// throughout, so lookups also fall on the moments the state file changes.
func TestMGetIsAtomic(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model, engine: engine.Options{CommitMode: engine.CommitAsync, CheckpointLogBytes: 16 << 10}})
		w, r := dialRaw(t, ts.respAddr), dialRaw(t, ts.respAddr)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := range 2000 {
				if i%5 == 4 {
					w.send("DEL", "a", "b")
				} else {
					v := fmt.Sprintf("%d-%s", i, strings.Repeat("v", i%300))
					w.send("MSET", "a", v, "b", v)
				}
				w.reply()
			}
		}()
		var reads, both, neither int
		var bad string
		for running := true; running && bad == ""; {
			select {
			case <-done:
				running = false
			default:
			}
			r.send("MGET", "a", "b")
			r.send("EXISTS", "a", "b")
			got, exists := r.reply(), r.reply()
			reads++
			switch {
			case got == "*2\r\n$-1\r\n$-1\r\n":
				neither++
			case strings.HasPrefix(got, "*2\r\n$"):
				rest := strings.TrimPrefix(got, "*2\r\n")
				if half := len(rest) / 2; rest[:half] != rest[half:] {
					bad = fmt.Sprintf("MGET a b = %q: the two keys differ", got)
				}
				both++
			default:
				bad = fmt.Sprintf("MGET a b = %q: part of a batch", got)
			}
			if exists != integer(0) && exists != integer(2) {
				bad = fmt.Sprintf("EXISTS a b = %q: part of a batch", exists)
			}
		}
		<-done // the writer uses the test's connection until it is done
		if bad != "" {
			t.Fatalf("read %d: %s", reads, bad)
		}
		if both == 0 || neither == 0 {
			t.Fatalf("%d reads saw both keys %d times and neither %d times: the reads did not overlap the writes", reads, both, neither)
		}
		if ts.db.Stats().Checkpoints == 0 {
			t.Fatal("no checkpoint ran")
		}
		t.Logf("%d reads: both keys %d, neither %d; %d checkpoints", reads, both, neither, ts.db.Stats().Checkpoints)
	})
}
