package client_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/engine"
)

func TestExpiry(t *testing.T) {
	e := startServer(t, engine.Options{})
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprint("protocol ", proto), func(t *testing.T) {
			ctx := t.Context()
			c := dial(t, e.addr, client.Options{Protocol: proto})
			k := fmt.Sprint("k", proto)

			if _, err := c.ExpiresAt(ctx, k); !errors.Is(err, client.ErrNotFound) {
				t.Fatalf("ExpiresAt of a missing key: %v, want ErrNotFound", err)
			}
			if ok, err := c.Expire(ctx, k, time.Hour); ok || err != nil {
				t.Fatalf("Expire of a missing key: %v, %v", ok, err)
			}
			before := time.Now()
			if err := c.PutWithTTL(ctx, k, []byte("v"), time.Hour); err != nil {
				t.Fatal(err)
			}
			at, err := c.ExpiresAt(ctx, k)
			if err != nil || at.Before(before.Add(time.Hour-time.Millisecond)) || at.After(time.Now().Add(time.Hour)) {
				t.Fatalf("ExpiresAt after PutWithTTL 1h: %v, %v", at, err)
			}
			want := time.UnixMilli(4102444800000)
			if ok, err := c.ExpireAt(ctx, k, want, client.WithDurability(client.DurabilitySync)); !ok || err != nil {
				t.Fatalf("ExpireAt: %v, %v", ok, err)
			}
			if at, err := c.ExpiresAt(ctx, k); err != nil || !at.Equal(want) {
				t.Fatalf("ExpiresAt after ExpireAt %v: %v, %v", want, at, err)
			}
			if ok, err := c.Persist(ctx, k); !ok || err != nil {
				t.Fatalf("Persist: %v, %v", ok, err)
			}
			if at, err := c.ExpiresAt(ctx, k); err != nil || !at.IsZero() {
				t.Fatalf("ExpiresAt after Persist: %v, %v; want the zero Time", at, err)
			}
			if ok, err := c.Persist(ctx, k); ok || err != nil {
				t.Fatalf("Persist without an expiry: %v, %v", ok, err)
			}
			if err := c.PutWithTTL(ctx, k, []byte("v"), 0); err == nil {
				t.Fatal("PutWithTTL with ttl 0 succeeded")
			}
			if err := c.PutWithTTL(ctx, k, []byte("v"), 20*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				_, err := c.Get(ctx, k)
				if errors.Is(err, client.ErrNotFound) {
					break
				}
				if err != nil || time.Now().After(deadline) {
					t.Fatalf("Get of a key put with a 20ms ttl: %v", err)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if ok, err := c.Expire(ctx, k, time.Hour); ok || err != nil {
				t.Fatalf("Expire of an expired key: %v, %v", ok, err)
			}
		})
	}
}
