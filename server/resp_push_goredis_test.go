package server_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/push"

	"github.com/kvdstore/kvd/internal/watchcheck"
)

// pushRecorder records a watch's events as a watchcheck history.
type pushRecorder struct {
	t  *testing.T
	mu sync.Mutex
	h  watchcheck.History
}

func (r *pushRecorder) record(ev []any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch ev[0] {
	case "kvchange":
		d := watchcheck.Delivery{Revision: uint64(ev[2].(int64))}
		for _, op := range ev[3].([]any) {
			op := op.([]any)
			c := watchcheck.Change{Key: op[1].(string), Delete: op[0] == "del"}
			if !c.Delete {
				c.Value = op[2].(string)
			}
			d.Changes = append(d.Changes, c)
		}
		r.h.Deliveries = append(r.h.Deliveries, d)
	case "kvprogress":
		r.h.Deliveries = append(r.h.Deliveries, watchcheck.Delivery{Revision: uint64(ev[2].(int64)), Progress: true})
	default:
		r.t.Errorf("unexpected event %v", ev)
	}
}

func (r *pushRecorder) last() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.h.Last()
}

// HandlePushNotification records the RESP3 push frames go-redis hands it.
func (r *pushRecorder) HandlePushNotification(_ context.Context, _ push.NotificationHandlerContext, n []any) error {
	r.record(n)
	return nil
}

// watchSession is one connection's watch through go-redis. On RESP3 the
// events are push frames, which go-redis hands to the recorder before the
// reply of each command. On RESP2, go-redis has no call that reads a frame
// without sending a command, except through its PubSub, which only speaks
// Redis's SUBSCRIBE: every Do reads exactly one frame in order, so do pumps
// with PING until the reply of its own command comes, and counts the pongs
// still to come.
type watchSession struct {
	t       *testing.T
	rdb     *redis.Client
	conn    *redis.Conn // one connection: a pool's health check drops a connection with unread frames
	proto   int
	rec     *pushRecorder
	pending int // RESP2: pongs of pumping PINGs still to come
}

func newWatchSession(t *testing.T, addr string, proto int, rec *pushRecorder) *watchSession {
	rdb := redis.NewClient(&redis.Options{Addr: addr, Protocol: proto, PoolSize: 1, ReadTimeout: 20 * time.Second})
	conn := rdb.Conn()
	if proto == 3 {
		for _, kind := range []string{"kvchange", "kvprogress", "kvcompacted", "kverror"} {
			if err := conn.RegisterPushNotificationHandler(kind, rec, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	return &watchSession{t: t, rdb: rdb, conn: conn, proto: proto, rec: rec}
}

func (s *watchSession) send(args ...any) any {
	s.t.Helper()
	v, err := s.conn.Do(context.Background(), args...).Result()
	if err != nil {
		s.t.Fatalf("%v: %v", args, err)
	}
	return v
}

func (s *watchSession) close() {
	s.conn.Close()
	s.rdb.Close()
}

// do runs a command and returns its reply, recording the events before it.
func (s *watchSession) do(args ...any) any {
	s.t.Helper()
	v := s.send(args...)
	if s.proto == 3 {
		return v
	}
	extra := 0
	for {
		switch {
		case isEvent(v):
			s.rec.record(v.([]any))
		case s.pending > 0:
			s.pending--
		default:
			s.pending = extra
			return v
		}
		v = s.send("PING")
		extra++
	}
}

// TestKVWatchGoRedis watches a prefix with go-redis over RESP3 and RESP2
// while two clients write (MSETs across the watched prefix and others,
// DELs, INCRs), resumes on a new connection from the last revision seen plus
// one after KVUNWATCH, and checks the whole history with watchcheck against
// the store's own: ordered, unique, atomic per revision, complete, progress
// marks. It also checks that closing the connections leaves no watcher.
func TestKVWatchGoRedis(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		for _, proto := range []int{3, 2} {
			t.Run(fmt.Sprint("protocol ", proto), func(t *testing.T) {
				seed := rand.Uint64()
				if v := os.Getenv("KVD_WATCH_SEED"); v != "" {
					var err error
					if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
						t.Fatalf("KVD_WATCH_SEED: %v", err)
					}
				}
				t.Logf("seed %d (replay with KVD_WATCH_SEED=%d)", seed, seed)
				ts := startServer(t, serverOpts{io: model})
				rec := &pushRecorder{t: t, h: watchcheck.History{From: 1}}
				s1 := newWatchSession(t, ts.respAddr, proto, rec)
				defer s1.close()
				if got := s1.do("KVWATCH", "PREFIX", "w/", "FROM", "1", "PROGRESS", "50"); !same(got, []any{"kvwatch", int64(1), int64(1), int64(1)}) {
					t.Fatalf("KVWATCH: %v", got)
				}

				const writers, ops = 2, 150
				var wg sync.WaitGroup
				for i := range writers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						rnd := rand.New(rand.NewPCG(seed, uint64(i)))
						rdb := redis.NewClient(&redis.Options{Addr: ts.respAddr, Protocol: proto})
						defer rdb.Close()
						ctx := context.Background()
						key := func() string {
							return fmt.Sprintf("%s/%d", []string{"w", "x"}[rnd.IntN(2)], rnd.IntN(8))
						}
						for j := range ops {
							var err error
							switch rnd.IntN(4) {
							case 0, 1:
								err = rdb.MSet(ctx, key(), fmt.Sprint(i, j), key(), fmt.Sprint(i, j, "b"), key(), "c").Err()
							case 2:
								err = rdb.Del(ctx, key(), key()).Err()
							default:
								err = rdb.IncrBy(ctx, "w/n", 2).Err()
							}
							if err != nil {
								t.Errorf("write: %v", err)
								return
							}
						}
					}()
				}
				// Watch until about half the writes are in, then end the
				// watch and resume on another connection.
				deadline := time.Now().Add(60 * time.Second)
				for rec.last() < writers*ops/2 && time.Now().Before(deadline) {
					s1.do("PING")
					time.Sleep(5 * time.Millisecond)
				}
				if got := s1.do("KVUNWATCH", "1"); !same(got, []any{"kvunwatch", []any{int64(1)}, int64(0)}) {
					t.Fatalf("KVUNWATCH: %v", got)
				}
				s1.close()
				from := rec.last() + 1
				s2 := newWatchSession(t, ts.respAddr, proto, rec)
				defer s2.close()
				if got := s2.do("KVWATCH", "PREFIX", "w/", "FROM", fmt.Sprint(from), "PROGRESS", "50"); !same(got, []any{"kvwatch", int64(1), int64(from), int64(1)}) {
					t.Fatalf("KVWATCH FROM %d: %v", from, got)
				}
				wg.Wait()
				target := ts.db.WrittenRevision()
				for rec.last() < target {
					if time.Now().After(deadline) {
						t.Fatalf("the watch reached revision %d, want %d", rec.last(), target)
					}
					s2.do("PING")
					time.Sleep(5 * time.Millisecond)
				}

				// A write outside the prefix: only a progress mark
				// moves the watch past it.
				w := dialRaw(t, ts.respAddr)
				w.do("SET", "x/last", "1")
				target = ts.db.WrittenRevision()
				for rec.last() < target {
					if time.Now().After(deadline) {
						t.Fatalf("no progress mark to revision %d: at %d", target, rec.last())
					}
					s2.do("PING")
					time.Sleep(5 * time.Millisecond)
				}

				sets, _, err := ts.db.Changes(1, nil, 0, target)
				if err != nil {
					t.Fatal(err)
				}
				ref := map[uint64][]watchcheck.Change{}
				for _, cs := range sets {
					for _, c := range cs.Changes {
						ref[cs.Revision] = append(ref[cs.Revision], watchcheck.Change{Key: string(c.Key), Value: string(c.Value), Delete: c.Delete})
					}
				}
				rec.mu.Lock()
				errs := watchcheck.Check(rec.h, ref, func(k string) bool { return len(k) > 2 && k[:2] == "w/" })
				changes, marks := 0, 0
				for _, d := range rec.h.Deliveries {
					if d.Progress {
						marks++
					} else {
						changes++
					}
				}
				rec.mu.Unlock()
				if len(errs) > 0 {
					t.Fatalf("history (seed %d):\n%s", seed, watchcheck.Summary(errs))
				}
				if changes == 0 || marks == 0 {
					t.Fatalf("%d revisions and %d progress marks delivered, want some of each", changes, marks)
				}
				s2.close()
				waitWatchers(t, ts, 0)
			})
		}
	})
}
