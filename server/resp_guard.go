package server

import (
	"errors"
	"io"
	"strconv"
)

// frameGuard sits between a connection and redcon's reader and enforces
// kvd's limits from the lengths that RESP frames declare, before any memory
// is spent on them. redcon itself enforces none: its read buffer grows to
// whatever a frame declares.
//
// The guard follows the byte stream with a small state machine that mirrors
// redcon's parser (multibulk "*N" frames of "$N" bulks, and inline commands
// for telnet) and passes the bytes through unchanged, except:
//
//   - A bulk larger than maxArg, or one that would take the command's total
//     over maxRequest, is replaced by an empty bulk "$0\r\n\r\n" and its
//     payload is read and discarded as it arrives. Every later bulk of the
//     same command is dropped too. The command still reaches the handler,
//     which finds it in poisons (by sequence number) and replies with an
//     error instead of running it: the connection keeps working, as for
//     any other bad command.
//   - A header line longer than maxHeader, a bad length, a bulk declared
//     larger than maxRequest, a multibulk count over maxArgs or an inline
//     line over maxInline is a protocol error:
//     Read returns the bytes before it, then the error, and the connection
//     is closed after an "-ERR Protocol error: ..." reply (Redis does the
//     same).
//
// The guard counts completed commands the way redcon does, so that the n-th
// command redcon returns is the guard's command n. Memory per connection is
// the 4 KiB input buffer plus a header; large payloads are read straight
// into the caller's buffer.
type frameGuard struct {
	src        io.Reader
	maxArg     int64
	maxRequest int64
	maxArgs    int
	maxInline  int

	in     []byte
	r, w   int
	srcErr error // from src; returned once the buffered input is used up
	perr   error // protocol error; sticky

	pend    []byte // output that did not fit the caller's buffer
	pendBuf [maxHeader + 2]byte

	state     guardState
	hdr       [maxHeader]byte
	hlen      int
	argsLeft  int
	argIndex  int
	remain    int64 // payload bytes (including CRLF) left in the current bulk
	reqBytes  int64 // sum of the declared sizes of the current command's bulks
	cmdBytes  int64 // bytes of the current command passed through
	poisoned  bool
	cur       poison
	inlineLen int
	nonSpace  bool // the inline line has an argument
	pendingCR bool // the last inline byte was '\r'

	completed uint64   // commands completed so far
	poisons   []poison // poisoned commands not yet taken by the handler
	big       bool     // a command larger than half the reader's initial buffer passed
}

// poison describes a command whose arguments were dropped.
type poison struct {
	seq      uint64 // sequence number of the command (0-based)
	arg      int    // index of the first dropped argument
	size     int64  // its declared size
	tooLarge bool   // the argument alone is over maxArg (else the command total is)
}

type guardState uint8

const (
	stStart guardState = iota
	stInline
	stArrayHeader
	stBulkHeader
	stData
	stDrop
)

const (
	maxHeader        = 32       // "*N\r\n" or "$N\r\n" header line
	defaultMaxArgs   = 1 << 20  // as Redis
	defaultMaxInline = 64 << 10 // as Redis (PROTO_INLINE_MAX_SIZE)
	guardBufSize     = 4096
)

// errWouldBlock is returned by a non-blocking source (the event loop's
// sockets) that has no input now. Unlike other errors it is not sticky: the
// guard, and redcon's reader above it, keep their state and can be read
// again when more input arrives.
var errWouldBlock = errors.New("read would block")

// protocolError is a malformed frame. Its text follows redcon and Redis.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return "Protocol error: " + e.msg }

func newFrameGuard(src io.Reader, maxArg, maxRequest int64) *frameGuard {
	return &frameGuard{
		src:        src,
		maxArg:     maxArg,
		maxRequest: maxRequest,
		maxArgs:    defaultMaxArgs,
		maxInline:  defaultMaxInline,
		in:         make([]byte, guardBufSize),
	}
}

// takePoison reports whether command seq was poisoned and removes it from the
// queue. Commands are taken in order.
func (g *frameGuard) takePoison(seq uint64) (poison, bool) {
	if len(g.poisons) == 0 || g.poisons[0].seq != seq {
		return poison{}, false
	}
	p := g.poisons[0]
	g.poisons = g.poisons[1:]
	if len(g.poisons) == 0 {
		g.poisons = nil
	}
	return p, true
}

// idle reports whether the guard sits between commands with no partial
// command passed on and nothing buffered, so that a reader above it that has
// returned every completed command holds no data.
func (g *frameGuard) idle() bool {
	return g.state == stStart && g.r == g.w && len(g.pend) == 0
}

// pending reports whether the guard holds input it has not passed on, or
// an error it has not returned: whether reading it again can return
// something without reading its source.
func (g *frameGuard) pending() bool {
	return g.r < g.w || len(g.pend) > 0 || g.perr != nil || g.srcErr != nil
}

// Read implements io.Reader.
func (g *frameGuard) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n := 0
	for {
		if len(g.pend) > 0 {
			c := copy(p[n:], g.pend)
			g.pend = g.pend[c:]
			n += c
			if len(g.pend) > 0 {
				return n, nil
			}
		}
		if n == len(p) {
			return n, nil
		}
		if g.r < g.w && g.perr == nil {
			n += g.process(p[n:])
			continue
		}
		if n > 0 {
			return n, nil
		}
		if g.perr != nil {
			return 0, g.perr
		}
		if g.srcErr != nil {
			return 0, g.srcErr
		}
		if g.state == stData && g.remain > guardBufSize/2 {
			// A large payload: read it straight into p.
			k, err := g.src.Read(p[:min(int64(len(p)), g.remain)])
			g.remain -= int64(k)
			g.cmdBytes += int64(k)
			if g.remain == 0 {
				g.argDone()
			}
			if err == errWouldBlock && k == 0 {
				return 0, err
			}
			if err != nil && err != errWouldBlock {
				g.srcErr = err
			}
			if k > 0 {
				return k, nil
			}
			continue
		}
		k, err := g.src.Read(g.in)
		g.r, g.w = 0, k
		if err == errWouldBlock && k == 0 {
			return 0, err
		}
		if err != nil && err != errWouldBlock {
			g.srcErr = err
		}
	}
}

// process moves buffered input to out, following the frame structure, until
// out is full, the input is used up, output is pending or a protocol error is
// found. It returns the number of bytes written to out.
func (g *frameGuard) process(out []byte) int {
	n := 0
	for g.r < g.w && n < len(out) && len(g.pend) == 0 && g.perr == nil {
		switch g.state {
		case stStart:
			g.cmdBytes = 0
			if g.in[g.r] == '*' {
				g.state = stArrayHeader
			} else {
				g.state = stInline
				g.inlineLen, g.nonSpace, g.pendingCR = 0, false, false
			}
		case stInline:
			n += g.inline(out[n:])
		case stArrayHeader, stBulkHeader:
			c := g.in[g.r]
			if g.hlen == 0 && g.state == stBulkHeader && c != '$' {
				g.perr = &protocolError{"expected '$', got '" + string(rune(c)) + "'"}
				break
			}
			g.r++
			if g.hlen == len(g.hdr) {
				g.perr = g.lengthError()
				break
			}
			g.hdr[g.hlen] = c
			g.hlen++
			if c == '\n' {
				n += g.header(out[n:])
			}
		case stData:
			k := min(g.w-g.r, len(out)-n)
			if int64(k) > g.remain {
				k = int(g.remain)
			}
			copy(out[n:], g.in[g.r:g.r+k])
			g.r += k
			n += k
			g.remain -= int64(k)
			g.cmdBytes += int64(k)
			if g.remain == 0 {
				g.argDone()
			}
		case stDrop:
			k := g.w - g.r
			if int64(k) > g.remain {
				k = int(g.remain)
			}
			g.r += k
			g.remain -= int64(k)
			if g.remain == 0 {
				n += g.emit(out[n:], []byte("\r\n"))
				g.argDone()
			}
		}
	}
	return n
}

// inline passes one inline command line through, tracking whether redcon
// will find an argument in it: any byte but ' ', where a '\r' right before
// the '\n' does not count.
func (g *frameGuard) inline(out []byte) int {
	n := 0
	for g.r < g.w && n < len(out) {
		c := g.in[g.r]
		g.r++
		out[n] = c
		n++
		g.inlineLen++
		if c == '\n' {
			if g.nonSpace {
				g.complete()
			}
			g.state = stStart
			return n
		}
		if g.pendingCR {
			g.nonSpace = true
		}
		g.pendingCR = c == '\r'
		if c != ' ' && c != '\r' {
			g.nonSpace = true
		}
		if g.inlineLen > g.maxInline {
			g.perr = &protocolError{"too big inline request"}
			return n
		}
	}
	return n
}

func (g *frameGuard) lengthError() error {
	if g.state == stArrayHeader {
		return &protocolError{"invalid multibulk length"}
	}
	return &protocolError{"invalid bulk length"}
}

// header handles a complete "*N\r\n" or "$N\r\n" line in g.hdr.
func (g *frameGuard) header(out []byte) int {
	line := g.hdr[:g.hlen]
	g.hlen = 0
	if len(line) < 4 || line[len(line)-2] != '\r' {
		g.perr = g.lengthError()
		return 0
	}
	num, err := strconv.Atoi(string(line[1 : len(line)-2]))
	if g.state == stArrayHeader {
		if err != nil || num <= 0 || num > g.maxArgs {
			g.perr = g.lengthError()
			return 0
		}
		g.argsLeft, g.argIndex, g.reqBytes, g.poisoned = num, 0, 0, false
		g.state = stBulkHeader
		g.cmdBytes += int64(len(line))
		return g.emit(out, line)
	}
	if err != nil || num < 0 || int64(num) > g.maxRequest {
		// A bulk larger than a whole request can never be valid: refuse it
		// at once rather than read and drop it.
		g.perr = g.lengthError()
		return 0
	}
	size := int64(num)
	g.remain = size + 2
	if g.poisoned || size > g.maxArg || g.reqBytes+size > g.maxRequest {
		if !g.poisoned {
			g.poisoned = true
			g.cur = poison{arg: g.argIndex, size: size, tooLarge: size > g.maxArg}
		}
		g.state = stDrop
		return g.emit(out, []byte("$0\r\n"))
	}
	g.reqBytes += size
	g.cmdBytes += int64(len(line))
	g.state = stData
	return g.emit(out, line)
}

// argDone ends the current bulk.
func (g *frameGuard) argDone() {
	g.argIndex++
	g.argsLeft--
	if g.argsLeft > 0 {
		g.state = stBulkHeader
		return
	}
	if g.poisoned {
		g.cur.seq = g.completed
		g.poisons = append(g.poisons, g.cur)
		g.poisoned = false
	}
	g.complete()
	g.state = stStart
}

func (g *frameGuard) complete() {
	if g.cmdBytes+int64(g.inlineLen) > cmdReaderSize/2 {
		g.big = true
	}
	g.completed++
}

// emit writes b to out, keeping what does not fit for the next Read.
func (g *frameGuard) emit(out, b []byte) int {
	c := copy(out, b)
	if c < len(b) {
		g.pend = append(g.pendBuf[:0], b[c:]...)
	}
	return c
}
