package jobs

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/kvdstore/kvd/engine"
)

// importHead is how much of an import's source is hashed to tell, on a
// resume, that it is the file the job started on.
const importHead = 1 << 20

// runImport loads a file of keys and values in batches of about
// ImportBatchBytes, each committed async. About every second, and at the
// end, it syncs the store and then records the byte offset after the last
// batch and the keys done: a resume after a restart (even a power loss)
// starts from there, so no key is lost and the count is exact. Batches
// after the recorded offset are applied again on a resume, which puts the
// same values (a new revision, no other effect). A goroutine parses the
// source while this one commits: the parse of a batch overlaps the log's
// write of the one before.
func (m *Manager) runImport(ctx context.Context, rec *Record, p *reporter) (*Result, error) {
	f, err := os.Open(m.path(rec.Params.Name))
	if err != nil {
		return nil, fail(CodeNotFound, fmt.Errorf("jobs: import: %w", err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fail(CodeIO, err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, importHead)); err != nil {
		return nil, fail(CodeIO, err)
	}
	head := hex.EncodeToString(h.Sum(nil))
	offset, keys := int64(0), int64(0)
	if rec.SourceSize != 0 || rec.SourceHead != "" {
		if fi.Size() != rec.SourceSize || head != rec.SourceHead {
			return nil, fail(CodeSourceChanged, fmt.Errorf("jobs: import: %s changed since the job started (size %d, was %d); start a new import", rec.Params.Name, fi.Size(), rec.SourceSize))
		}
		offset, keys = rec.Offset, rec.Progress.DoneKeys
	}
	total := fi.Size()
	if err := p.update(Progress{DoneBytes: offset, TotalBytes: total, DoneKeys: keys}, true, func(r *Record) {
		r.SourceSize, r.SourceHead = total, head
	}); err != nil {
		return nil, err
	}
	format := rec.Params.Format
	if format == "" {
		var first [1]byte
		if _, err := f.ReadAt(first[:], 0); err == nil && first[0] == '*' {
			format = "resp"
		} else {
			format = "ndjson"
		}
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, fail(CodeIO, err)
	}
	src := &importReader{r: bufio.NewReaderSize(f, 1<<20), off: offset}
	next := src.ndjson
	if format == "resp" {
		next = src.resp
	}

	// A goroutine parses the source into batches while this one commits
	// them: parsing and the log's write of the batch before overlap.
	free := make(chan *engine.Batch, importBatches)
	for range importBatches {
		free <- new(engine.Batch)
	}
	full := make(chan importChunk, 1)
	pctx, stop := context.WithCancel(ctx)
	parsed := make(chan struct{})
	go func() {
		defer close(parsed)
		m.parseImport(pctx, src, next, free, full)
	}()
	defer func() { stop(); <-parsed }()

	var inflight *engine.Commit
	var inflightB *engine.Batch
	var inflightKeys int64
	lastSave := time.Now()
	var rev uint64
	// wait waits for the batch in flight, which writes the ones submitted
	// after it too, and gives it back to the parser.
	wait := func() error {
		if inflight == nil {
			return nil
		}
		err := inflight.Wait()
		rev = inflight.Revision()
		inflight = nil
		free <- inflightB
		if err != nil {
			return fail(CodeStore, err)
		}
		keys += inflightKeys
		return nil
	}
	defer wait() // a batch in flight when the import stops
	// save makes what was committed durable, then records it: the offset
	// after the last batch committed and the keys done.
	save := func(end int64) error {
		if err := wait(); err != nil {
			return err
		}
		if err := m.store.Sync(); err != nil {
			return fail(CodeStore, err)
		}
		lastSave = time.Now()
		pr := Progress{DoneBytes: end, TotalBytes: total, DoneKeys: keys}
		return p.update(pr, true, func(r *Record) { r.Offset = end })
	}
	end, done := offset, false
	for ch := range full {
		if ch.err != nil && !errors.Is(ch.err, io.EOF) {
			free <- ch.b
			return nil, ch.err // the records before the error in ch.b are not imported
		}
		if ch.b.Len() == 0 {
			free <- ch.b
		} else {
			if err := ctx.Err(); err != nil {
				free <- ch.b
				return nil, err
			}
			c, err := m.store.Submit(ch.b, engine.WriteOptions{Durability: engine.DurabilityAsync})
			if err != nil {
				free <- ch.b
				return nil, fail(CodeStore, err)
			}
			// The batch before is written with this one.
			if err := wait(); err != nil {
				return nil, err
			}
			inflight, inflightB, inflightKeys = &c, ch.b, ch.keys
			end = ch.end
		}
		if ch.err != nil { // io.EOF
			done = true
			break
		}
		if time.Since(lastSave) >= time.Second {
			if err := save(end); err != nil {
				return nil, err
			}
		} else if err := p.update(Progress{DoneBytes: end, TotalBytes: total, DoneKeys: keys}, false, nil); err != nil {
			return nil, err
		}
	}
	if !done {
		return nil, context.Cause(ctx) // the parser stopped for it
	}
	if err := save(end); err != nil {
		return nil, err
	}
	return &Result{Path: f.Name(), Size: total, Keys: keys, Revision: rev}, nil
}

// importBatches is how many batches an import cycles through: one the
// parser fills, one waiting to be submitted, one in flight.
const importBatches = 3

// importChunk is a batch the parser filled: its keys, the source offset
// after its last record, and what stopped the parse after it (io.EOF at
// the end of the source), if anything.
type importChunk struct {
	b    *engine.Batch
	keys int64
	end  int64
	err  error
}

// parseImport fills the batches given on free with the records next reads,
// about ImportBatchBytes each, and sends them on full, in order; it closes
// full after the one that carries an error (io.EOF at the end), or when ctx
// ends.
func (m *Manager) parseImport(ctx context.Context, src *importReader, next func() ([]byte, []byte, error), free <-chan *engine.Batch, full chan<- importChunk) {
	defer close(full)
	for {
		var b *engine.Batch
		select {
		case b = <-free:
		case <-ctx.Done():
			return
		}
		b.Reset()
		ch := importChunk{b: b}
		for len(b.Bytes()) < m.opts.ImportBatchBytes {
			key, val, err := next()
			if err != nil {
				ch.err = err
				break
			}
			b.Put(key, val)
			ch.keys++
		}
		ch.end = src.off
		select {
		case full <- ch:
		case <-ctx.Done():
			return
		}
		if ch.err != nil {
			return
		}
	}
}

// importReader reads an import's records and counts the bytes consumed.
// The key and value a read returns are valid until the next read: the
// batch copies them.
type importReader struct {
	r    *bufio.Reader
	off  int64
	buf  []byte   // a long line; a command's bulk strings
	args [][]byte // a command's arguments, in buf
}

func (ir *importReader) bad(format string, args ...any) error {
	return fail(CodeBadInput, fmt.Errorf("jobs: import: at byte %d: %s", ir.off, fmt.Sprintf(format, args...)))
}

// line reads up to and including the next newline, or the rest of the
// source, with its error (io.EOF without a newline).
func (ir *importReader) line() ([]byte, error) {
	l, err := ir.r.ReadSlice('\n')
	if !errors.Is(err, bufio.ErrBufferFull) {
		return l, err
	}
	ir.buf = append(ir.buf[:0], l...)
	for {
		l, err = ir.r.ReadSlice('\n')
		ir.buf = append(ir.buf, l...)
		if !errors.Is(err, bufio.ErrBufferFull) {
			return ir.buf, err
		}
	}
}

// ndjson reads the next {"key":...,"value":...} line; blank lines are
// skipped. Keys and values are JSON strings.
func (ir *importReader) ndjson() (key, value []byte, err error) {
	for {
		line, err := ir.line()
		if len(line) == 0 && errors.Is(err, io.EOF) {
			return nil, nil, io.EOF
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, nil, fail(CodeIO, err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			ir.off += int64(len(line))
			continue
		}
		key, value, ok := plainNDJSON(line)
		if !ok {
			var kv struct {
				Key   *string `json:"key"`
				Value *string `json:"value"`
			}
			if jerr := json.Unmarshal(line, &kv); jerr != nil {
				return nil, nil, ir.bad("not a JSON object: %v", jerr)
			}
			if kv.Key == nil || kv.Value == nil || *kv.Key == "" {
				return nil, nil, ir.bad(`a line needs a non-empty "key" and a "value"`)
			}
			key, value = []byte(*kv.Key), []byte(*kv.Value)
		}
		ir.off += int64(len(line))
		return key, value, nil
	}
}

// plainNDJSON decodes, without encoding/json, the line most imports are
// made of: exactly {"key":"K","value":"V"} (then only white space), K not
// empty, both strings without escapes or control characters, in valid
// UTF-8, which JSON then decodes to themselves. Any other line it leaves
// to encoding/json (ok false), which decodes or refuses it in full.
func plainNDJSON(line []byte) (key, value []byte, ok bool) {
	rest, ok := bytes.CutPrefix(bytes.TrimRight(line, " \t\r\n"), []byte(`{"key":"`))
	if !ok {
		return nil, nil, false
	}
	i := bytes.IndexByte(rest, '"')
	if i <= 0 {
		return nil, nil, false
	}
	key = rest[:i]
	if rest, ok = bytes.CutPrefix(rest[i:], []byte(`","value":"`)); !ok {
		return nil, nil, false
	}
	if i = bytes.IndexByte(rest, '"'); i < 0 || string(rest[i:]) != `"}` {
		return nil, nil, false
	}
	value = rest[:i]
	if !plainJSONString(key) || !plainJSONString(value) {
		return nil, nil, false
	}
	return key, value, true
}

// plainJSONString reports whether b, between quotes, is a JSON string that
// decodes to b itself: valid UTF-8 with no backslash or control character.
func plainJSONString(b []byte) bool {
	ascii := true
	for _, c := range b {
		if c < 0x20 || c == '\\' {
			return false
		}
		if c >= 0x80 {
			ascii = false
		}
	}
	return ascii || utf8.Valid(b)
}

// resp reads the next command of a redis-cli --pipe stream: an array of
// bulk strings. Only SET key value is accepted.
func (ir *importReader) resp() (key, value []byte, err error) {
	var off int64
	line := func() ([]byte, error) {
		l, err := ir.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, ir.bad("line too long")
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(l) == 0 && off == 0 {
				return nil, io.EOF
			}
			return nil, ir.bad("stream ends inside a command")
		}
		off += int64(len(l))
		if len(l) < 3 || l[len(l)-2] != '\r' {
			return nil, ir.bad("a line does not end in CRLF")
		}
		return l[:len(l)-2], nil
	}
	l, err := line()
	if err != nil {
		return nil, nil, err
	}
	if l[0] != '*' {
		return nil, nil, ir.bad("want an array of bulk strings (redis-cli --pipe format)")
	}
	n, ok := respLength(l[1:])
	if !ok || n < 1 || n > 1024 {
		return nil, nil, ir.bad("bad array length %q", l[1:])
	}
	ir.args, ir.buf = ir.args[:0], ir.buf[:0]
	for range n {
		l, err := line()
		if err != nil {
			return nil, nil, err
		}
		if l[0] != '$' {
			return nil, nil, ir.bad("want a bulk string")
		}
		sz, ok := respLength(l[1:])
		if !ok || sz > 512<<20 {
			return nil, nil, ir.bad("bad bulk string length %q", l[1:])
		}
		// Appended to buf: the arguments read before stay where they are
		// (in the old array, if buf grows).
		b0 := len(ir.buf)
		ir.buf = slices.Grow(ir.buf, sz+2)[:b0+sz+2]
		buf := ir.buf[b0:]
		if _, err := io.ReadFull(ir.r, buf); err != nil {
			return nil, nil, ir.bad("stream ends inside a bulk string")
		}
		if buf[sz] != '\r' || buf[sz+1] != '\n' {
			return nil, nil, ir.bad("a bulk string does not end in CRLF")
		}
		off += int64(sz + 2)
		ir.args = append(ir.args, buf[:sz:sz])
	}
	args := ir.args
	if len(args) != 3 || !bytes.EqualFold(args[0], []byte("SET")) {
		return nil, nil, ir.bad("unsupported command %q with %d arguments (an import takes SET key value)", args[0], len(args)-1)
	}
	ir.off += off
	return args[1], args[2], nil
}

// respLength parses a RESP length: decimal digits only, at most 10.
func respLength(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
