package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/kvtest"
)

// TestClusterTLS: three kvd processes with --cluster-tls-* certificates
// of the cluster's CA form a cluster over mutual TLS (through the test's
// proxies, which pass the bytes through) and replicate; a fourth, whose
// certificate another CA issued, fails to join with a clear error and the
// cluster keeps its three members.
func TestClusterTLS(t *testing.T) {
	ca := kvtest.NewCA(t, "cluster")
	tlsArgs := func(ca *kvtest.CA, name string) []string {
		is := ca.Issue(t, name, kvtest.CertOptions{})
		return []string{"--cluster-tls-cert", is.CertFile, "--cluster-tls-key", is.KeyFile, "--cluster-tls-ca", ca.File}
	}
	c := &cluster{t: t, mode: "sync", net: newNetem(t)}
	for i := range 3 {
		n := c.newNode(fmt.Sprintf("n%d", i+1), fmt.Sprintf("127.0.0.%d", 11+i))
		c.nodes = append(c.nodes, n)
		args := tlsArgs(ca, n.name)
		if i == 0 {
			args = append(args, "--bootstrap")
		} else {
			args = append(args, "--join", c.nodes[0].adv)
		}
		c.start(n, args...)
		if !strings.Contains(n.p.Log(), "cluster_tls=mutual") {
			t.Fatalf("%s's startup line does not say cluster_tls=mutual:\n%s", n.name, n.p.Log())
		}
	}
	c.waitMembers(3)
	ctx := t.Context()
	l := c.leader()
	f := c.others(l)[0]
	// A write on a follower is forwarded to the leader over the cluster
	// port, then replicated to every node.
	if err := c.client(f).Set(ctx, "k", "over mutual tls", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		if v, err := c.client(n).Get(ctx, "k").Result(); err != nil || v != "over mutual tls" {
			t.Fatalf("%s: %q, %v", n.name, v, err)
		}
	}

	other := kvtest.NewCA(t, "other")
	s := c.newNode("n4", "127.0.0.14")
	c.start(s, append(tlsArgs(other, "n4"), "--join", c.nodes[0].adv)...)
	kvtest.Eventually(t, 60*time.Second, "n4 to fail a join", func() bool {
		return strings.Contains(s.p.Log(), "join failed")
	})
	if log := s.p.Log(); !strings.Contains(log, "certificate signed by unknown authority") {
		t.Errorf("n4's log does not say why its join failed:\n%s", log)
	}
	if m, err := info(ctx, c.client(l)); err != nil || m["members"] != "3" {
		t.Fatalf("members after n4's join: %v, %v; want 3", m["members"], err)
	}
	for _, n := range append(c.nodes, s) {
		if strings.Contains(n.p.Log(), "PRIVATE KEY") {
			t.Errorf("%s's log holds key material", n.name)
		}
	}
}
