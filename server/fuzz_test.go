package server_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/kvdstore/kvd/server"
)

// FuzzRESP sends arbitrary bytes to a live server of each RESP I/O model:
// it must never panic or hang, and must keep serving other connections.
func FuzzRESP(f *testing.F) {
	for _, seed := range []string{
		encode("SET", "k", "v") + encode("GET", "k"),
		encode("MSET", "a", "1", "b", "2", "SYNC") + encode("MGET", "a", "b"),
		encode("INCR", "n") + encode("INCRBY", "n", "-5") + encode("DECR", "x"),
		encode("SCAN", "0", "MATCH", "[a-", "COUNT", "2") + encode("SCAN", "1"),
		encode("HELLO", "3") + encode("GET", "nope") + encode("CONFIG", "GET", "*"),
		encode("CLIENT", "DURABILITY", "async") + encode("SET", "k", "v") + encode("WAITAOF", "1", "0", "10"),
		encode("DEL", "k", "SYNC") + encode("EXISTS", "k") + encode("DBSIZE"),
		encode("SET", "k", "v", "NX", "GET") + encode("INFO") + encode("COMMAND"),
		encode("CAS", "k", "0", "v", "SYNC") + encode("GETREV", "k") + encode("CAD", "k", "1") + encode("CAS", "k", "x", "v"),
		encode("WATCH", "k", "n") + encode("MULTI") + encode("SET", "k", "v", "GET") + encode("INCR", "n") +
			encode("MGET", "k", "n") + encode("EXISTS", "k") + encode("PING", "x") + encode("EXEC"),
		encode("MULTI") + encode("SCAN", "0") + encode("MULTI") + encode("EXEC") + encode("DISCARD") + encode("UNWATCH"),
		encode("MSETNX", "a", "1", "b", "2") + encode("MULTI") + encode("DEL", "a") + encode("DISCARD"),
		"PING\r\nSET a \"b c\"\r\n",
		"*2\r\n$3\r\nGET\r\n$99999\r\n",
		"*1\r\n$-1\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5000\r\n",
		"\x00\xff\r\n",
		"*0\r\n",
	} {
		f.Add([]byte(seed))
	}
	var servers []*testServer
	for _, model := range respIOs {
		servers = append(servers, startServer(f, serverOpts{io: model, cfg: server.Config{MaxKeySize: 64, MaxValueSize: 1024}}))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for i, ts := range servers {
			nc, err := net.Dial("tcp", ts.respAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(10 * time.Second))
			go func() {
				nc.Write(data)
				nc.(*net.TCPConn).CloseWrite()
			}()
			if _, err := io.Copy(io.Discard, nc); err != nil {
				t.Fatalf("%s: server did not finish the connection: %v", respIOs[i], err)
			}
			if got := dialRaw(t, ts.respAddr).do("PING"); got != "+PONG\r\n" {
				t.Fatalf("%s: PING after input = %q", respIOs[i], got)
			}
		}
	})
}
