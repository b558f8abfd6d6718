package server_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestMixedPipelines sends pipelines of interleaved GETs and SETs (sync and
// async) and checks every reply: each GET sees the SETs before it, even in
// the same pipeline, and every pipeline is answered. The event loop parks a
// connection on each SET run's commit and must resume it with the commands
// it has already read; losing track of buffered input shows up here as a
// reply that never comes (the read deadline fails the test).
func TestMixedPipelines(t *testing.T) {
	ts := startServer(t, serverOpts{})
	c := dialRaw(t, ts.respAddr)
	rng := rand.New(rand.NewPCG(1, 2))
	model := map[string]string{}
	for round := range 300 {
		n := 1 + rng.IntN(9)
		var req strings.Builder
		want := make([]string, n)
		for i := range n {
			key := fmt.Sprintf("k%d", rng.IntN(8))
			switch rng.IntN(3) {
			case 0:
				if v, ok := model[key]; ok {
					want[i] = fmt.Sprintf("$%d\r\n%s\r\n", len(v), v)
				} else {
					want[i] = "$-1\r\n"
				}
				req.WriteString(encode("GET", key))
			default:
				v := fmt.Sprintf("%d-%d-%s", round, i, strings.Repeat("v", rng.IntN(200)))
				model[key] = v
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
}
