package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/tidwall/redcon"
)

// chunkReader returns its data at most n bytes per Read.
type chunkReader struct {
	data []byte
	n    int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), r.n, len(r.data))
	copy(p, r.data[:k])
	r.data = r.data[k:]
	return k, nil
}

// readAllSmall reads r with a small buffer, as bufio might.
func readAllSmall(r io.Reader, size int) ([]byte, error) {
	var out []byte
	buf := make([]byte, size)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// parseAll parses every command redcon finds in data.
func parseAll(data []byte) ([]redcon.Command, error) {
	rd := redcon.NewReader(bytes.NewReader(data))
	var cmds []redcon.Command
	for {
		c, err := rd.ReadCommands()
		cmds = append(cmds, c...)
		if err != nil {
			return cmds, err
		}
	}
}

// FuzzFrameGuard checks the guard against redcon's parser on arbitrary
// input: it never panics; when it passes the input without dropping
// anything, the bytes are unchanged; and when both accept the input, the
// guard counts exactly the commands redcon parses.
func FuzzFrameGuard(f *testing.F) {
	f.Add([]byte("*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n  \r\n\r\r\n"), uint8(3), uint8(7))
	f.Add([]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$40\r\n0123456789012345678901234567890123456789\r\n"), uint8(1), uint8(5))
	f.Add([]byte("SET a \"b c\"\nGET a\r\n*1\r\n$4\r\nPING\r\n"), uint8(200), uint8(1))
	f.Add([]byte("*1\r\n$+4\r\nPING\r\n*1\r\n$04\r\nPING\r\n"), uint8(2), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, chunk, outSize uint8) {
		g := newFrameGuard(&chunkReader{data, int(chunk)%64 + 1}, 16, 64)
		g.maxInline = 100
		out, gerr := readAllSmall(g, int(outSize)%32+1)
		if gerr != nil {
			var pe *protocolError
			if !errors.As(gerr, &pe) {
				t.Fatalf("guard error %v is not a protocol error", gerr)
			}
		}
		dropped := len(g.poisons) > 0 || g.poisoned
		// Unchanged, except that a header cut off by EOF is held back.
		held := 0
		if g.state == stArrayHeader || g.state == stBulkHeader {
			held = g.hlen
		}
		if gerr == nil && !dropped && (!bytes.HasPrefix(data, out) || len(data)-len(out) != held) {
			t.Fatalf("guard changed the input:\n in %q\nout %q", data, out)
		}
		cmds, rerr := parseAll(out)
		if gerr == nil && errors.Is(rerr, io.EOF) && uint64(len(cmds)) != g.completed {
			t.Fatalf("guard counted %d commands, redcon parsed %d, in %q", g.completed, len(cmds), data)
		}
		for _, p := range g.poisons {
			if p.seq >= g.completed {
				t.Fatalf("poison for command %d of %d", p.seq, g.completed)
			}
		}
	})
}

// FuzzFrameGuardRoundTrip encodes commands, passes them through the guard
// and parses them: arguments under the limits come out equal, larger ones
// come out empty with the command recorded as poisoned.
func FuzzFrameGuardRoundTrip(f *testing.F) {
	f.Add([]byte("SET"), []byte("key"), []byte("value"), uint8(3))
	f.Add([]byte("x"), []byte(""), []byte("0123456789abcdefXYZ"), uint8(1))
	f.Fuzz(func(t *testing.T, a, b, c []byte, chunk uint8) {
		const maxArg, maxReq = 16, 40
		cmds := [][][]byte{{a}, {a, b}, {b, c, a}, {c}}
		var in bytes.Buffer
		for _, cmd := range cmds {
			w := redcon.NewWriter(&in)
			w.WriteArray(len(cmd))
			for _, arg := range cmd {
				w.WriteBulk(arg)
			}
			w.Flush()
		}
		g := newFrameGuard(&chunkReader{in.Bytes(), int(chunk)%16 + 1}, maxArg, maxReq)
		out, err := readAllSmall(g, 4096)
		if err != nil {
			// Only an argument declared over maxReq is refused outright.
			if len(a) <= maxReq && len(b) <= maxReq && len(c) <= maxReq {
				t.Fatalf("guard refused valid input: %v", err)
			}
			return
		}
		got, err := parseAll(out)
		if !errors.Is(err, io.EOF) || len(got) != len(cmds) {
			t.Fatalf("parsed %d commands (%v), want %d", len(got), err, len(cmds))
		}
		for i, cmd := range cmds {
			p, poisoned := g.takePoison(uint64(i))
			total, over := 0, -1
			for j, arg := range cmd {
				if over < 0 && (len(arg) > maxArg || total+len(arg) > maxReq) {
					over = j
				}
				total += len(arg)
			}
			if poisoned != (over >= 0) || (poisoned && p.arg != over) {
				t.Fatalf("command %d: poisoned=%v at %d, want first dropped argument %d", i, poisoned, p.arg, over)
			}
			for j, arg := range cmd {
				want := arg
				if over >= 0 && j >= over {
					want = nil
				}
				if !bytes.Equal(got[i].Args[j], want) {
					t.Fatalf("command %d arg %d = %q, want %q", i, j, got[i].Args[j], want)
				}
			}
		}
	})
}

func TestFrameGuardIdle(t *testing.T) {
	data := []byte(fmt.Sprintf("*2\r\n$4\r\nECHO\r\n$5000\r\n%s\r\n", bytes.Repeat([]byte("x"), 5000)))
	g := newFrameGuard(bytes.NewReader(data), 1<<20, 1<<21)
	rd := redcon.NewReader(g)
	cmds, err := rd.ReadCommands()
	if err != nil || len(cmds) != 1 || len(cmds[0].Args[1]) != 5000 {
		t.Fatalf("ReadCommands = %d commands, %v", len(cmds), err)
	}
	if !g.idle() || !g.big || g.completed != 1 {
		t.Errorf("after one large command: idle=%v big=%v completed=%d", g.idle(), g.big, g.completed)
	}
}
