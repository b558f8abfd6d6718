package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
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

// readAll reads every request of src until an error, copying each one (the
// parser reuses them).
func readAll(p *respParser, src io.Reader) (reqs []request, err error) {
	for {
		got, err := p.ReadRequests(src)
		for _, r := range got {
			var args [][]byte
			for _, a := range r.args {
				args = append(args, bytes.Clone(a))
			}
			reqs = append(reqs, request{args: args, refused: r.refused})
		}
		if err != nil {
			return reqs, err
		}
	}
}

// redconParse parses every command redcon's reader finds in data.
func redconParse(data []byte) ([]redcon.Command, error) {
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

func encodeCmd(args [][]byte) []byte {
	b := redcon.AppendArray(nil, len(args))
	for _, a := range args {
		b = redcon.AppendBulk(b, a)
	}
	return b
}

// FuzzParser holds the parser to redcon's reader, a parser without limits,
// on arbitrary input read in chunks of any size: it never panics or hangs
// and returns only protocol errors; and unless it refused an argument or
// hit one of kvd's limits, it returns the commands redcon returns and then
// the same error. One difference is allowed: redcon drops the complete
// commands it read together with a malformed frame, where the parser
// returns them first (as Redis runs them); so with a malformed frame,
// redcon's commands need only be a prefix of the parser's.
func FuzzParser(f *testing.F) {
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
	f.Add([]byte("*"), uint8(7))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		size := int(chunk)%200 + 1
		p := newRESPParser(1<<10, 1<<12)
		p.maxArgs, p.maxInline = 1000, 1000
		got, err := readAll(p, &chunkReader{data, size})
		var pe *protocolError
		if err != io.EOF && !errors.As(err, &pe) {
			t.Fatalf("error %v is neither EOF nor a protocol error", err)
		}
		refused := slices.ContainsFunc(got, func(r request) bool { return r.refused != nil })
		if refused || (pe != nil && pe.limit) {
			return // redcon has no limits
		}
		want, werr := redconParse(data)
		if (err == io.EOF) != (werr == io.EOF) || err.Error() != werr.Error() {
			t.Fatalf("error %v, redcon %v, in %q", err, werr, data)
		}
		if (err == io.EOF && len(got) != len(want)) || len(got) < len(want) {
			t.Fatalf("%d commands, redcon %d, in %q", len(got), len(want), data)
		}
		for i := range want {
			if !slices.EqualFunc(got[i].args, want[i].Args, bytes.Equal) {
				t.Fatalf("command %d: %q, redcon %q", i, got[i].args, want[i].Args)
			}
		}
	})
}

// FuzzParserRoundTrip encodes commands and parses them back with small
// limits: arguments under the limits come out equal, and a command with an
// argument over them comes out refused at its first such argument, keeping
// only its name.
func FuzzParserRoundTrip(f *testing.F) {
	f.Add([]byte("SET"), []byte("key"), []byte("value"), uint8(3))
	f.Add([]byte("x"), []byte(""), []byte("0123456789abcdefXYZ"), uint8(1))
	f.Fuzz(func(t *testing.T, a, b, c []byte, chunk uint8) {
		const maxArg, maxReq = 16, 40
		cmds := [][][]byte{{a}, {a, b}, {b, c, a}, {c}}
		var in []byte
		for _, cmd := range cmds {
			in = append(in, encodeCmd(cmd)...)
		}
		got, err := readAll(newRESPParser(maxArg, maxReq), &chunkReader{in, int(chunk)%16 + 1})
		if err != io.EOF {
			// Only an argument declared over maxReq is refused outright.
			if len(a) <= maxReq && len(b) <= maxReq && len(c) <= maxReq {
				t.Fatalf("parser refused valid input: %v", err)
			}
			return
		}
		if len(got) != len(cmds) {
			t.Fatalf("parsed %d commands, want %d", len(got), len(cmds))
		}
		for i, cmd := range cmds {
			total, over := 0, -1
			for j, arg := range cmd {
				if over < 0 && (len(arg) > maxArg || total+len(arg) > maxReq) {
					over = j
				}
				total += len(arg)
			}
			r := got[i].refused
			if (r != nil) != (over >= 0) || (r != nil && r.arg != over) {
				t.Fatalf("command %d: refused %+v, want first dropped argument %d", i, r, over)
			}
			want := cmd
			if over == 0 {
				want = nil
			} else if over > 0 {
				want = [][]byte{cmd[0][:min(len(cmd[0]), maxKeptName)]}
			}
			if !slices.EqualFunc(got[i].args, want, bytes.Equal) {
				t.Fatalf("command %d = %q, want %q", i, got[i].args, want)
			}
		}
	})
}

// TestParserShrink: a request larger than the buffer grows it; once the
// request was returned and nothing is buffered, shrink gives it back.
func TestParserShrink(t *testing.T) {
	data := fmt.Appendf(nil, "*2\r\n$4\r\nECHO\r\n$5000\r\n%s\r\n", bytes.Repeat([]byte("x"), 5000))
	p := newRESPParser(1<<20, 1<<21)
	reqs, err := p.ReadRequests(bytes.NewReader(data))
	if err != nil || len(reqs) != 1 || len(reqs[0].args[1]) != 5000 {
		t.Fatalf("ReadRequests = %d requests, %v", len(reqs), err)
	}
	if p.buffered() || len(p.buf) <= parserBufSize {
		t.Errorf("after one large request: buffered=%v, buffer %d bytes", p.buffered(), len(p.buf))
	}
	p.shrink()
	if len(p.buf) != parserBufSize {
		t.Errorf("after shrink: buffer %d bytes, want %d", len(p.buf), parserBufSize)
	}
}

// TestParserDropsRefused: the payload of a refused argument is dropped as
// it arrives, not buffered, and the requests around it are intact.
func TestParserDropsRefused(t *testing.T) {
	big := bytes.Repeat([]byte("v"), 1<<20)
	data := encodeCmd([][]byte{[]byte("SET"), []byte("k"), big})
	data = append(data, encodeCmd([][]byte{[]byte("GET"), []byte("k")})...)
	p := newRESPParser(1<<10, 1<<21)
	got, err := readAll(p, &chunkReader{data, 1000})
	if err != io.EOF || len(got) != 2 {
		t.Fatalf("%d requests, %v; want 2, EOF", len(got), err)
	}
	if r := got[0].refused; r == nil || r.arg != 2 || r.size != len(big) || !r.tooLarge || string(got[0].args[0]) != "SET" {
		t.Errorf("first request: %q, refused %+v", got[0].args, r)
	}
	if got[1].refused != nil || string(bytes.Join(got[1].args, []byte(" "))) != "GET k" {
		t.Errorf("second request: %q, refused %+v", got[1].args, got[1].refused)
	}
	if len(p.buf) != parserBufSize {
		t.Errorf("buffer grew to %d bytes for a dropped argument", len(p.buf))
	}
}

// TestParserBufferFollowsInput: the buffer grows with the bytes that
// arrive, not with the length a bulk declares, so that a client declaring
// large values and sending little costs little memory.
func TestParserBufferFollowsInput(t *testing.T) {
	p := newRESPParser(16<<20, 64<<20)
	src := &wouldBlockReader{chunks: [][]byte{[]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16000000\r\n"), []byte("vvvv")}}
	for range 2 {
		if reqs, err := p.ReadRequests(src); err != errWouldBlock || len(reqs) != 0 {
			t.Fatalf("%d requests, %v; want errWouldBlock", len(reqs), err)
		}
	}
	if len(p.buf) != parserBufSize {
		t.Errorf("buffer of %d bytes for %d bytes received", len(p.buf), p.end)
	}
	// Once the payload comes, the buffer holds it, no larger than needed.
	value := bytes.Repeat([]byte("v"), 16000000)
	src.chunks = [][]byte{value[4:], []byte("\r\n")}
	var reqs []request
	var err error
	for len(reqs) == 0 && err == nil {
		reqs, err = p.ReadRequests(src)
		if err == errWouldBlock {
			err = nil
		}
	}
	if err != nil || !bytes.Equal(reqs[0].args[2], value) {
		t.Fatalf("%d requests, %v", len(reqs), err)
	}
	if len(p.buf) > 16000000+64 {
		t.Errorf("buffer of %d bytes for a request of 16000036", len(p.buf))
	}
}

// TestParserGrowsGeometrically: a request of many arguments that outgrows
// the buffer is read with a few allocations, not one per argument.
func TestParserGrowsGeometrically(t *testing.T) {
	args := [][]byte{[]byte("MSET")}
	for i := range 1000 {
		args = append(args, fmt.Appendf(nil, "k%d", i), bytes.Repeat([]byte("v"), 1000))
	}
	data := encodeCmd(args)
	allocs := testing.AllocsPerRun(5, func() {
		p := newRESPParser(1<<20, 4<<20)
		if reqs, err := p.ReadRequests(&chunkReader{data, 4096}); err != nil || len(reqs[0].args) != len(args) {
			t.Fatalf("%d requests, %v", len(reqs), err)
		}
	})
	if allocs > 40 {
		t.Errorf("reading a %d-byte request allocates %.0f times", len(data), allocs)
	}
}

// TestParserArgsSpanReads reads a pipeline whose commands straddle reads
// and outgrow the buffer, one byte at a time and in large chunks.
func TestParserArgsSpanReads(t *testing.T) {
	var data []byte
	var want [][]string
	for i := range 50 {
		v := string(bytes.Repeat([]byte{'a' + byte(i%26)}, i*300))
		data = append(data, encodeCmd([][]byte{[]byte("SET"), fmt.Appendf(nil, "k%d", i), []byte(v)})...)
		want = append(want, []string{"SET", fmt.Sprintf("k%d", i), v})
	}
	for _, chunk := range []int{1, 7, 4096, len(data)} {
		got, err := readAll(newRESPParser(1<<20, 1<<21), &chunkReader{data, chunk})
		if err != io.EOF {
			t.Fatalf("chunk %d: error %v, want EOF", chunk, err)
		}
		if len(got) != len(want) {
			t.Fatalf("chunk %d: %d commands, want %d", chunk, len(got), len(want))
		}
		for i := range want {
			for j := range want[i] {
				if string(got[i].args[j]) != want[i][j] {
					t.Fatalf("chunk %d: command %d arg %d is %d bytes, want %d", chunk, i, j, len(got[i].args[j]), len(want[i][j]))
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

// TestParserWouldBlock checks that a source with no input for now leaves
// a partial command in place for the next read.
func TestParserWouldBlock(t *testing.T) {
	full := encodeCmd([][]byte{[]byte("SET"), []byte("key"), []byte("value")})
	src := &wouldBlockReader{chunks: [][]byte{full[:5], full[5:17], full[17:]}}
	p := newRESPParser(1<<20, 1<<21)
	for range 2 {
		if reqs, err := p.ReadRequests(src); err != errWouldBlock || len(reqs) != 0 {
			t.Fatalf("partial command: %d commands, %v; want errWouldBlock", len(reqs), err)
		}
	}
	reqs, err := p.ReadRequests(src)
	if err != nil || len(reqs) != 1 || string(reqs[0].args[2]) != "value" {
		t.Fatalf("after the last chunk: %d commands, %v", len(reqs), err)
	}
	if p.buffered() {
		t.Error("input still buffered after the only command was returned")
	}
}

// TestParserAllocs checks that reading pipelines of commands allocates
// nothing once the parser has warmed up.
func TestParserAllocs(t *testing.T) {
	var pipeline []byte
	for i := range 16 {
		pipeline = append(pipeline, encodeCmd([][]byte{[]byte("SET"), fmt.Appendf(nil, "key:%06d", i), bytes.Repeat([]byte("v"), 100)})...)
	}
	src := &loopReader{data: pipeline}
	p := newRESPParser(1<<20, 1<<21)
	n := 0
	read := func() {
		reqs, err := p.ReadRequests(src)
		if err != nil {
			t.Fatal(err)
		}
		n += len(reqs)
	}
	for range 10 {
		read()
	}
	if allocs := testing.AllocsPerRun(1000, read); allocs != 0 {
		t.Errorf("ReadRequests allocates %.1f times per call, want 0", allocs)
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

// TestParserProtocolErrors checks that a malformed frame fails the read
// with a protocol error, after the commands before it.
func TestParserProtocolErrors(t *testing.T) {
	for _, in := range []string{"*x\r\n", "*2\r\n$3\r\nGET\r\n:1\r\n", "*1\r\n$-2\r\n", "SET \"a\r\n"} {
		p := newRESPParser(1<<20, 1<<21)
		data := append(encodeCmd([][]byte{[]byte("PING")}), in...)
		got, err := readAll(p, bytes.NewReader(data))
		var pe *protocolError
		if !errors.As(err, &pe) {
			t.Errorf("%q: error %v, want a protocol error", in, err)
		}
		if len(got) != 1 || string(got[0].args[0]) != "PING" {
			t.Errorf("%q: %d commands before the error, want PING", in, len(got))
		}
	}
}
