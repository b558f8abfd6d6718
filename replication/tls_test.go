package replication

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/kvtest"
	"github.com/kvdstore/kvd/internal/tlsfiles"
)

// clusterTLS returns the cluster port's configurations of a node with
// the certificate is, trusting the CA in caFile.
func clusterTLS(t *testing.T, is kvtest.Issued, caFile string) (server, dial *tls.Config) {
	t.Helper()
	set, err := tlsfiles.Load(tlsfiles.Files{Cert: is.CertFile, Key: is.KeyFile, CA: caFile, Name: "cluster tls"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if server, err = set.ServerConfig(tls.RequireAndVerifyClientCert); err != nil {
		t.Fatal(err)
	}
	if dial, err = set.PeerConfig(); err != nil {
		t.Fatal(err)
	}
	return server, dial
}

// logBuffer collects a node's log.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestClusterMutualTLS: three nodes whose certificates the cluster's CA
// issued form a cluster over TLS and replicate; a node whose certificate
// another CA issued cannot join, whether it trusts that other CA (it
// refuses the members) or the cluster's (the members refuse it), and
// the members log the refusal.
func TestClusterMutualTLS(t *testing.T) {
	ca := kvtest.NewCA(t, "cluster")
	var nodes []*Node
	var logs []*logBuffer
	open := func(name string, is kvtest.Issued, caFile string, join string) *Node {
		t.Helper()
		cfg := testNodeConfig(filepath.Join(t.TempDir(), name))
		cfg.NodeID = name
		cfg.ServerTLS, cfg.DialTLS = clusterTLS(t, is, caFile)
		lb := &logBuffer{}
		cfg.Logger = slog.New(slog.NewTextHandler(lb, nil))
		if join == "" {
			cfg.Bootstrap = true
		} else {
			cfg.Join = []string{join}
		}
		n, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		logs = append(logs, lb)
		return n
	}
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		join := ""
		if i > 0 {
			join = nodes[0].ClusterAddr()
		}
		nodes = append(nodes, open(name, ca.Issue(t, name, kvtest.CertOptions{}), ca.File, join))
		if i == 0 {
			kvtest.Eventually(t, 10*time.Second, "n1 to lead", nodes[0].IsLeader)
		}
	}
	kvtest.Eventually(t, 30*time.Second, "three members", func() bool {
		ms, err := nodes[0].Members()
		return err == nil && len(ms) == 3
	})
	// A write on a follower goes to the leader over the cluster port and
	// comes back to every node through Raft.
	rev := put(t, nodes[2].Store(Linearizable), "k", "over tls", engine.DurabilitySync)
	for i, n := range nodes {
		e, err := n.Store(Linearizable).GetEntry([]byte("k"))
		if err != nil || string(e.Value) != "over tls" || e.ModRevision != rev {
			t.Fatalf("node %d: %q at %d, %v; want \"over tls\" at %d", i+1, e.Value, e.ModRevision, err, rev)
		}
	}

	other := kvtest.NewCA(t, "other")
	for _, tc := range []struct {
		name, caFile string
		want         string // in the stranger's log, if set
	}{
		// Trusting its own CA, the stranger refuses the members' certificates.
		{"stranger", other.File, "certificate signed by unknown authority"},
		// Trusting the cluster's CA, it is refused by the members. Its own
		// log may say why ("remote error: tls: ...") or not: under TLS 1.3
		// its side of the handshake is over before the member checks its
		// certificate, and its first write may meet the closed connection
		// ("broken pipe") before it reads the member's alert. The member's
		// log says it refused the connection.
		{"sneaky", ca.File, ""},
	} {
		before := len(logs[0].String())
		n := open(tc.name, other.Issue(t, tc.name, kvtest.CertOptions{}), tc.caFile, nodes[0].ClusterAddr())
		lb := logs[len(logs)-1]
		kvtest.Eventually(t, 30*time.Second, tc.name+" to fail a join", func() bool {
			return strings.Contains(lb.String(), "join failed")
		})
		if l := lb.String(); tc.want != "" && !strings.Contains(l, tc.want) {
			t.Errorf("%s's log does not say %q:\n%s", tc.name, tc.want, l)
		}
		if tc.name == "sneaky" {
			kvtest.Eventually(t, 30*time.Second, "n1 to log the refusal", func() bool {
				return strings.Contains(logs[0].String()[before:], "cluster port: refused a connection")
			})
		}
		ms, err := nodes[0].Members()
		if err != nil || len(ms) != 3 {
			t.Fatalf("members after %s's join: %v, %v; want the three", tc.name, ms, err)
		}
		n.Close()
	}
}
