package cluster

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// netem stands between the nodes: every node advertises (--raft-advertise)
// the address of its own proxy, which forwards to the node's real cluster
// port. Raft's traffic and kvd's cluster calls share that port, so both
// go through it. A node dials other nodes from the IP its cluster port
// listens on, so a proxy tells the dialing node by the connection's
// source IP.
//
// Links are directed, from the node that sends the bytes to the node that
// receives them. A link that is down refuses new connections in either
// direction between its two nodes and closes the ones open: TCP needs both
// directions, so a one-way cut stops a connection as a two-way one does
// (what stays one-way is the delay). A delayed link holds every chunk of
// bytes that long before forwarding it, without slowing the throughput.
type netem struct {
	t    testing.TB
	byIP map[string]string // source IP → node name

	mu    sync.Mutex
	down  map[link]bool
	delay map[link]time.Duration
	conns map[*proxyConn]struct{}
}

type link struct{ from, to string }

type proxyConn struct {
	from, to     string
	client, back net.Conn // client: the dialing node's; back: to the node
}

func (c *proxyConn) close() {
	c.client.Close()
	c.back.Close()
}

func newNetem(t testing.TB) *netem {
	return &netem{t: t, byIP: map[string]string{}, down: map[link]bool{}, delay: map[link]time.Duration{}, conns: map[*proxyConn]struct{}{}}
}

// proxy listens on ip:0 for the node named name, forwards what it accepts
// to target, and returns the address it listens on. It stops when the test
// ends.
func (e *netem) proxy(name, ip, target string) string {
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		e.t.Fatalf("proxy for %s: %v", name, err)
	}
	e.mu.Lock()
	e.byIP[ip] = name
	e.mu.Unlock()
	var wg sync.WaitGroup
	e.t.Cleanup(func() {
		ln.Close()
		e.mu.Lock()
		for c := range e.conns {
			if c.to == name {
				c.close()
			}
		}
		e.mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				e.serve(c, name, target)
			}()
		}
	}()
	return ln.Addr().String()
}

func (e *netem) serve(client net.Conn, to, target string) {
	from := "?"
	if a, ok := client.RemoteAddr().(*net.TCPAddr); ok {
		e.mu.Lock()
		if n, ok := e.byIP[a.IP.String()]; ok {
			from = n
		}
		e.mu.Unlock()
	}
	if e.cut(from, to) {
		client.Close()
		return
	}
	back, err := net.DialTimeout("tcp", target, time.Second)
	if err != nil {
		client.Close()
		return
	}
	c := &proxyConn{from: from, to: to, client: client, back: back}
	e.mu.Lock()
	if e.down[link{from, to}] || e.down[link{to, from}] {
		e.mu.Unlock()
		c.close()
		return
	}
	e.conns[c] = struct{}{}
	e.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); e.pipe(c, back, client, link{from, to}) }()
	go func() { defer wg.Done(); e.pipe(c, client, back, link{to, from}) }()
	wg.Wait()
	e.mu.Lock()
	delete(e.conns, c)
	e.mu.Unlock()
}

type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies src to dst, holding each chunk for l's delay; it closes
// both ends of c when either fails or l goes down.
func (e *netem) pipe(c *proxyConn, dst, src net.Conn, l link) {
	ch := make(chan chunk, 1024)
	go func() {
		defer close(ch)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				ch <- chunk{b[:n], time.Now()}
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		c.close()
		for range ch { // let the reader end: the close unblocks its Read
		}
	}()
	for k := range ch {
		e.mu.Lock()
		down, d := e.down[l], e.delay[l]
		e.mu.Unlock()
		if down {
			return
		}
		if wait := time.Until(k.at.Add(d)); wait > 0 {
			time.Sleep(wait)
		}
		if _, err := dst.Write(k.b); err != nil {
			return
		}
	}
}

func (e *netem) cut(a, b string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.down[link{a, b}] || e.down[link{b, a}]
}

// setDown takes the directed link from→to down (or up), closing the
// connections between the two nodes when it goes down.
func (e *netem) setDown(from, to string, down bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.down[link{from, to}] = down
	if !down {
		return
	}
	for c := range e.conns {
		if (c.from == from && c.to == to) || (c.from == to && c.to == from) {
			c.close()
		}
	}
}

// setDelay delays the bytes that from sends to to by d.
func (e *netem) setDelay(from, to string, d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.delay[link{from, to}] = d
}

// partition cuts every link between a node of one group and a node of
// another, both ways.
func (e *netem) partition(groups ...[]string) {
	for i, g := range groups {
		for _, h := range groups[i+1:] {
			for _, a := range g {
				for _, b := range h {
					e.setDown(a, b, true)
					e.setDown(b, a, true)
				}
			}
		}
	}
}

// heal brings every link up and removes every delay.
func (e *netem) heal() {
	e.mu.Lock()
	defer e.mu.Unlock()
	clear(e.down)
	clear(e.delay)
}

// TestNetem checks the proxy itself: it forwards, tells the source node by
// its IP, refuses and closes connections on a cut link, and delays.
func TestNetem(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.12:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	e := newNetem(t)
	e.byIP["127.0.0.11"] = "a"
	addr := e.proxy("b", "127.0.0.12", echo.Addr().String())
	dial := func() net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.11")}, Timeout: time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		return c
	}
	roundTrip := func(c net.Conn) error {
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		b := make([]byte, 4)
		_, err := io.ReadFull(c, b)
		if err == nil && string(b) != "ping" {
			t.Fatalf("echo through the proxy: %q", b)
		}
		return err
	}
	c := dial()
	if err := roundTrip(c); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	e.mu.Lock()
	var from string
	for pc := range e.conns {
		from = pc.from
	}
	e.mu.Unlock()
	if from != "a" {
		t.Fatalf("the proxy took a connection from 127.0.0.11 as coming from %q, want a", from)
	}

	e.setDown("b", "a", true) // the reverse direction cuts it too
	if err := roundTrip(c); err == nil {
		t.Fatal("a connection survived its link going down")
	}
	if err := roundTrip(dial()); err == nil {
		t.Fatal("a connection over a cut link went through")
	}

	e.heal()
	e.setDelay("a", "b", 200*time.Millisecond)
	c = dial()
	start := time.Now()
	if err := roundTrip(c); err != nil {
		t.Fatalf("after heal: %v", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("a round trip over a link delayed 200ms took %v", d)
	}
}
