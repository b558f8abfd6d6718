package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	"sync"
	"testing"
	"time"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/internal/kvtest"
)

// TestTenThousandIdleConnections opens 10,000 idle connections against a
// server that admits 5,000: the rest get Redis's error and are closed, the
// admitted ones stay open, and the server keeps serving.
func TestTenThousandIdleConnections(t *testing.T) {
	const limit, total = 5000, 10000
	p := startKVD(t, "", "--max-clients", fmt.Sprint(limit))
	conns := make([]net.Conn, total)
	var wg sync.WaitGroup
	errs := make(chan error, total)
	next := make(chan int)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := net.DialTimeout("tcp", p.RESPAddr, 10*time.Second)
				if err != nil {
					errs <- err
					continue
				}
				conns[i] = c
			}
		}()
	}
	for i := range total {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	for err := range errs {
		t.Fatalf("dial: %v", err)
	}
	// The server admits exactly the limit.
	var st int
	if !kvtest.WaitFor(20*time.Second, 20*time.Millisecond, func() bool { st = status(t, p.HTTPAddr); return st == limit }) {
		t.Fatalf("server reports %d connected clients, want %d", st, limit)
	}
	// Every connection over the limit was told why and closed; the others
	// are open and silent.
	var mu sync.Mutex
	refused, idle := 0, 0
	var bad []string
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := conns[i]
			c.SetReadDeadline(time.Now().Add(time.Second))
			b, err := io.ReadAll(c)
			mu.Lock()
			defer mu.Unlock()
			var ne net.Error
			switch {
			case err == nil && string(b) == "-ERR max number of clients reached\r\n":
				refused++
			case errors.As(err, &ne) && ne.Timeout() && len(b) == 0:
				idle++
			default:
				if len(bad) < 5 {
					bad = append(bad, fmt.Sprintf("%q %v", b, err))
				}
			}
		}()
	}
	wg.Wait()
	if refused != total-limit || idle != limit {
		t.Fatalf("%d refused, %d idle, want %d and %d; unexpected: %v", refused, idle, total-limit, limit, bad)
	}
	// Free one slot: a client gets in and is served.
	for _, c := range conns {
		c.Close()
		break
	}
	var err error
	served := kvtest.WaitFor(10*time.Second, 20*time.Millisecond, func() bool {
		var c *client.Client
		c, err = client.Dial(t.Context(), p.RESPAddr, client.Options{PoolSize: 1})
		if err == nil {
			err = c.Put(t.Context(), "after-many", []byte("ok"))
			c.Close()
		}
		return err == nil
	})
	if !served {
		t.Fatalf("no client served after a slot was freed: %v", err)
	}
}

func status(t *testing.T, httpAddr string) int {
	t.Helper()
	var st struct {
		ConnectedClients int `json:"connected_clients"`
	}
	if err := kvtest.GetJSON(t.Context(), http.DefaultClient, "http://"+httpAddr+"/v1/status", &st); err != nil {
		t.Fatal(err)
	}
	return st.ConnectedClients
}
