package server_test

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kvdstore/kvd/server"
)

func mismatch(current int64) string { return fmt.Sprintf("-REVMISMATCH current %d\r\n", current) }

// TestRESPRevisionsAndCAS checks GETREV, CAS and CAD step by step on one
// connection. Every write takes a revision, a CAS or CAD whose compare
// failed included (its batch is written), so the revisions are known.
func TestRESPRevisionsAndCAS(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model, cfg: server.Config{MaxKeySize: 64, MaxValueSize: 16}})
		run(t, dialRaw(t, ts.respAddr), []step{
			{cmd("GETREV", "k"), null},
			{cmd("SET", "k", "v1"), ok}, // 1
			{cmd("GETREV", "k"), array(bulk("v1"), integer(1), integer(1))},
			{cmd("SET", "k", "v2"), ok}, // 2
			{cmd("getrev", "k"), array(bulk("v2"), integer(2), integer(1))},

			{cmd("CAS", "k", "1", "x"), mismatch(2)},    // 3
			{cmd("CAS", "k", "0", "x"), mismatch(2)},    // 4
			{cmd("CAS", "none", "2", "x"), mismatch(0)}, // 5
			{cmd("GETREV", "none"), null},
			{cmd("GET", "k"), bulk("v2")},
			{cmd("CAS", "k", "2", "v3"), integer(6)},
			{cmd("GETREV", "k"), array(bulk("v3"), integer(6), integer(1))},
			{cmd("cas", "n", "0", "", "SYNC"), integer(7)},
			{cmd("GETREV", "n"), array(bulk(""), integer(7), integer(7))},
			{cmd("CAS", "n", "0", "again", "async"), mismatch(7)}, // 8

			{cmd("CAD", "k", "2"), mismatch(6)}, // 9
			{cmd("CAD", "k", "6", "ASYNC"), integer(0)},
			{cmd("GETREV", "k"), null},
			{cmd("CAD", "k", "0"), integer(0)},  // 11
			{cmd("CAD", "k", "6"), mismatch(0)}, // 12
			{cmd("SET", "k", "v4"), ok},         // 13: a new create revision
			{cmd("GETREV", "k"), array(bulk("v4"), integer(13), integer(13))},
			{cmd("CLIENT", "LASTREV"), integer(13)},
			{cmd("CAS", "k", "1", "x"), mismatch(13)},
			{cmd("CLIENT", "LASTREV"), integer(13)}, // a failed compare wrote nothing

			// Bad requests are refused before anything is written.
			{cmd("GETREV"), "-ERR wrong number of arguments for 'getrev' command\r\n"},
			{cmd("GETREV", "a", "b"), "-ERR wrong number of arguments for 'getrev' command\r\n"},
			{cmd("CAS", "k", "1"), "-ERR wrong number of arguments for 'cas' command\r\n"},
			{cmd("CAD", "k"), "-ERR wrong number of arguments for 'cad' command\r\n"},
			{cmd("CAS", "k", "x", "v"), "-ERR revision is not an unsigned integer or out of range\r\n"},
			{cmd("CAS", "k", "-1", "v"), "-ERR revision is not an unsigned integer or out of range\r\n"},
			{cmd("CAS", "k", "013", "v"), "-ERR revision is not an unsigned integer or out of range\r\n"},
			{cmd("CAD", "k", "18446744073709551616"), "-ERR revision is not an unsigned integer or out of range\r\n"},
			{cmd("CAS", "k", "13", "v", "LATER"), "-ERR syntax error\r\n"},
			{cmd("CAS", "k", "13", "v", "SYNC", "SYNC"), "-ERR syntax error\r\n"},
			{cmd("CAD", "k", "13", "x"), "-ERR syntax error\r\n"},
			{cmd("CAS", "", "0", "v"), "-ERR empty key\r\n"},
			{cmd("CAD", strings.Repeat("k", 65), "0"), "-ERR key too large (max 64 bytes)\r\n"},
			{cmd("CAS", "k", "13", strings.Repeat("v", 17)), "-ERR value too large (max 16 bytes)\r\n"},
			{cmd("GETREV", "k"), array(bulk("v4"), integer(13), integer(13))},
			{cmd("CLIENT", "LASTREV"), integer(13)},

			{cmd("HELLO", "3"), "%7\r\n..."},
			{cmd("GETREV", "none"), "_\r\n"},
			{cmd("CAS", "k", "14", "x"), mismatch(13)},

			{cmd("COMMAND", "INFO", "getrev", "cas", "cad"), array(
				array(bulk("getrev"), integer(2), array("+readonly\r\n", "+fast\r\n"), integer(1), integer(1), integer(1)),
				array(bulk("cas"), integer(-4), array("+write\r\n", "+fast\r\n"), integer(1), integer(1), integer(1)),
				array(bulk("cad"), integer(-3), array("+write\r\n", "+fast\r\n"), integer(1), integer(1), integer(1)))},
			{cmd("COMMAND", "INFO", "del"), array(
				array(bulk("del"), integer(-2), array("+write\r\n"), integer(1), integer(-1), integer(1)))},
		})
	})
}

// TestRESPCASPipelined pipelines two CAS of one key from the same revision:
// the first wins, the second is told the first's revision.
func TestRESPCASPipelined(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		c := dialRaw(t, ts.respAddr)
		if got := c.do("SET", "p", "0"); got != ok {
			t.Fatalf("SET = %q", got)
		}
		c.sendRaw(encode("CAS", "p", "1", "a") + encode("CAS", "p", "1", "b") + encode("CAD", "p", "1") +
			encode("GETREV", "p") + encode("CAD", "p", "2") + encode("GETREV", "p"))
		want := []string{integer(2), mismatch(2), mismatch(2), array(bulk("a"), integer(2), integer(1)), integer(0), null}
		for i, w := range want {
			if got := c.reply(); got != w {
				t.Fatalf("reply %d = %q, want %q", i, got, w)
			}
		}
	})
}

// TestRESPCASRace has connections race to CAS one key from the same
// revision, round after round: in each round exactly one wins, and every
// loser is told the winner's revision.
func TestRESPCASRace(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		const writers, rounds = 4, 30
		conns := make([]*rawConn, writers)
		for i := range conns {
			conns[i] = dialRaw(t, ts.respAddr)
		}
		if got := conns[0].do("SET", "race", "start"); got != ok {
			t.Fatalf("SET = %q", got)
		}
		rev := int64(1)
		for round := range rounds {
			replies := make([]string, writers)
			errs := make([]error, writers)
			var wg sync.WaitGroup
			for i, c := range conns {
				// Each connection sends from its own goroutine; the replies
				// are read after all are sent.
				wg.Go(func() {
					_, errs[i] = io.WriteString(c.nc, encode("CAS", "race", strconv.FormatInt(rev, 10), fmt.Sprint(round, "-", i)))
				})
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatalf("round %d: sending: %v", round, err)
			}
			for i, c := range conns {
				replies[i] = c.reply()
			}
			winner := -1
			var won int64
			for i, r := range replies {
				if n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(r, ":"), "\r\n"), 10, 64); err == nil && r[0] == ':' {
					if winner >= 0 {
						t.Fatalf("round %d: connections %d and %d both won from revision %d: %q", round, winner, i, rev, replies)
					}
					winner, won = i, n
				}
			}
			if winner < 0 {
				t.Fatalf("round %d: nobody won from revision %d: %q", round, rev, replies)
			}
			for i, r := range replies {
				if i != winner && r != mismatch(won) {
					t.Fatalf("round %d: loser %d got %q, want %q", round, i, r, mismatch(won))
				}
			}
			if got, want := conns[0].do("GETREV", "race"), array(bulk(fmt.Sprint(round, "-", winner)), integer(won), integer(1)); got != want {
				t.Fatalf("round %d: GETREV = %q, want %q", round, got, want)
			}
			rev = won
		}
	})
}
