package server

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/watch"
)

// The change feed: CHANGES over RESP, /v1/watch (SSE), /v1/changes
// (long-poll) and blocking reads over HTTP. All of them read the store's
// change history (engine.DB.Changes); the streams go through a watch.Hub.

// changeFeed is what the change feed needs of the store, beyond Store.
// *engine.DB implements it; a store that does not has no feed (the
// commands and endpoints answer that it is not supported).
type changeFeed interface {
	watch.Source
	OldestRevision() uint64
}

// watchState is the server's change feed.
type watchState struct {
	feed changeFeed // nil: the store has none
	hub  *watch.Hub
	done chan struct{} // closed by Shutdown: blocked requests return
	once sync.Once
}

// errNoFeed answers a watch request to a store without a change feed.
var errNoFeed = errors.New("this store keeps no change history")

// initWatch starts the change feed's hub, if the store has a history, and
// registers its metrics. Called by New.
func (s *Server) initWatch() {
	s.watch.done = make(chan struct{})
	f, ok := s.store.(changeFeed)
	if !ok {
		return
	}
	s.watch.feed = f
	s.watch.hub = watch.NewHub(f, s.cfg.Watch)
	s.metrics.reg.MustRegister(&watchCollector{hub: s.watch.hub})
}

// closeWatch ends every watch and blocked change request. Called by
// Shutdown.
func (s *Server) closeWatch() {
	s.watch.once.Do(func() {
		close(s.watch.done)
		if s.watch.hub != nil {
			s.watch.hub.Close()
		}
	})
}

// feedBound is the last revision a reader of the feed may see: durable by
// default, written if it asks for it.
func (s *Server) feedBound(written bool) uint64 {
	if written {
		return s.store.WrittenRevision()
	}
	return s.store.DurableRevision()
}

// changesRequest is a pull of the feed: CHANGES, GET /v1/changes.
type changesRequest struct {
	from    uint64 // 0: the next revision
	filter  watch.Filter
	count   int
	block   time.Duration
	blocks  bool // block set (0: for ever, over RESP)
	written bool
	// stillAllowed, if set, is asked on each reload of the users while
	// the pull waits: false ends the wait (an HTTP long-poll whose user
	// the reload removed).
	stillAllowed func() bool
	// gone, if set, ends the wait once closed (the HTTP client went away).
	gone <-chan struct{}
}

// Bounds of a pull.
const (
	defaultChangesCount = 1000
	maxChangesCount     = 100_000
)

// pullChanges answers a pull: the change sets from req.from, waiting up to
// req.block for one if there are none yet. It returns them, the cursor to
// pass next, and the progress revision (every matching change through it has
// been returned).
func (s *Server) pullChanges(req changesRequest) ([]engine.ChangeSet, uint64, uint64, error) {
	f := s.watch.feed
	if f == nil {
		return nil, 0, 0, errNoFeed
	}
	if req.from == 0 {
		req.from = s.feedBound(req.written) + 1
	}
	var deadline <-chan time.Time
	if req.blocks && req.block > 0 {
		t := time.NewTimer(req.block)
		defer t.Stop()
		deadline = t.C
	}
	var reloaded <-chan struct{}
	if req.stillAllowed != nil {
		reloaded = s.usersReloaded.wait()
	}
	for {
		notify := f.ChangesNotify()
		bound := s.feedBound(req.written)
		sets, next, err := f.Changes(req.from, req.filter.Match, req.count, bound)
		if err != nil {
			return nil, 0, 0, err
		}
		if len(sets) > 0 || !req.blocks {
			return sets, next, next - 1, nil
		}
		req.from = next
		select {
		case <-notify:
		case <-reloaded:
			if !req.stillAllowed() {
				return nil, next, next - 1, nil
			}
			reloaded = s.usersReloaded.wait()
		case <-deadline:
			return nil, next, next - 1, nil
		case <-req.gone:
			return nil, next, next - 1, nil
		case <-s.watch.done:
			return nil, next, next - 1, nil
		}
	}
}

// cmdChanges answers
//
//	CHANGES FROM rev [KEY k | PREFIX p] [COUNT n] [BLOCK ms] [DURABILITY durable|written]
//
// with [next, [[rev, "put"|"del", key, value|nil], ...], progress]: the
// changes from revision rev (0: the next one) of key k, or of the keys
// starting with p (every key without either), at most n (default 1000) but
// whole revisions, of durable revisions only unless DURABILITY written.
// next is the FROM of the following call; progress the revision through
// which every matching change has been returned, which moves even when
// nothing matches. With BLOCK it waits up to ms milliseconds (0: for ever)
// for a change when there is none, and answers an empty list if none comes.
// A revision older than the history gives
// "-COMPACTED oldest=N requested=M": re-read the state and go on from its
// revision. It runs on a worker goroutine, never on the event loop.
func cmdChanges(c *respConn, args [][]byte) {
	req, msg := parseChanges(args[1:])
	if msg != "" {
		c.writeError(msg)
		return
	}
	sets, next, progress, err := c.s.pullChanges(req)
	if err != nil {
		c.writeError(changesError(err))
		return
	}
	c.writeArray(3)
	c.writeInt(int64(next))
	n := 0
	for _, cs := range sets {
		n += len(cs.Changes)
	}
	c.writeArray(n)
	for _, cs := range sets {
		for _, ch := range cs.Changes {
			c.writeArray(4)
			c.writeInt(int64(cs.Revision))
			if ch.Delete {
				c.writeBulkString("del")
				c.writeBulk(ch.Key)
				c.writeNull()
			} else {
				c.writeBulkString("put")
				c.writeBulk(ch.Key)
				c.writeBulk(ch.Value)
			}
		}
	}
	c.writeInt(int64(progress))
}

// changesError is the RESP error of a failed pull.
func changesError(err error) string {
	var ce *engine.CompactedError
	switch {
	case errors.As(err, &ce):
		return fmt.Sprintf("COMPACTED oldest=%d requested=%d", ce.Oldest, ce.Requested)
	case errors.Is(err, errNoFeed):
		return "ERR " + err.Error()
	}
	return respError(err)
}

// parseChanges parses CHANGES's arguments; a non-empty message is the
// error to answer.
func parseChanges(args [][]byte) (changesRequest, string) {
	req := changesRequest{filter: watch.Filter{Prefix: true}, count: defaultChangesCount}
	haveFrom, haveFilter := false, false
	for i := 0; i < len(args); i += 2 {
		if i+1 >= len(args) {
			return req, respErrSyntax
		}
		opt, v := args[i], args[i+1]
		if ok, msg := parseFeedOption(opt, v, &req.from, &req.filter, &req.written, &haveFrom, &haveFilter); ok || msg != "" {
			if msg != "" {
				return req, msg
			}
			continue
		}
		switch {
		case equalFold(opt, "count"):
			n, err := strconv.Atoi(string(v))
			if err != nil || n < 1 || n > maxChangesCount {
				return req, fmt.Sprintf("ERR COUNT must be 1 to %d", maxChangesCount)
			}
			req.count = n
		case equalFold(opt, "block"):
			n, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil || n < 0 || n > int64(24*time.Hour/time.Millisecond) {
				return req, "ERR BLOCK must be milliseconds, 0 (for ever) to a day"
			}
			req.block, req.blocks = time.Duration(n)*time.Millisecond, true
		default:
			return req, respErrSyntax
		}
	}
	if !haveFrom {
		return req, "ERR CHANGES needs FROM rev"
	}
	return req, ""
}

// parseFeedOption parses an option CHANGES and KVWATCH share (FROM, KEY,
// PREFIX, DURABILITY) into from, filter and written. ok is false, with no
// message, for an option it does not know; a message is the error to answer.
func parseFeedOption(opt, v []byte, from *uint64, filter *watch.Filter, written, haveFrom, haveFilter *bool) (ok bool, msg string) {
	switch {
	case equalFold(opt, "from"):
		n, err := strconv.ParseUint(string(v), 10, 64)
		if err != nil {
			return false, "ERR FROM must be a revision (an unsigned integer; 0: the next one)"
		}
		*from, *haveFrom = n, true
	case equalFold(opt, "key"), equalFold(opt, "prefix"):
		if *haveFilter {
			return false, "ERR give one KEY or PREFIX"
		}
		*haveFilter = true
		*filter = watch.Filter{Key: bytes.Clone(v), Prefix: equalFold(opt, "prefix")}
	case equalFold(opt, "durability"):
		switch {
		case equalFold(v, "durable"):
			*written = false
		case equalFold(v, "written"):
			*written = true
		default:
			return false, "ERR DURABILITY must be durable or written"
		}
	default:
		return false, ""
	}
	return true, ""
}

// watchCollector reports the hub's figures on /metrics.
type watchCollector struct{ hub *watch.Hub }

var (
	descWatchers = prometheus.NewDesc("kvd_watchers", "Open watchers (SSE streams, KVWATCH watches, blocking reads), by state: live (fed by the hub) or catchup (reading the history at their own pace).", []string{"state"}, nil)
	descSent     = prometheus.NewDesc("kvd_watch_events_sent_total", "Changes handed to watchers.", nil, nil)
	descCompact  = prometheus.NewDesc("kvd_watch_compacted_total", "Watchers ended because they fell behind the change history's retention.", nil, nil)
	descOverflow = prometheus.NewDesc("kvd_watch_overflows_total", "Times a watcher's buffer filled and it fell back to catching up from the history.", nil, nil)
	descLag      = prometheus.NewDesc("kvd_watch_lag_revisions", "Revisions the watcher furthest behind has yet to take.", nil, nil)
)

func (c *watchCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descWatchers, descSent, descCompact, descOverflow, descLag} {
		ch <- d
	}
}

func (c *watchCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.hub.Stats()
	ch <- prometheus.MustNewConstMetric(descWatchers, prometheus.GaugeValue, float64(st.Live), "live")
	ch <- prometheus.MustNewConstMetric(descWatchers, prometheus.GaugeValue, float64(st.CatchingUp), "catchup")
	ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, float64(st.Sent))
	ch <- prometheus.MustNewConstMetric(descCompact, prometheus.CounterValue, float64(st.Compacted))
	ch <- prometheus.MustNewConstMetric(descOverflow, prometheus.CounterValue, float64(st.Overflows))
	ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, float64(st.MaxLag))
}
