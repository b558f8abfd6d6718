package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/faults"
	"github.com/kvdstore/kvd/internal/kvtest"
	"github.com/kvdstore/kvd/server"
)

type env struct {
	db   *engine.DB
	addr string
}

// startServer runs a kvd server over a real engine in a temporary directory.
func startServer(t *testing.T, eo engine.Options) env {
	t.Helper()
	return startServerIn(t, t.TempDir(), eo, nil)
}

// startServerIn is startServer on the data directory dir, with syncFile (if
// not nil) replacing the fsync of the log's segments.
func startServerIn(t *testing.T, dir string, eo engine.Options, syncFile func(*os.File) error) env {
	t.Helper()
	if syncFile != nil {
		t.Cleanup(faults.Set(dir, faults.Hooks{SyncFile: syncFile}))
	}
	eo.MaxValueSize = 1000
	db, err := engine.Open(dir, eo)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(db, server.Config{MaxKeySize: 100, MaxValueSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeRESP(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, server.ErrServerClosed) {
			t.Errorf("ServeRESP: %v", err)
		}
		db.Close()
	})
	return env{db, ln.Addr().String()}
}

func dial(t *testing.T, addr string, o client.Options) *client.Client {
	t.Helper()
	c, err := client.Dial(t.Context(), addr, o)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestPutGetDelete(t *testing.T) {
	e := startServer(t, engine.Options{})
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprint("protocol ", proto), func(t *testing.T) {
			ctx := t.Context()
			c := dial(t, e.addr, client.Options{Protocol: proto})
			key := fmt.Sprint("k", proto)
			if err := c.Put(ctx, key, []byte("v\x00\r\n")); err != nil {
				t.Fatalf("Put: %v", err)
			}
			if v, err := c.Get(ctx, key); err != nil || string(v) != "v\x00\r\n" {
				t.Fatalf("Get = %q, %v", v, err)
			}
			if existed, err := c.Delete(ctx, key); err != nil || !existed {
				t.Fatalf("Delete = %v, %v", existed, err)
			}
			if existed, err := c.Delete(ctx, key); err != nil || existed {
				t.Fatalf("Delete again = %v, %v", existed, err)
			}
			if _, err := c.Get(ctx, key); !errors.Is(err, client.ErrNotFound) {
				t.Fatalf("Get deleted: %v, want ErrNotFound", err)
			}
		})
	}
}

func TestErrorsMapBack(t *testing.T) {
	e := startServer(t, engine.Options{})
	ctx := t.Context()
	c := dial(t, e.addr, client.Options{})
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"value too large", c.Put(ctx, "k", make([]byte, 1001)), client.ErrValueTooLarge},
		{"key too large", c.Put(ctx, strings.Repeat("k", 101), []byte("v")), client.ErrKeyTooLarge},
		{"empty key", c.Put(ctx, "", []byte("v")), client.ErrEmptyKey},
		{"put many value too large", c.PutMany(ctx, []client.KV{{"a", nil}, {"b", make([]byte, 5000)}}), client.ErrValueTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !errors.Is(tc.err, tc.want) {
				t.Fatalf("err = %v, want %v", tc.err, tc.want)
			}
			var se *client.ServerError
			if !errors.As(tc.err, &se) || !strings.HasPrefix(se.Msg, "ERR ") {
				t.Fatalf("err %v is not a *ServerError", tc.err)
			}
		})
	}
	if v, err := c.Get(ctx, "b"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("half of a refused PutMany was stored: %q, %v", v, err)
	}
}

// TestLogErrorsMapBack checks that the server's replies for a refused
// write, a write of unknown outcome and a failed log map to distinct
// client errors.
func TestLogErrorsMapBack(t *testing.T) {
	if kvtest.InSubprocess(t) {
		return
	}
	var failSync atomic.Bool
	e := startServerIn(t, t.TempDir(), engine.Options{Preallocate: -1}, func(f *os.File) error {
		if failSync.Load() {
			return errors.New("injected fsync failure")
		}
		return f.Sync()
	})
	ctx := t.Context()
	c := dial(t, e.addr, client.Options{})
	if err := c.Put(ctx, "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	// The log's one segment file cannot take the next record.
	kvtest.FileLimit(t, uint64(e.db.Stats().WALBytes)+100)
	err := c.Put(ctx, "b", make([]byte, 900))
	if !errors.Is(err, client.ErrWriteRefused) || errors.Is(err, client.ErrLogFailed) || errors.Is(err, client.ErrOutcomeUnknown) {
		t.Fatalf("Put refused by the log: %v, want ErrWriteRefused alone", err)
	}
	kvtest.FileLimit(t, 0)
	failSync.Store(true)
	err = c.Put(ctx, "c", []byte("3"))
	if !errors.Is(err, client.ErrOutcomeUnknown) || errors.Is(err, client.ErrLogFailed) || errors.Is(err, client.ErrWriteRefused) {
		t.Fatalf("Put whose fsync failed: %v, want ErrOutcomeUnknown alone", err)
	}
	err = c.Put(ctx, "d", []byte("4"))
	if !errors.Is(err, client.ErrLogFailed) || errors.Is(err, client.ErrOutcomeUnknown) || errors.Is(err, client.ErrWriteRefused) {
		t.Fatalf("Put after the log failed: %v, want ErrLogFailed alone", err)
	}
}

func TestDurability(t *testing.T) {
	// Async default with a flush interval no test outlives: only explicit
	// sync writes and Sync make writes durable.
	e := startServer(t, engine.Options{CommitMode: engine.CommitAsync, FlushInterval: 1 << 62})
	ctx := t.Context()
	durable := func() bool {
		st := e.db.Stats()
		return st.DurableRevision == st.WrittenRevision
	}
	c := dial(t, e.addr, client.Options{})
	if err := c.Put(ctx, "a", []byte("1")); err != nil || durable() {
		t.Fatalf("default Put: err=%v durable=%v, want not durable", err, durable())
	}
	if err := c.Put(ctx, "b", []byte("2"), client.WithDurability(client.DurabilitySync)); err != nil || !durable() {
		t.Fatalf("sync Put: err=%v durable=%v", err, durable())
	}
	c.Put(ctx, "c", []byte("3"))
	if _, err := c.Delete(ctx, "c", client.WithDurability(client.DurabilitySync)); err != nil || !durable() {
		t.Fatalf("sync Delete: err=%v durable=%v", err, durable())
	}
	c.Put(ctx, "d", []byte("4"))
	if err := c.Sync(ctx); err != nil || !durable() {
		t.Fatalf("Sync: err=%v durable=%v", err, durable())
	}

	syncClient := dial(t, e.addr, client.Options{Durability: client.DurabilitySync})
	if err := syncClient.PutMany(ctx, []client.KV{{"x", []byte("1")}, {"y", []byte("2")}}); err != nil || !durable() {
		t.Fatalf("PutMany with a sync client: err=%v durable=%v", err, durable())
	}
	if err := syncClient.Put(ctx, "z", []byte("1"), client.WithDurability(client.DurabilityAsync)); err != nil || durable() {
		t.Fatalf("async override: err=%v durable=%v", err, durable())
	}

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.CommitMode != "async" || st.Written == 0 || st.Durable >= st.Written || st.Fsyncs == 0 ||
		st.ConnectedClients < 1 || st.LogFailed {
		t.Errorf("Status = %+v", st)
	}
}

func TestScan(t *testing.T) {
	e := startServer(t, engine.Options{})
	ctx := t.Context()
	c := dial(t, e.addr, client.Options{})
	var want []string
	var kvs []client.KV
	for i := range 2500 {
		k := fmt.Sprintf("s:%04d", i)
		want = append(want, k)
		kvs = append(kvs, client.KV{Key: k, Value: []byte(fmt.Sprint(i))})
	}
	kvs = append(kvs, client.KV{Key: "t*[x]", Value: []byte("glob")}, client.KV{Key: "t1", Value: []byte("1")})
	if err := c.PutMany(ctx, kvs); err != nil {
		t.Fatal(err)
	}
	keys := func(kvs []client.KV) []string {
		var out []string
		for _, kv := range kvs {
			out = append(out, kv.Key)
		}
		return out
	}
	tests := []struct {
		name string
		opts client.ScanOptions
		want []string
	}{
		{"prefix", client.ScanOptions{Prefix: "s:"}, want},
		{"limit", client.ScanOptions{Prefix: "s:", Limit: 1001}, want[:1001]},
		{"glob characters in prefix", client.ScanOptions{Prefix: "t*["}, []string{"t*[x]"}},
		{"all", client.ScanOptions{Limit: 3}, want[:3]},
		{"none", client.ScanOptions{Prefix: "zz"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.Scan(ctx, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(keys(got), tc.want) {
				t.Fatalf("got %d keys %.80v, want %d", len(got), keys(got), len(tc.want))
			}
		})
	}
	got, err := c.Scan(ctx, client.ScanOptions{Prefix: "s:00", Values: true, Limit: 5})
	if err != nil || len(got) != 5 || string(got[4].Value) != "4" {
		t.Fatalf("Scan with values = %v, %v", got, err)
	}
}

func TestPipeline(t *testing.T) {
	e := startServer(t, engine.Options{})
	ctx := t.Context()
	c := dial(t, e.addr, client.Options{})
	p := c.Pipeline()
	before := e.db.Stats().WrittenRevision
	for i := range 50 {
		p.Put(fmt.Sprint("p", i), []byte(fmt.Sprint(i)))
	}
	p.Get("p7")
	p.Get("missing")
	p.Put("big", make([]byte, 2000))
	p.Delete("p1")
	if p.Len() != 54 {
		t.Fatalf("Len = %d", p.Len())
	}
	res, err := p.Exec(ctx)
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	for i := range 50 {
		if res[i].Err != nil {
			t.Fatalf("put %d: %v", i, res[i].Err)
		}
	}
	if string(res[50].Value) != "7" || res[50].Err != nil {
		t.Errorf("get p7 = %q, %v", res[50].Value, res[50].Err)
	}
	if !errors.Is(res[51].Err, client.ErrNotFound) {
		t.Errorf("get missing: %v", res[51].Err)
	}
	if !errors.Is(res[52].Err, client.ErrValueTooLarge) {
		t.Errorf("put big: %v", res[52].Err)
	}
	if !res[53].Deleted || res[53].Err != nil {
		t.Errorf("delete p1 = %+v", res[53])
	}
	if commits := e.db.Stats().WrittenRevision - before; commits > 10 {
		t.Errorf("50 pipelined puts took %d commits, want them batched", commits)
	}
	if p.Len() != 0 {
		t.Errorf("pipeline not empty after Exec")
	}
}

func TestDialAndClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = client.Dial(t.Context(), addr, client.Options{})
	var oe *client.OpError
	if !errors.As(err, &oe) || !strings.Contains(oe.Op, "dial") {
		t.Errorf("Dial to a closed port: %v, want *OpError", err)
	}
	if _, err := client.Dial(t.Context(), addr, client.Options{Durability: 7}); err == nil {
		t.Errorf("Dial with a bad durability succeeded")
	}

	e := startServer(t, engine.Options{})
	c, err := client.Dial(t.Context(), e.addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(t.Context(), "k"); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	c2 := dial(t, e.addr, client.Options{})
	if err := c2.Put(ctx, "k", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a canceled context: %v", err)
	}
}

func TestParseDurability(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want client.Durability
		ok   bool
	}{{"sync", client.DurabilitySync, true}, {"ASYNC", client.DurabilityAsync, true},
		{"", client.DurabilityDefault, true}, {"default", client.DurabilityDefault, true}, {"later", 0, false}} {
		got, err := client.ParseDurability(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseDurability(%q) = %v, %v", tc.in, got, err)
		}
	}
}
