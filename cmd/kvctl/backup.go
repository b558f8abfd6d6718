package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/kvdstore/kvd/engine"
)

func backupCommand() *command {
	var httpAddr string
	c := &command{
		name:    "backup",
		args:    "save FILE | status FILE",
		summary: "save a backup of the server's store to a file, or describe a backup file",
		help: `save FILE streams a snapshot of the store (GET /v1/snapshot on --http-addr) to FILE.part,
checks its sha256, fsyncs it and renames it to FILE: a FILE that exists is whole. The snapshot is the
store at one revision, made durable before it is sent; writes go on meanwhile. A progress line goes to
standard error if that is a terminal.

status FILE reads a backup file offline and prints its revision, keys, size and sha256, after
checking every checksum in it (exit status 1 if it is damaged or torn).`,
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&httpAddr, "http-addr", "127.0.0.1:8380", "kvd HTTP address host:port, for save")
		},
		ownTimeout: true,
	}
	c.run = func(ctx context.Context, e *env, args []string) error {
		if len(args) != 2 || (args[0] != "save" && args[0] != "status") {
			return usagef("backup: want save FILE or status FILE")
		}
		if args[0] == "status" {
			return backupStatus(e, args[1])
		}
		return backupSave(ctx, e, httpAddr, args[1])
	}
	return c
}

func backupStatus(e *env, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := engine.ReadSnapshotInfo(f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	sum := hex.EncodeToString(info.SHA256[:])
	if e.json() {
		return e.writeJSON(map[string]any{"file": path, "format": info.Version, "revision": info.Revision,
			"keys": info.Keys, "size": info.Size, "sha256": sum})
	}
	_, err = fmt.Fprintf(e.stdout, "file:     %s\nformat:   KVDSNAP v%d\nrevision: %d\nkeys:     %d\nsize:     %d\nsha256:   %s\n",
		path, info.Version, info.Revision, info.Keys, info.Size, sum)
	return err
}

func backupSave(ctx context.Context, e *env, httpAddr, path string) error {
	hc, scheme, err := e.httpClient()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+httpAddr+"/v1/snapshot", nil)
	if err != nil {
		return err
	}
	if err := e.authorizeHTTP(req); err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("backup: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	part := path + ".part"
	f, err := os.OpenFile(part, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(part)
		}
	}()
	total := resp.ContentLength
	tw := &trailerWriter{w: f, sum: sha256.New()}
	var r io.Reader = resp.Body
	if isTerminal(e.stderr) {
		r = &byteProgress{r: r, total: total, out: e.stderr, label: "backup"}
	}
	n, err := io.Copy(tw, r)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if total >= 0 && n != total {
		return fmt.Errorf("backup: got %d bytes of %d", n, total)
	}
	if !tw.verify() {
		return fmt.Errorf("backup: the snapshot's sha256 does not match its content (damaged in transit)")
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("backup: fsync: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(part, path); err != nil {
		return err
	}
	ok = true
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	rev := resp.Header.Get("X-Kvd-Revision")
	if e.json() {
		r, _ := strconv.ParseUint(rev, 10, 64)
		return e.writeJSON(map[string]any{"file": path, "revision": r, "size": n, "sha256": hex.EncodeToString(tw.tail[:])})
	}
	_, err = fmt.Fprintf(e.stdout, "saved %s: revision %s, %d bytes, sha256 %x\n", path, rev, n, tw.tail[:])
	return err
}

// trailerWriter writes through and hashes all but the last 32 bytes, which
// it keeps: a snapshot's sha256 trailer.
type trailerWriter struct {
	w   io.Writer
	sum interface {
		Write([]byte) (int, error)
		Sum([]byte) []byte
	}
	tail [sha256.Size]byte
	n    int // bytes held in tail
}

func (t *trailerWriter) Write(p []byte) (int, error) {
	if _, err := t.w.Write(p); err != nil {
		return 0, err
	}
	buf := append(t.tail[:t.n:t.n], p...)
	if len(buf) > sha256.Size {
		t.sum.Write(buf[:len(buf)-sha256.Size])
		buf = buf[len(buf)-sha256.Size:]
	}
	t.n = copy(t.tail[:], buf)
	return len(p), nil
}

func (t *trailerWriter) verify() bool {
	return t.n == sha256.Size && bytes.Equal(t.sum.Sum(nil), t.tail[:])
}

// byteProgress reports bytes read of total on a terminal line.
type byteProgress struct {
	r     io.Reader
	total int64
	n     int64
	out   io.Writer
	label string
	last  time.Time
	start time.Time
}

func (p *byteProgress) Read(b []byte) (int, error) {
	if p.start.IsZero() {
		p.start = time.Now()
	}
	n, err := p.r.Read(b)
	p.n += int64(n)
	if now := time.Now(); now.Sub(p.last) >= 200*time.Millisecond || err != nil {
		p.last = now
		rate := float64(p.n) / max(now.Sub(p.start).Seconds(), 1e-3) / (1 << 20)
		if p.total > 0 {
			fmt.Fprintf(p.out, "\r%s: %5.1f%% %d/%d bytes %.1f MiB/s ", p.label, 100*float64(p.n)/float64(p.total), p.n, p.total, rate)
		} else {
			fmt.Fprintf(p.out, "\r%s: %d bytes %.1f MiB/s ", p.label, p.n, rate)
		}
		if err != nil {
			fmt.Fprintln(p.out)
		}
	}
	return n, err
}
