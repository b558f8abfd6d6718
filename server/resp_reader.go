package server

import (
	"io"
	"strconv"
	"unsafe"

	"github.com/tidwall/redcon"
)

// cmdReader reads RESP commands from a connection's frame guard. It parses
// as redcon's Reader does (the same commands, inline commands included, and
// the same protocol errors; FuzzCmdReader holds it to that) but without
// copying: a command's Args and Raw point into the reader's buffer, and the
// commands of one ReadCommands call, with their Args, are reused by the next
// call. redcon's Reader copies each command and allocates its argument list:
// a quarter of the server's allocated bytes under redis-benchmark SETs (see
// bench/RESULTS.md).
//
// So a caller must be done with the commands of a call, and must have copied
// any argument it keeps, before it calls ReadCommands again. Both I/O models
// do: they run every command of a call before reading more, and whatever
// keeps an argument (an engine.Batch, a client name) copies it.
type cmdReader struct {
	src        io.Reader
	buf        []byte
	start, end int // unparsed input is buf[start:end]

	cmds  []redcon.Command // returned by the last call, reused by the next
	args  [][]byte         // backing array of the multibulk commands' Args
	marks []int
}

// cmdReaderSize is the initial buffer of a connection's reader; it grows to
// hold the largest command seen, which the frame guard bounds.
const cmdReaderSize = 4096

func newCmdReader(src io.Reader) *cmdReader {
	return &cmdReader{src: src, buf: make([]byte, cmdReaderSize)}
}

// buffered reports whether input that is not yet a complete command is held.
func (r *cmdReader) buffered() bool { return r.end > r.start }

// big reports whether the buffer grew past its initial size.
func (r *cmdReader) big() bool { return len(r.buf) > cmdReaderSize }

// ReadCommands returns the complete commands in the input, reading from the
// source until there is at least one. A read error is returned as is, and
// the reader keeps its state, so that a source without input for now
// (errWouldBlock) can be read again later. A malformed frame returns a
// protocol error; the connection must then be closed.
func (r *cmdReader) ReadCommands() ([]redcon.Command, error) {
	clear(r.cmds) // drop the previous call's references into buf
	r.cmds = r.cmds[:0]
	r.args = r.args[:0]
	for {
		if err := r.parse(); err != nil {
			return nil, err
		}
		if len(r.cmds) > 0 {
			return r.cmds, nil
		}
		if r.start == r.end {
			r.start, r.end = 0, 0
		}
		if r.end == len(r.buf) {
			if r.start > 0 {
				// Make room by moving the partial command to the front.
				r.end = copy(r.buf, r.buf[r.start:r.end])
				r.start = 0
			} else {
				nb := make([]byte, 2*len(r.buf))
				copy(nb, r.buf[:r.end])
				r.buf = nb
			}
		}
		n, err := r.src.Read(r.buf[r.end:])
		r.end += n
		if err != nil {
			if n > 0 {
				if perr := r.parse(); perr != nil {
					return nil, perr
				}
				if len(r.cmds) > 0 {
					return r.cmds, nil // the error comes back on the next read
				}
			}
			return nil, err
		}
	}
}

// parse appends every complete command in buf[start:end] to cmds and moves
// start past them.
func (r *cmdReader) parse() error {
	for r.start < r.end {
		b := r.buf[r.start:r.end]
		var n int
		var err error
		if b[0] == '*' {
			n, err = r.multibulk(b)
		} else {
			n, err = r.inline(b)
		}
		if err != nil {
			r.cmds = r.cmds[:0]
			return err
		}
		if n == 0 {
			return nil // incomplete
		}
		r.start += n
	}
	return nil
}

var (
	errInvalidMultiBulkLength = &protocolError{"invalid multibulk length"}
	errInvalidBulkLength      = &protocolError{"invalid bulk length"}
	errUnbalancedQuotes       = &protocolError{"unbalanced quotes in request"}
)

// multibulk parses the "*N" frame at the start of b. It returns the frame's
// length, or 0 if b holds only part of it. The checks, and their order, are
// redcon's.
func (r *cmdReader) multibulk(b []byte) (int, error) {
	count, i, err := header(b, 0, errInvalidMultiBulkLength)
	if err != nil || i < 0 {
		return 0, err
	}
	if count <= 0 {
		return 0, errInvalidMultiBulkLength
	}
	marks := r.marks[:0]
	for range count {
		i++
		if i >= len(b) {
			return 0, nil
		}
		if b[i] != '$' {
			return 0, &protocolError{"expected '$', got '" + string(b[i]) + "'"}
		}
		var size int
		size, i, err = header(b, i, errInvalidBulkLength)
		if err != nil || i < 0 {
			return 0, err
		}
		if size < 0 {
			return 0, errInvalidBulkLength
		}
		if size >= len(b)-i-2 { // i+size+2 >= len(b), without overflow
			return 0, nil
		}
		if b[i+size+2] != '\n' || b[i+size+1] != '\r' {
			return 0, errInvalidBulkLength
		}
		i++
		marks = append(marks, i, i+size)
		i += size + 1
	}
	r.marks = marks
	k := len(r.args)
	for h := 0; h < len(marks); h += 2 {
		r.args = append(r.args, b[marks[h]:marks[h+1]:marks[h+1]])
	}
	r.cmds = append(r.cmds, redcon.Command{
		Raw:  b[: i+1 : i+1],
		Args: r.args[k:len(r.args):len(r.args)],
	})
	return i + 1, nil
}

// inline parses the inline (telnet) command line at the start of b, with
// redcon's quoting rules, and returns the line's length with its newline, or
// 0 if b holds no newline yet. A blank line is no command. Inline commands
// are rare, so they are copied as redcon does.
func (r *cmdReader) inline(b []byte) (int, error) {
	i := 0
	for i < len(b) && b[i] != '\n' {
		i++
	}
	if i == len(b) {
		return 0, nil
	}
	line := b[:i]
	if i > 0 && b[i-1] == '\r' {
		line = b[:i-1]
	}
	var args [][]byte
	var quote, escape bool
	var quotech byte
outer:
	for {
		nline := make([]byte, 0, len(line))
		for j := 0; j < len(line); j++ {
			c := line[j]
			if !quote {
				if c == ' ' {
					if len(nline) > 0 {
						args = append(args, nline)
					}
					line = line[j+1:]
					continue outer
				}
				if c == '"' || c == '\'' {
					if j != 0 {
						return 0, errUnbalancedQuotes
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
					args = append(args, nline)
					line = line[j+1:]
					if len(line) > 0 && line[0] != ' ' {
						return 0, errUnbalancedQuotes
					}
					continue outer
				} else if c == '\\' {
					escape = true
					continue
				}
			}
			nline = append(nline, c)
		}
		if quote {
			return 0, errUnbalancedQuotes
		}
		if len(line) > 0 {
			args = append(args, line)
		}
		break
	}
	if len(args) > 0 {
		raw := redcon.AppendArray(nil, len(args))
		for k := range args {
			raw = redcon.AppendBulk(raw, args[k])
			args[k] = append([]byte(nil), args[k]...)
		}
		r.cmds = append(r.cmds, redcon.Command{Raw: raw, Args: args})
	}
	return i + 1, nil
}

// header parses the length N of the header line ("*N" or "$N") that starts
// at b[at]. It returns N and the index of the line's '\n', or -1 for the
// index if b holds only part of the line; bad is the error for a malformed
// line.
func header(b []byte, at int, bad error) (n, nl int, err error) {
	i := at + 1
	for i < len(b) && b[i] != '\n' {
		i++
	}
	if i == len(b) {
		return 0, -1, nil
	}
	if b[i-1] != '\r' {
		return 0, 0, bad
	}
	n, ok := atoi(b[at+1 : i-1])
	if !ok {
		return 0, 0, bad
	}
	return n, i, nil
}

// atoi parses a decimal length as redcon does (strconv.Atoi), without
// converting b to a string.
func atoi(b []byte) (int, bool) {
	n, err := strconv.Atoi(unsafe.String(unsafe.SliceData(b), len(b)))
	return n, err == nil
}
