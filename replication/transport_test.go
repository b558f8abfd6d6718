package replication

import (
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestHeartbeatsReachTheMainLoop: a heartbeat sent to a node's transport
// arrives with every other RPC on its consumer channel, which Raft's main
// goroutine reads, and not on the heartbeat handler Raft installs (see
// serialTransport). The plain NetworkTransport, checked the same way,
// hands the heartbeat to the handler: the test tells the two apart. A
// started node uses serialTransport.
func TestHeartbeatsReachTheMainLoop(t *testing.T) {
	heartbeat := func(t *testing.T, server raft.Transport) (viaHandler bool) {
		t.Helper()
		handled := make(chan struct{}, 1)
		server.SetHeartbeatHandler(func(rpc raft.RPC) {
			handled <- struct{}{}
			rpc.Respond(&raft.AppendEntriesResponse{Term: 7, Success: true}, nil)
		})
		client, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, time.Second, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("n9"), Addr: []byte(client.LocalAddr())}, Term: 7}
		sent := make(chan error, 1)
		go func() { sent <- client.AppendEntries("n1", server.LocalAddr(), req, &raft.AppendEntriesResponse{}) }()
		select {
		case <-handled:
			viaHandler = true
		case rpc := <-server.Consumer():
			if _, ok := rpc.Command.(*raft.AppendEntriesRequest); !ok {
				t.Fatalf("consumer got %T", rpc.Command)
			}
			rpc.Respond(&raft.AppendEntriesResponse{Term: 7, Success: true}, nil)
		case <-time.After(10 * time.Second):
			t.Fatal("the heartbeat reached neither the handler nor the consumer")
		}
		if err := <-sent; err != nil {
			t.Fatal(err)
		}
		return viaHandler
	}
	newTransport := func(t *testing.T) *raft.NetworkTransport {
		tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, time.Second, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		return tr
	}
	if !heartbeat(t, newTransport(t)) {
		t.Fatal("the plain transport did not use its heartbeat handler: the check below shows nothing")
	}
	if heartbeat(t, serialTransport{newTransport(t)}) {
		t.Fatal("serialTransport handed a heartbeat to the handler, off Raft's main goroutine")
	}

	cfg := testNodeConfig(t.TempDir())
	cfg.NodeID, cfg.Bootstrap = "solo", true
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if _, ok := n.trans.(serialTransport); !ok {
		t.Fatalf("a node's transport is %T, not serialTransport", n.trans)
	}
}
