package e2e

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kvdstore/kvd/client"
)

// TestRestartKeepsAcknowledgedWrites writes from several clients in sync
// mode, stops kvd in the middle of the writes (SIGTERM, then SIGKILL), and
// checks after a restart that every acknowledged write is there.
func TestRestartKeepsAcknowledgedWrites(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			// Small segments and checkpoints, so that segments roll and the
			// log front is truncated while the writers run.
			p := startKVD(t, dir, "--commit-mode", "sync", "--segment-size", "16KiB",
				"--checkpoint-bytes", "8KiB", "--checkpoint-interval", "50ms")
			acked := writeUntilStopped(t, p.RESPAddr, func() {
				code := stop(t, p, sig)
				if sig == syscall.SIGTERM && code != 0 {
					t.Errorf("kvd exited %d on SIGTERM, want 0\n%s", code, p.Log())
				}
			})
			if len(acked) == 0 {
				t.Fatal("no write was acknowledged")
			}

			p2 := startKVD(t, dir)
			c, err := client.Dial(t.Context(), p2.RESPAddr, client.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for k, want := range acked {
				got, err := c.Get(t.Context(), k)
				if err != nil || string(got) != want {
					t.Fatalf("after %v: acknowledged %s=%s, got %q, %v", sig, k, want, got, err)
				}
			}
			t.Logf("%d acknowledged writes survived %v", len(acked), sig)
		})
	}
}

// writeUntilStopped runs 8 writers against addr; once they have 300
// acknowledged writes it calls stop (while they keep writing) and returns
// every write that was acknowledged.
func writeUntilStopped(t *testing.T, addr string, stop func()) map[string]string {
	t.Helper()
	c, err := client.Dial(t.Context(), addr, client.Options{PoolSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var mu sync.Mutex
	acked := make(map[string]string)
	enough := make(chan struct{})
	var once sync.Once
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				k, v := fmt.Sprintf("w%d:%05d", w, i), fmt.Sprintf("value-%d-%d", w, i)
				var err error
				if i%3 == 0 {
					err = c.PutMany(ctx, []client.KV{{Key: k, Value: []byte(v)}, {Key: k + ":b", Value: []byte(v)}})
				} else {
					err = c.Put(ctx, k, []byte(v))
				}
				if err != nil {
					var se *client.ServerError
					if errors.As(err, &se) {
						t.Errorf("write %s: server error %v", k, err)
					}
					return
				}
				mu.Lock()
				acked[k] = v
				if i%3 == 0 {
					acked[k+":b"] = v
				}
				if len(acked) >= 300 {
					once.Do(func() { close(enough) })
				}
				mu.Unlock()
			}
		}()
	}
	select {
	case <-enough:
	case <-ctx.Done():
		t.Fatal("writers did not reach 300 acknowledged writes")
	}
	stop()
	wg.Wait()
	return acked
}
