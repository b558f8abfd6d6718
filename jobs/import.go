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
	"strconv"
	"time"

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
// same values (a new revision, no other effect).
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

	// Two batches: one is parsed while the other commits.
	var bufs [2]engine.Batch
	cur := 0
	var batchKeys, inflightKeys int64
	var inflight *engine.Commit
	lastSave := time.Now()
	var rev uint64
	wait := func() error {
		if inflight == nil {
			return nil
		}
		err := inflight.Wait()
		rev = inflight.Revision()
		inflight = nil
		if err != nil {
			return fail(CodeStore, err)
		}
		keys += inflightKeys
		return nil
	}
	commit := func(final bool) error {
		if b := &bufs[cur]; b.Len() > 0 {
			if err := wait(); err != nil {
				return err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			c, err := m.store.Submit(b, engine.WriteOptions{Durability: engine.DurabilityAsync})
			if err != nil {
				return fail(CodeStore, err)
			}
			inflight, inflightKeys, batchKeys = &c, batchKeys, 0
			cur ^= 1
			bufs[cur].Reset()
		}
		if !final && time.Since(lastSave) < time.Second {
			return p.update(Progress{DoneBytes: src.off, TotalBytes: total, DoneKeys: keys}, false, nil)
		}
		// What the record says was done must be durable first.
		if err := wait(); err != nil {
			return err
		}
		if err := m.store.Sync(); err != nil {
			return fail(CodeStore, err)
		}
		lastSave = time.Now()
		off := src.off
		pr := Progress{DoneBytes: off, TotalBytes: total, DoneKeys: keys}
		return p.update(pr, true, func(r *Record) { r.Offset = off })
	}
	defer wait() // a batch in flight when the import stops
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		key, val, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		bufs[cur].Put(key, val)
		batchKeys++
		if len(bufs[cur].Bytes()) >= m.opts.ImportBatchBytes {
			if err := commit(false); err != nil {
				return nil, err
			}
		}
	}
	if err := commit(true); err != nil {
		return nil, err
	}
	return &Result{Path: f.Name(), Size: total, Keys: keys, Revision: rev}, nil
}

// importReader reads an import's records and counts the bytes consumed.
type importReader struct {
	r   *bufio.Reader
	off int64
}

func (ir *importReader) bad(format string, args ...any) error {
	return fail(CodeBadInput, fmt.Errorf("jobs: import: at byte %d: %s", ir.off, fmt.Sprintf(format, args...)))
}

// ndjson reads the next {"key":...,"value":...} line; blank lines are
// skipped. Keys and values are JSON strings.
func (ir *importReader) ndjson() (key, value []byte, err error) {
	for {
		line, err := ir.r.ReadBytes('\n')
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
		ir.off += int64(len(line))
		return []byte(*kv.Key), []byte(*kv.Value), nil
	}
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
	n, err := strconv.Atoi(string(l[1:]))
	if err != nil || n < 1 || n > 1024 {
		return nil, nil, ir.bad("bad array length %q", l[1:])
	}
	args := make([][]byte, n)
	for i := range args {
		l, err := line()
		if err != nil {
			return nil, nil, err
		}
		if l[0] != '$' {
			return nil, nil, ir.bad("want a bulk string")
		}
		sz, err := strconv.Atoi(string(l[1:]))
		if err != nil || sz < 0 || sz > 512<<20 {
			return nil, nil, ir.bad("bad bulk string length %q", l[1:])
		}
		buf := make([]byte, sz+2)
		if _, err := io.ReadFull(ir.r, buf); err != nil {
			return nil, nil, ir.bad("stream ends inside a bulk string")
		}
		if buf[sz] != '\r' || buf[sz+1] != '\n' {
			return nil, nil, ir.bad("a bulk string does not end in CRLF")
		}
		off += int64(sz + 2)
		args[i] = buf[:sz]
	}
	if len(args) != 3 || !bytes.EqualFold(args[0], []byte("SET")) {
		return nil, nil, ir.bad("unsupported command %q with %d arguments (an import takes SET key value)", args[0], len(args)-1)
	}
	ir.off += off
	return args[1], args[2], nil
}
