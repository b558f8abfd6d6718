package server

import (
	"math"
	"strings"
	"testing"

	"github.com/tidwall/redcon"
)

// TestRepliesAsRedcon: kvd's reply encoding sends, byte for byte, what
// redcon's, which it replaced, sent.
func TestRepliesAsRedcon(t *testing.T) {
	c := &respConn{}
	check := func(what string, write func(), want []byte) {
		t.Helper()
		c.out = c.out[:0]
		write()
		if string(c.out) != string(want) {
			t.Errorf("%s: %q, redcon %q", what, c.out, want)
		}
	}
	for _, s := range []string{"", "OK", "ERR bad\r\nthing", "a\nb\rc", strings.Repeat("z", 100)} {
		check("status", func() { c.writeStatus(s) }, redcon.AppendString(nil, s))
		check("error", func() { c.writeError(s) }, redcon.AppendError(nil, s))
		check("bulk", func() { c.writeBulk([]byte(s)) }, redcon.AppendBulk(nil, []byte(s)))
		check("bulk string", func() { c.writeBulkString(s) }, redcon.AppendBulkString(nil, s))
	}
	for _, n := range []int64{0, 9, 10, -1, 12345, math.MaxInt64, math.MinInt64} {
		check("int", func() { c.writeInt(n) }, redcon.AppendInt(nil, n))
		check("array", func() { c.writeArray(int(n)) }, redcon.AppendArray(nil, int(n)))
	}
	check("ok", c.writeOK, redcon.AppendOK(nil))
	check("null", c.writeNull, redcon.AppendNull(nil))
	check("map", func() { c.writeMap(3) }, redcon.AppendArray(nil, 6))
}
