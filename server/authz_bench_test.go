package server_test

import (
	"strings"
	"testing"

	"github.com/kvdstore/kvd/server"
)

// BenchmarkRESPAuthz measures pipelined GETs and SETs (100 a round trip)
// with no users, and as a user with every permission and as one with key
// prefixes: what the permission check costs a request.
func BenchmarkRESPAuthz(b *testing.B) {
	pipeline := strings.Repeat(encode("GET", "app/k"), 50) + strings.Repeat(encode("SET", "app/k", "v", "ASYNC"), 50)
	for _, tc := range []struct{ name, user, pass string }{
		{"nousers", "", ""}, {"root", "root", rootPass}, {"prefixed", "app", appPass},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var ts *testServer
			if tc.user == "" {
				ts = startServer(b, serverOpts{cfg: server.Config{}})
			} else {
				ts, _ = startAuthServer(b, "")
			}
			c := dialRaw(b, ts.respAddr)
			if tc.user != "" {
				if got := c.do("AUTH", tc.user, tc.pass); got != "+OK\r\n" {
					b.Fatalf("AUTH = %q", got)
				}
			}
			for b.Loop() {
				c.sendRaw(pipeline)
				for range 100 {
					if r := c.reply(); r[0] == '-' {
						b.Fatalf("reply %q", r)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/request")
		})
	}
}
