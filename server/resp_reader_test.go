package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/tidwall/redcon"
)

// readAllCmds reads every command of r until an error, copying each one
// (the reader reuses them): its arguments and its Raw bytes.
func readAllCmds(r *cmdReader) (args [][][]byte, raws [][]byte, err error) {
	for {
		cmds, err := r.ReadCommands()
		for _, c := range cmds {
			var a [][]byte
			for _, arg := range c.Args {
				a = append(a, bytes.Clone(arg))
			}
			args = append(args, a)
			raws = append(raws, bytes.Clone(c.Raw))
		}
		if err != nil {
			return args, raws, err
		}
	}
}

func encodeCmd(args [][]byte) []byte {
	b := redcon.AppendArray(nil, len(args))
	for _, a := range args {
		b = redcon.AppendBulk(b, a)
	}
	return b
}

// FuzzCmdReader holds cmdReader to redcon's Reader on what the frame guard
// passes on (as in the server): read in chunks of any size, it returns the
// same commands and then the same error. One difference is allowed: both
// drop the complete commands read together with a malformed frame, and what
// was read together depends on chunking; so when the input has a malformed
// frame, one reader's commands need only be a prefix of the other's. On the
// raw input, unguarded, cmdReader must not panic or hang (redcon can do
// both on lengths the guard rules out).
func FuzzCmdReader(f *testing.F) {
	f.Add([]byte("*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n  \r\n\r\r\n"), uint8(3))
	f.Add([]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$40\r\n0123456789012345678901234567890123456789\r\n"), uint8(1))
	f.Add([]byte("SET a \"b c\"\nGET a\r\n*1\r\n$4\r\nPING\r\n"), uint8(200))
	f.Add([]byte("SET 'a\\n' \"b\\tc\" x\r\nSET a\"b\r\n"), uint8(5))
	f.Add([]byte("*1\r\n$+4\r\nPING\r\n*1\r\n$04\r\nPING\r\n"), uint8(2))
	f.Add([]byte("*1\r\n$4\r\nPING\r\n*0\r\n"), uint8(9))
	f.Add([]byte("*2\r\n$4\r\nECHO\r\nx\r\n"), uint8(64))
	f.Add([]byte("*2\r\n$4\r\nECHO\r\n$2\r\nabc\r\n"), uint8(64))
	f.Add([]byte("*1\n$4\r\nPING\r\n"), uint8(64))
	f.Add([]byte("*1\r\n$4\nPING\r\n"), uint8(64))
	f.Add([]byte("*-1\r\n*90000000000\r\n$9223372036854775807\r\n"), uint8(64))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		size := int(chunk)%200 + 1
		if _, _, err := readAllCmds(newCmdReader(&chunkReader{data, size})); err != io.EOF && !isProtocolError(err) {
			t.Fatalf("unguarded: error %v is neither EOF nor a protocol error", err)
		}

		g := newFrameGuard(&chunkReader{data, size}, 1<<10, 1<<12)
		g.maxArgs, g.maxInline = 1000, 1000
		in, err := readAllSmall(g, 4096)
		if err != nil && !isProtocolError(err) {
			t.Fatalf("guard: %v", err)
		}
		want, werr := parseAll(in)
		got, raws, gerr := readAllCmds(newCmdReader(&chunkReader{in, size}))
		if (gerr == io.EOF) != (werr == io.EOF) || gerr.Error() != werr.Error() {
			t.Fatalf("error %v, redcon %v, in %q", gerr, werr, in)
		}
		if gerr == io.EOF && len(got) != len(want) {
			t.Fatalf("%d commands, redcon %d, in %q", len(got), len(want), in)
		}
		for i := range min(len(got), len(want)) {
			if len(got[i]) != len(want[i].Args) {
				t.Fatalf("command %d: %q, redcon %q", i, got[i], want[i].Args)
			}
			for j := range got[i] {
				if !bytes.Equal(got[i][j], want[i].Args[j]) {
					t.Fatalf("command %d: %q, redcon %q", i, got[i], want[i].Args)
				}
			}
			if !bytes.Equal(raws[i], want[i].Raw) {
				t.Fatalf("command %d: raw %q, redcon %q", i, raws[i], want[i].Raw)
			}
		}
	})
}

// TestCmdReaderArgsSpanReads reads a pipeline whose commands straddle reads
// and outgrow the buffer, one byte at a time and in large chunks.
func TestCmdReaderArgsSpanReads(t *testing.T) {
	var data []byte
	var want [][]string
	for i := range 50 {
		v := string(bytes.Repeat([]byte{'a' + byte(i%26)}, i*300))
		data = append(data, encodeCmd([][]byte{[]byte("SET"), fmt.Appendf(nil, "k%d", i), []byte(v)})...)
		want = append(want, []string{"SET", fmt.Sprintf("k%d", i), v})
	}
	for _, chunk := range []int{1, 7, 4096, len(data)} {
		got, _, err := readAllCmds(newCmdReader(&chunkReader{data, chunk}))
		if err != io.EOF {
			t.Fatalf("chunk %d: error %v, want EOF", chunk, err)
		}
		if len(got) != len(want) {
			t.Fatalf("chunk %d: %d commands, want %d", chunk, len(got), len(want))
		}
		for i := range want {
			for j := range want[i] {
				if string(got[i][j]) != want[i][j] {
					t.Fatalf("chunk %d: command %d arg %d is %d bytes, want %d", chunk, i, j, len(got[i][j]), len(want[i][j]))
				}
			}
		}
	}
}

// wouldBlockReader returns its chunks one per Read and errWouldBlock
// between them, as a non-blocking socket does.
type wouldBlockReader struct {
	chunks [][]byte
	block  bool
}

func (r *wouldBlockReader) Read(p []byte) (int, error) {
	if r.block || len(r.chunks) == 0 {
		r.block = false
		return 0, errWouldBlock
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	if len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
		r.block = true
	}
	return n, nil
}

// TestCmdReaderWouldBlock checks that a source with no input for now leaves
// a partial command in place for the next read.
func TestCmdReaderWouldBlock(t *testing.T) {
	full := encodeCmd([][]byte{[]byte("SET"), []byte("key"), []byte("value")})
	src := &wouldBlockReader{chunks: [][]byte{full[:5], full[5:17], full[17:]}}
	r := newCmdReader(src)
	for range 2 {
		if cmds, err := r.ReadCommands(); err != errWouldBlock || len(cmds) != 0 {
			t.Fatalf("partial command: %d commands, %v; want errWouldBlock", len(cmds), err)
		}
	}
	cmds, err := r.ReadCommands()
	if err != nil || len(cmds) != 1 || string(cmds[0].Args[2]) != "value" {
		t.Fatalf("after the last chunk: %d commands, %v", len(cmds), err)
	}
	if r.buffered() {
		t.Error("input still buffered after the only command was returned")
	}
}

// TestCmdReaderAllocs checks the point of cmdReader: reading pipelines of
// commands allocates nothing once the reader has warmed up.
func TestCmdReaderAllocs(t *testing.T) {
	var pipeline []byte
	for i := range 16 {
		pipeline = append(pipeline, encodeCmd([][]byte{[]byte("SET"), fmt.Appendf(nil, "key:%06d", i), bytes.Repeat([]byte("v"), 100)})...)
	}
	src := &loopReader{data: pipeline}
	r := newCmdReader(src)
	n := 0
	read := func() {
		cmds, err := r.ReadCommands()
		if err != nil {
			t.Fatal(err)
		}
		n += len(cmds)
	}
	for range 10 {
		read()
	}
	if allocs := testing.AllocsPerRun(1000, read); allocs != 0 {
		t.Errorf("ReadCommands allocates %.1f times per call, want 0", allocs)
	}
	if n == 0 {
		t.Fatal("no commands read")
	}
}

// loopReader returns data over and over, in reads that end mid-command.
type loopReader struct {
	data []byte
	off  int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := copy(p, r.data[r.off:])
	r.off = (r.off + n) % len(r.data)
	return n, nil
}

// TestCmdReaderProtocolErrors checks that a malformed frame after good ones
// fails the read, as with redcon, and that the error is a protocol error.
func TestCmdReaderProtocolErrors(t *testing.T) {
	for _, in := range []string{"*x\r\n", "*2\r\n$3\r\nGET\r\n:1\r\n", "*1\r\n$-2\r\n", "SET \"a\r\n"} {
		r := newCmdReader(bytes.NewReader([]byte(in)))
		_, err := r.ReadCommands()
		var pe *protocolError
		if !errors.As(err, &pe) {
			t.Errorf("%q: error %v, want a protocol error", in, err)
		}
	}
}
