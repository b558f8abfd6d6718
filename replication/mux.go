package replication

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// One port carries both Raft's traffic and kvd's own cluster calls
// (forwarded writes, read indexes, joins): the first byte a dialer sends
// names the protocol.
const (
	protoRaft    byte = 1
	protoCluster byte = 2
)

// mux accepts connections on the cluster port and hands each to Raft's
// stream layer or to the cluster call server, by its first byte.
type mux struct {
	ln        net.Listener
	advertise net.Addr
	local     net.Addr    // to dial other nodes from (localAddr)
	tls       *tls.Config // to dial other nodes with (Config.DialTLS); nil: plain TCP
	log       *slog.Logger
	raft      chan net.Conn
	cluster   func(net.Conn)

	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup

	// The cluster calls' connections, closed by close: a node closed must
	// not go on answering on connections other nodes keep.
	cmu   sync.Mutex
	conns map[net.Conn]struct{}
}

func newMux(ln net.Listener, advertise net.Addr, dialTLS *tls.Config, log *slog.Logger, cluster func(net.Conn)) *mux {
	m := &mux{ln: ln, advertise: advertise, local: localAddr(ln), tls: dialTLS, log: log,
		raft: make(chan net.Conn), cluster: cluster, closed: make(chan struct{})}
	m.wg.Add(1)
	go m.serve()
	return m
}

func (m *mux) serve() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: do not spin
			continue
		}
		go m.route(c)
	}
}

// route reads c's first byte, with a deadline so that a silent dialer does
// not hold a goroutine forever. On a TLS cluster port the handshake
// happens there too: a dialer without a certificate the cluster's CA
// issued gets no further.
func (m *mux) route(c net.Conn) {
	var b [1]byte
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, b[:]); err != nil {
		if _, ok := c.(*tls.Conn); ok && !errors.Is(err, io.EOF) {
			m.log.Warn("replication: cluster port: refused a connection", "remote", c.RemoteAddr().String(), "err", err)
		}
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	switch b[0] {
	case protoRaft:
		select {
		case m.raft <- c:
		case <-m.closed:
			c.Close()
		}
	case protoCluster:
		if !m.track(c) {
			c.Close()
			return
		}
		defer m.untrack(c)
		m.cluster(c)
	default:
		c.Close()
	}
}

// track registers a cluster connection, unless the mux is closed.
func (m *mux) track(c net.Conn) bool {
	m.cmu.Lock()
	defer m.cmu.Unlock()
	select {
	case <-m.closed:
		return false
	default:
	}
	if m.conns == nil {
		m.conns = map[net.Conn]struct{}{}
	}
	m.conns[c] = struct{}{}
	return true
}

func (m *mux) untrack(c net.Conn) {
	m.cmu.Lock()
	delete(m.conns, c)
	m.cmu.Unlock()
}

func (m *mux) close() error {
	var err error
	m.closeOnce.Do(func() {
		m.cmu.Lock()
		close(m.closed)
		for c := range m.conns {
			c.Close()
		}
		m.cmu.Unlock()
		err = m.ln.Close()
	})
	m.wg.Wait()
	return err
}

// raftLayer is Raft's view of the mux: a raft.StreamLayer.
type raftLayer struct{ m *mux }

func (l raftLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.m.raft:
		return c, nil
	case <-l.m.closed:
		return nil, net.ErrClosed
	}
}

func (l raftLayer) Close() error   { return l.m.close() }
func (l raftLayer) Addr() net.Addr { return l.m.advertise }

func (l raftLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return dialProto(l.m.local, l.m.tls, string(addr), protoRaft, timeout)
}

// localAddr is the address a node dials other nodes from: the IP its
// cluster port listens on, when that is one address (not all of them), so
// that other nodes, and the proxies of tests, see connections come from
// the node's own address.
func localAddr(ln net.Listener) net.Addr {
	a, ok := ln.Addr().(*net.TCPAddr)
	if !ok || a.IP == nil || a.IP.IsUnspecified() {
		return nil
	}
	return &net.TCPAddr{IP: a.IP}
}

// dialProto connects to the cluster port at addr, over TLS with tlsConf
// if not nil, and names the protocol it will speak.
func dialProto(local net.Addr, tlsConf *tls.Config, addr string, proto byte, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout, LocalAddr: local}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if tlsConf != nil {
		tc := tls.Client(c, tlsConf)
		tc.SetDeadline(time.Now().Add(timeout))
		if err := tc.Handshake(); err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		tc.SetDeadline(time.Time{})
		c = tc
	}
	if _, err := c.Write([]byte{proto}); err != nil {
		c.Close()
		return nil, fmt.Errorf("replication: dial %s: %w", addr, err)
	}
	return c, nil
}
