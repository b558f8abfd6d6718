package e2e

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/internal/kvtest"
)

// TestExpiryAcrossRestarts sets keys with expiries in each commit mode,
// stops kvd cleanly (SIGTERM: the expiries go into the state file) or
// kills it (SIGKILL: they are replayed from the log), and checks after a
// restart that every expiry is as it was, that a key removed before the
// stop stays removed, and that a key due while kvd is down or after the
// restart expires.
func TestExpiryAcrossRestarts(t *testing.T) {
	for _, mode := range []string{"sync", "async"} {
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
			t.Run(mode+" "+sig.String(), func(t *testing.T) {
				dir := t.TempDir()
				args := []string{"--commit-mode", mode, "--checkpoint-interval", "1h"}
				p := startKVD(t, dir, args...)
				ctx := t.Context()
				c, err := client.Dial(ctx, p.RESPAddr, client.Options{})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				at2100 := time.UnixMilli(4102444800000)
				must := func(err error) {
					t.Helper()
					if err != nil {
						t.Fatal(err)
					}
				}
				must(c.PutWithTTL(ctx, "long", []byte("1"), time.Hour))
				must(c.Put(ctx, "abs", []byte("2")))
				if ok, err := c.ExpireAt(ctx, "abs", at2100); !ok || err != nil {
					t.Fatalf("ExpireAt: %v, %v", ok, err)
				}
				must(c.PutWithTTL(ctx, "persisted", []byte("3"), time.Hour))
				if ok, err := c.Persist(ctx, "persisted"); !ok || err != nil {
					t.Fatalf("Persist: %v, %v", ok, err)
				}
				must(c.PutWithTTL(ctx, "gone", []byte("4"), 10*time.Millisecond))
				must(c.PutWithTTL(ctx, "soon", []byte("5"), 1500*time.Millisecond))
				long, err := c.ExpiresAt(ctx, "long")
				must(err)
				soon, err := c.ExpiresAt(ctx, "soon")
				must(err)
				kvtest.Eventually(t, 10*time.Second, "gone to expire", func() bool {
					_, err := c.Get(ctx, "gone")
					return errors.Is(err, client.ErrNotFound)
				})
				c.Close()
				if code := stop(t, p, sig); sig == syscall.SIGTERM && code != 0 {
					t.Fatalf("kvd exited %d on SIGTERM\n%s", code, p.Log())
				}

				p = startKVD(t, dir, args...)
				c, err = client.Dial(ctx, p.RESPAddr, client.Options{})
				must(err)
				for key, want := range map[string]time.Time{"long": long, "abs": at2100, "persisted": {}, "soon": soon} {
					got, err := c.ExpiresAt(ctx, key)
					if errors.Is(err, client.ErrNotFound) && key == "soon" && time.Now().After(soon) {
						continue // due while kvd restarted
					}
					if err != nil || !got.Equal(want) {
						t.Errorf("after %v: %s expires at %v, %v; want %v", sig, key, got, err, want)
					}
				}
				if _, err := c.Get(ctx, "gone"); !errors.Is(err, client.ErrNotFound) {
					t.Errorf("after %v: Get(gone) = %v, want not found", sig, err)
				}
				kvtest.Eventually(t, 10*time.Second, "soon to expire", func() bool {
					_, err := c.Get(ctx, "soon")
					return errors.Is(err, client.ErrNotFound)
				})
				if v, err := c.Get(ctx, "long"); err != nil || string(v) != "1" {
					t.Errorf("after %v: Get(long) = %q, %v", sig, v, err)
				}
			})
		}
	}
}
