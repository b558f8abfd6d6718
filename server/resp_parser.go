package server

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"sync/atomic"
	"unsafe"
)

// respParser reads the requests of one RESP connection: multibulk commands
// ("*N\r\n" followed by N bulks "$len\r\n<len bytes>\r\n"), as every client
// library sends them, and inline commands (a line of words separated by
// spaces, with redcon's quoting rules), as telnet and nc send them. It
// parses incrementally: what is buffered is parsed once, and a partial
// request waits, with its progress kept, for the next read. A source that
// has no input for now (the event loop's sockets, which return
// errWouldBlock) is never waited on.
//
// kvd's limits are enforced from the lengths frames declare, before memory
// is spent on them:
//
//   - A bulk over maxArg, or one that would take the request's total over
//     maxRequest, is refused: its payload, and every later bulk of the same
//     request, is dropped as it arrives, unread. The request is still
//     returned, marked refused, so that it gets an error reply while the
//     connection keeps working, as for any other bad command.
//   - A header line over maxHeader bytes, a bad length, a bulk declared over
//     maxRequest, a multibulk count over maxArgs, an inline line over
//     maxInline or a bulk not followed by CRLF is a malformed frame: the
//     requests before it are returned first, then a *protocolError, and the
//     connection is to be closed after an "-ERR Protocol error: ..." reply,
//     as Redis does. The error texts are redcon's and Redis's.
//
// The arguments of multibulk requests point into the parser's buffer, which
// the next ReadRequests call reuses, as it reuses the returned requests:
// reading a pipeline allocates nothing. So a caller must be done with the
// requests of a call, and must have copied any argument it keeps, before it
// calls ReadRequests again. Both I/O models run every request of a call
// before reading more, and whatever keeps an argument (an engine.Batch, a
// client name) copies it. Inline commands are rare: their arguments are
// copied, as redcon does.
//
// The buffer starts at parserBufSize and grows to hold the largest request
// seen, whose size the limits bound; shrink returns it to its initial size.
type respParser struct {
	buf   []byte
	start int // first byte of the request being parsed; before it, requests returned
	pos   int // next byte to parse
	end   int // end of the input read
	need  int // bytes from start that the request being parsed needs, if known

	maxArg, maxRequest int
	maxArgs, maxInline int

	state    parseState
	scan     int   // psInline: where the search for the line's end resumes
	argsLeft int   // bulks still to come in the current multibulk
	size     int   // psBulk: the declared size of the bulk; psSkip: bytes left to drop
	total    int   // sum of the declared sizes of the current request's bulks
	marks    []int // the current request's arguments, as offsets from start
	refused  *refusal
	name     []byte // a refused request's name, copied

	// budget, if set, is shared by every connection's parser: a buffer
	// grown past parserBufSize holds held bytes of it (see makeRoom).
	budget *pendingBudget
	held   int64

	reqs []request // returned by the last call, reused by the next
	args [][]byte  // backing array of the requests' args
	err  error     // sticky: returned once the requests before it were
}

// A request is one command read from a connection.
type request struct {
	// args holds the command name and its arguments. For a refused
	// request it holds only the name, or nothing if the name itself was
	// refused.
	args [][]byte
	// refused is set when an argument was over a limit and dropped unread:
	// the request gets an error reply instead of running.
	refused *refusal
}

// refusal says why a request was refused.
type refusal struct {
	arg      int  // index of the first dropped argument (0: the command name)
	size     int  // its declared size
	tooLarge bool // the argument alone is over maxArg (else the request's total is over maxRequest)
}

type parseState uint8

const (
	psStart    parseState = iota // at the first byte of a request
	psInline                     // in the line of an inline command
	psArrayLen                   // at or in a multibulk's "*N\r\n" line
	psBulkLen                    // at or in a bulk's "$N\r\n" line
	psBulk                       // in a bulk's payload and its CRLF
	psSkip                       // dropping a refused bulk's payload and CRLF
	psFailed                     // after a malformed frame
)

const (
	parserBufSize    = 4096
	maxHeader        = 32       // "*N\r\n" or "$N\r\n", CRLF included
	defaultMaxArgs   = 1 << 20  // as Redis
	defaultMaxInline = 64 << 10 // as Redis (PROTO_INLINE_MAX_SIZE)
	maxKeepArgs      = 4096     // shrink drops argument lists grown past this
	maxKeptName      = 32       // bytes of a refused request's name kept (lower reads no more)
)

// errWouldBlock is returned by a non-blocking source (the event loop's
// sockets) that has no input now. Unlike other errors it is not sticky: the
// parser keeps its state and can be read again when more input arrives.
var errWouldBlock = errors.New("read would block")

// protocolError is a malformed frame. Its text follows redcon and Redis.
type protocolError struct {
	msg string
	// limit: the frame is well formed but over one of kvd's limits (a
	// parser without them, such as redcon's, would accept it).
	limit bool
}

func (e *protocolError) Error() string { return "Protocol error: " + e.msg }

var (
	errInvalidMultiBulkLength = &protocolError{msg: "invalid multibulk length"}
	errInvalidBulkLength      = &protocolError{msg: "invalid bulk length"}
	errUnbalancedQuotes       = &protocolError{msg: "unbalanced quotes in request"}
	errTooManyArgs            = &protocolError{msg: "invalid multibulk length", limit: true}
	errBulkOverLimit          = &protocolError{msg: "invalid bulk length", limit: true}
	errTooBigInline           = &protocolError{msg: "too big inline request", limit: true}
)

func newRESPParser(maxArg, maxRequest int) *respParser {
	return &respParser{
		buf:        make([]byte, parserBufSize),
		maxArg:     maxArg,
		maxRequest: maxRequest,
		maxArgs:    defaultMaxArgs,
		maxInline:  defaultMaxInline,
	}
}

// ReadRequests returns the complete requests in the input, reading from src
// until there is at least one. A read error is returned once the requests
// read before it are; errWouldBlock leaves the parser as it was, so that it
// can be called again when src has input. A malformed frame returns a
// *protocolError, after the requests before it.
func (p *respParser) ReadRequests(src io.Reader) ([]request, error) {
	clear(p.reqs) // drop the previous call's references into buf
	p.reqs = p.reqs[:0]
	clear(p.args)
	p.args = p.args[:0]
	for {
		p.parse()
		if len(p.reqs) > 0 {
			return p.reqs, nil
		}
		if p.err != nil {
			return nil, p.err
		}
		if !p.makeRoom() {
			p.err = errOverBudget
			return nil, p.err
		}
		n, err := src.Read(p.buf[p.end:])
		p.end += n
		if err != nil {
			if err != errWouldBlock {
				p.err = err
			}
			if n == 0 {
				return nil, err
			}
		}
	}
}

// pending reports whether ReadRequests has something to return without
// reading its source: an error.
func (p *respParser) pending() bool { return p.err != nil }

// buffered reports whether input of a request not yet complete is held.
func (p *respParser) buffered() bool { return p.end > p.start }

// shrink releases a buffer grown past its initial size, if it holds no
// input, and argument lists grown by a request with many arguments.
func (p *respParser) shrink() {
	if len(p.buf) > parserBufSize && p.start == p.end {
		p.buf = make([]byte, parserBufSize)
		p.start, p.pos, p.end, p.scan = 0, 0, 0, 0
		p.release()
	}
	if cap(p.args) > maxKeepArgs || cap(p.marks) > 2*maxKeepArgs {
		p.reqs, p.args, p.marks = nil, nil, nil
	}
}

// makeRoom makes room for a read at the end of the buffer. The read goes
// after the request being parsed while that request starts at the front of
// the buffer or leaves half of it free. Else the request moves to the front,
// into a buffer twice as large if it fills this one (no larger than the
// request needs, once its last bulk is being read): the buffer grows with
// the input received, never with the lengths a client declares.
//
// A larger buffer takes its bytes past parserBufSize from the budget shared
// by all connections: makeRoom returns false, leaving the buffer as it was,
// when the budget has not enough left.
func (p *respParser) makeRoom() bool {
	if p.start == p.end {
		p.start, p.pos, p.end, p.scan = 0, 0, 0, 0
	}
	if p.end < len(p.buf) && (p.start == 0 || p.end <= len(p.buf)/2) {
		return true
	}
	buf := p.buf
	if need := max(p.need, p.end-p.start+1); need > len(buf) {
		size := 2 * len(buf)
		if p.state == psBulk && p.argsLeft == 1 {
			size = min(size, need) // the request ends with this bulk
		}
		if p.budget != nil {
			held := int64(size - parserBufSize)
			if !p.budget.take(held - p.held) {
				return false
			}
			p.held = held
		}
		buf = make([]byte, size)
	}
	copy(buf, p.buf[p.start:p.end])
	p.buf = buf
	p.pos -= p.start
	p.scan -= p.start
	p.end -= p.start
	p.start = 0
	return true
}

// release gives back the budget the buffer holds; the connection's
// goroutine calls it when the buffer shrinks and when the connection
// closes.
func (p *respParser) release() {
	if p.budget != nil && p.held != 0 {
		p.budget.take(-p.held)
		p.held = 0
	}
}

// pendingBudget bounds the bytes all connections' parsers hold past their
// initial buffers, that is for requests not yet complete (see
// Config.RESPPendingBytes). Safe for concurrent use.
type pendingBudget struct {
	limit int64
	used  atomic.Int64
}

// take takes n bytes (gives them back if n < 0), unless that would pass
// the limit.
func (b *pendingBudget) take(n int64) bool {
	for {
		used := b.used.Load()
		if n > 0 && used+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

// errOverBudget refuses a request whose buffer would pass the budget of
// incomplete requests: the connection gets an error reply and is closed.
var errOverBudget = errors.New("incomplete requests hold too much memory on the server (resp-pending-bytes); try again later")

// parse parses the buffered input, appending complete requests to p.reqs,
// until the input ends or a frame is malformed.
func (p *respParser) parse() {
	for {
		switch p.state {
		case psStart:
			p.start = p.pos
			if p.pos == p.end {
				return
			}
			if p.buf[p.pos] == '*' {
				p.state = psArrayLen
			} else {
				p.state = psInline
				p.scan = p.pos
			}
		case psInline:
			i := bytes.IndexByte(p.buf[p.scan:p.end], '\n')
			if i < 0 {
				p.scan = p.end
				if p.end-p.pos > p.maxInline {
					p.fail(errTooBigInline)
				}
				return
			}
			nl := p.scan + i
			if nl-p.pos > p.maxInline {
				p.fail(errTooBigInline)
				return
			}
			if err := p.inline(p.buf[p.pos:nl]); err != nil {
				p.fail(err)
				return
			}
			p.pos = nl + 1
			p.state = psStart
		case psArrayLen:
			n, ok := p.header(errInvalidMultiBulkLength)
			if !ok {
				return
			}
			if n <= 0 {
				p.fail(errInvalidMultiBulkLength)
				return
			}
			if n > p.maxArgs {
				p.fail(errTooManyArgs)
				return
			}
			p.argsLeft, p.total = n, 0
			p.marks = p.marks[:0]
			p.state = psBulkLen
		case psBulkLen:
			if p.pos == p.end {
				return
			}
			if c := p.buf[p.pos]; c != '$' {
				p.fail(&protocolError{msg: "expected '$', got '" + string(rune(c)) + "'"})
				return
			}
			n, ok := p.header(errInvalidBulkLength)
			if !ok {
				return
			}
			switch {
			case n < 0:
				p.fail(errInvalidBulkLength)
				return
			case n > p.maxRequest:
				// A bulk larger than a whole request can never be
				// valid: refuse it at once rather than drop it.
				p.fail(errBulkOverLimit)
				return
			case p.refused == nil && (n > p.maxArg || p.total+n > p.maxRequest):
				p.refuse(n)
			}
			p.size = n + 2
			if p.refused != nil {
				p.start = p.pos // nothing of the request is kept now
				p.state = psSkip
				continue
			}
			p.total += n
			p.need = p.pos - p.start + p.size
			p.state = psBulk
		case psBulk:
			if p.end-p.pos < p.size {
				return
			}
			n := p.size - 2
			if p.buf[p.pos+n] != '\r' || p.buf[p.pos+n+1] != '\n' {
				p.fail(errInvalidBulkLength)
				return
			}
			p.marks = append(p.marks, p.pos-p.start, p.pos+n-p.start)
			p.pos += p.size
			p.argDone()
		case psSkip:
			k := min(p.size, p.end-p.pos)
			p.pos += k
			p.start = p.pos
			p.size -= k
			if p.size > 0 {
				return
			}
			p.argDone()
		case psFailed:
			return
		}
	}
}

// header parses the "*N\r\n" or "$N\r\n" line at p.pos and moves past it.
// It returns false if the line is incomplete or malformed (bad is then the
// error).
func (p *respParser) header(bad *protocolError) (int, bool) {
	limit := min(p.end, p.pos+maxHeader)
	i := bytes.IndexByte(p.buf[p.pos:limit], '\n')
	if i < 0 {
		if limit-p.pos == maxHeader {
			p.fail(&protocolError{msg: bad.msg, limit: true})
		}
		return 0, false
	}
	line := p.buf[p.pos : p.pos+i+1]
	if len(line) < 4 || line[len(line)-2] != '\r' {
		p.fail(bad)
		return 0, false
	}
	n, err := strconv.Atoi(unsafe.String(unsafe.SliceData(line[1:]), len(line)-3))
	if err != nil {
		p.fail(bad)
		return 0, false
	}
	p.pos += len(line)
	return n, true
}

// refuse marks the current request refused at its next argument, of
// declared size n, keeping a copy of its name.
func (p *respParser) refuse(n int) {
	arg := len(p.marks) / 2
	p.refused = &refusal{arg: arg, size: n, tooLarge: n > p.maxArg}
	p.name, p.need = nil, 0
	if arg > 0 {
		name := p.buf[p.start+p.marks[0] : p.start+p.marks[1]]
		p.name = bytes.Clone(name[:min(len(name), maxKeptName)])
	}
	p.marks = p.marks[:0]
}

// argDone ends a bulk, and the request with its last bulk.
func (p *respParser) argDone() {
	p.argsLeft--
	if p.argsLeft > 0 {
		p.state = psBulkLen
		return
	}
	k := len(p.args)
	if p.refused != nil {
		if p.name != nil {
			p.args = append(p.args, p.name)
		}
	} else {
		for h := 0; h < len(p.marks); h += 2 {
			a, b := p.start+p.marks[h], p.start+p.marks[h+1]
			p.args = append(p.args, p.buf[a:b:b])
		}
	}
	p.reqs = append(p.reqs, request{args: p.args[k:len(p.args):len(p.args)], refused: p.refused})
	p.refused, p.name, p.need = nil, nil, 0
	p.state = psStart
}

func (p *respParser) fail(err *protocolError) {
	p.err = err
	p.state = psFailed
}

// inline parses an inline command line (without its '\n') with redcon's
// quoting rules and appends its request, if the line has any word.
func (p *respParser) inline(line []byte) *protocolError {
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	k := len(p.args)
	var quote, escape bool
	var quotech byte
outer:
	for {
		word := make([]byte, 0, len(line))
		for j := 0; j < len(line); j++ {
			c := line[j]
			if !quote {
				if c == ' ' {
					if len(word) > 0 {
						p.args = append(p.args, word)
					}
					line = line[j+1:]
					continue outer
				}
				if c == '"' || c == '\'' {
					if j != 0 {
						return errUnbalancedQuotes
					}
					quotech = c
					quote = true
					line = line[j+1:]
					continue outer
				}
			} else {
				if escape {
					escape = false
					switch c {
					case 'n':
						c = '\n'
					case 'r':
						c = '\r'
					case 't':
						c = '\t'
					}
				} else if c == quotech {
					quote = false
					quotech = 0
					p.args = append(p.args, word)
					line = line[j+1:]
					if len(line) > 0 && line[0] != ' ' {
						return errUnbalancedQuotes
					}
					continue outer
				} else if c == '\\' {
					escape = true
					continue
				}
			}
			word = append(word, c)
		}
		if quote {
			return errUnbalancedQuotes
		}
		if len(line) > 0 {
			p.args = append(p.args, bytes.Clone(line))
		}
		break
	}
	if len(p.args) > k {
		p.reqs = append(p.reqs, request{args: p.args[k:len(p.args):len(p.args)]})
	}
	return nil
}
