package browser

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kvdstore/kvd/internal/watchcheck"
)

// load writes to kvd over RESP from several connections and records every
// acknowledged write at its revision (CLIENT LASTREV, asked on the same
// connection right after it): the reference a watch history is checked
// against.
type load struct {
	addr   string
	prefix string // the watched keys start with it; others go to "other/"

	mu  sync.Mutex
	ref map[uint64][]watchcheck.Change
	err error // the first failed write

	stop chan struct{}
	wg   sync.WaitGroup
}

// startLoad starts writers writers, each on a connection of its own,
// writing until Stop. Each writes, in turn, two watched keys in one MSET
// (one revision: the watch must deliver it whole) twice, a key outside the
// prefix (the watch must not deliver it), and a DEL of a watched key. The
// writers pause between writes: a load, not a flood, so that a browser on a
// loaded machine keeps up.
func startLoad(t *testing.T, addr, prefix string, writers int) *load {
	t.Helper()
	l := &load{addr: addr, prefix: prefix, ref: map[uint64][]watchcheck.Change{}, stop: make(chan struct{})}
	for w := range writers {
		rdb := newRedis(addr)
		l.wg.Go(func() {
			defer rdb.Close()
			l.run(rdb, w)
		})
	}
	t.Cleanup(func() { l.Stop() })
	return l
}

// newRedis returns a client of one connection (CLIENT LASTREV answers for
// its connection) that never retries (a retried write could be applied
// twice).
func newRedis(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:            addr,
		Protocol:        2,
		MaxRetries:      -1,
		PoolSize:        1,
		DisableIdentity: true,
		ReadTimeout:     30 * time.Second,
		WriteTimeout:    30 * time.Second,
	})
}

// Stop stops the writers and waits for them; it returns the first write
// error. It may be called more than once.
func (l *load) Stop() error {
	l.mu.Lock()
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.mu.Unlock()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Reference returns a copy of the acknowledged writes by revision.
func (l *load) Reference() map[uint64][]watchcheck.Change {
	l.mu.Lock()
	defer l.mu.Unlock()
	ref := make(map[uint64][]watchcheck.Change, len(l.ref))
	for rev, cs := range l.ref {
		ref[rev] = cs
	}
	return ref
}

func (l *load) run(rdb *redis.Client, w int) {
	ctx := context.Background()
	key := func(n int) string { return fmt.Sprintf("%sw%d/%d", l.prefix, w, n%10) }
	for n := 0; ; n++ {
		select {
		case <-l.stop:
			return
		case <-time.After(time.Millisecond):
		}
		val := fmt.Sprintf("%d.%d", w, n)
		var args []any
		var changes []watchcheck.Change
		switch n % 4 {
		case 0, 1:
			// key(n) and key(n+3): different keys, and key(n+3) is
			// the one the DEL three writes later removes.
			args = []any{"MSET", key(n), val, key(n + 3), val}
			changes = []watchcheck.Change{{Key: key(n), Value: val}, {Key: key(n + 3), Value: val}}
		case 2:
			k := fmt.Sprintf("other/w%d/%d", w, n)
			args = []any{"SET", k, val}
			changes = []watchcheck.Change{{Key: k, Value: val}}
		case 3:
			args = []any{"DEL", key(n)}
			changes = []watchcheck.Change{{Key: key(n), Delete: true}}
		}
		rev, res, err := writeRev(ctx, rdb, args)
		if err == nil && args[0] == "DEL" && res != int64(1) {
			err = fmt.Errorf("DEL %s of a key written before deleted %v", key(n), res)
		}
		if err != nil {
			l.fail(fmt.Errorf("writer %d: %v: %w", w, args, err))
			return
		}
		l.mu.Lock()
		if _, dup := l.ref[rev]; dup && l.err == nil {
			l.err = fmt.Errorf("writer %d: %v: revision %d given to two writes", w, args, rev)
		}
		l.ref[rev] = changes
		l.mu.Unlock()
	}
}

// writeRev sends args and CLIENT LASTREV in one pipeline on the client's
// one connection, and returns the write's revision and reply.
func writeRev(ctx context.Context, rdb *redis.Client, args []any) (rev uint64, res any, err error) {
	cmds, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Do(ctx, args...)
		p.Do(ctx, "CLIENT", "LASTREV")
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	res = cmds[0].(*redis.Cmd).Val()
	rev, err = cmds[1].(*redis.Cmd).Uint64()
	if err == nil && rev == 0 {
		err = fmt.Errorf("CLIENT LASTREV is 0 after a write")
	}
	return rev, res, err
}

// Last stops the writers, then writes one more watched key, key, and
// returns its revision: the last one of the reference, after every other.
func (l *load) Last(ctx context.Context, key string) (uint64, error) {
	if err := l.Stop(); err != nil {
		return 0, err
	}
	rdb := newRedis(l.addr)
	defer rdb.Close()
	rev, _, err := writeRev(ctx, rdb, []any{"SET", key, "last"})
	if err != nil {
		return 0, fmt.Errorf("SET %s: %w", key, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ref[rev] = []watchcheck.Change{{Key: key, Value: "last"}}
	return rev, nil
}

func (l *load) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = err
	}
}
