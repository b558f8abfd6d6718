package replication

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/kvdstore/kvd/engine"
)

// The cluster calls travel on the cluster port (protoCluster), one call at
// a time per connection, each a frame:
//
//	request:  op byte | uvarint length | payload
//	response: status byte | uvarint length | payload
//
// A connection is kept for later calls to the same node.
const (
	opApply     byte = 1  // payload: flags byte | encoded batch → outcome
	opReadIndex byte = 2  // payload: verify byte [| uvarint term | id, the asking voter's vouch] → uvarint index
	opSync      byte = 3  // payload: none → none
	opJoin      byte = 4  // payload: id | address (length-prefixed) → none
	opStatus    byte = 5  // payload: none → status JSON
	opRemove    byte = 6  // payload: id → none
	opMember    byte = 7  // payload: kind byte | id | address → none (add a nonvoter, demote)
	opTransfer  byte = 8  // payload: id (empty: any) → none
	opAddrs     byte = 9  // payload: none → JSON ClientAddrs
	opStateHash byte = 10 // payload: uvarint log index → JSON hashResult
	opTerm      byte = 11 // payload: none → uvarint current Raft term
)

const (
	statusOK byte = iota
	statusNotLeader
	statusNoLeader
	statusOutcomeUnknown
	statusError
	statusLeadershipLost
)

// maxFrame bounds a frame: a batch is at most a few MiB.
const maxFrame = 256 << 20

func writeFrame(w *bufio.Writer, kind byte, payload []byte) error {
	var hdr [1 + binary.MaxVarintLen64]byte
	hdr[0] = kind
	n := binary.PutUvarint(hdr[1:], uint64(len(payload)))
	if _, err := w.Write(hdr[:1+n]); err != nil {
		return err
	}
	if _, err := w.Write(payload); err != nil {
		return err
	}
	return w.Flush()
}

func readFrame(r *bufio.Reader) (byte, []byte, error) {
	kind, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, nil, err
	}
	if n > maxFrame {
		return 0, nil, fmt.Errorf("replication: frame of %d bytes", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, err
	}
	return kind, p, nil
}

// callError is the error of a call the remote node answered with a
// status other than OK.
func callError(status byte, msg string) error {
	switch status {
	case statusNotLeader:
		return fmt.Errorf("%w: %s", errNotLeader, msg)
	case statusNoLeader:
		return fmt.Errorf("%w: %s", ErrNoLeader, msg)
	case statusLeadershipLost:
		return &remoteErr{sentinels: []error{ErrLeadershipLost, engine.ErrOutcomeUnknown}, msg: msg}
	case statusOutcomeUnknown:
		return &remoteErr{sentinels: []error{engine.ErrOutcomeUnknown}, msg: msg}
	}
	return errors.New(msg)
}

// statusOf is the status a node answers a call that failed with err.
func statusOf(err error) byte {
	switch {
	case errors.Is(err, errNotLeader):
		return statusNotLeader
	case errors.Is(err, ErrNoLeader):
		return statusNoLeader
	case errors.Is(err, ErrLeadershipLost):
		return statusLeadershipLost
	case errors.Is(err, engine.ErrOutcomeUnknown):
		return statusOutcomeUnknown
	}
	return statusError
}

// peers keeps connections to other nodes' cluster ports.
type peers struct {
	local net.Addr    // to dial from; nil: any
	tls   *tls.Config // to dial with; nil: plain TCP
	mu    sync.Mutex
	idle  map[string][]*peerConn
}

type peerConn struct {
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

const maxIdlePerPeer = 64

// call sends one request to addr and returns the response's payload.
// A connection that fails is dropped; a call on a kept connection that
// fails before the whole request was sent is tried once on a new one.
// An error wrapping errNotSent means that addr did not receive the whole
// request (it cannot have acted on it); one wrapping errSentNoAnswer,
// that it may have.
func (p *peers) call(addr string, op byte, payload []byte, timeout time.Duration) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	pc, kept, err := p.get(addr, timeout, !idempotent(op))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNotSent, err)
	}
	pc.c.SetDeadline(deadline)
	if err := writeFrame(pc.w, op, payload); err != nil {
		pc.c.Close()
		if kept {
			// The kept connection had failed meanwhile (the node
			// restarted, say): one more try on a new one.
			if pc, _, err = p.get(addr, time.Until(deadline), !idempotent(op)); err != nil {
				return nil, fmt.Errorf("%w: %w", errNotSent, err)
			}
			pc.c.SetDeadline(deadline)
			err = writeFrame(pc.w, op, payload)
		}
		if err != nil {
			pc.c.Close()
			return nil, fmt.Errorf("replication: call %s: %w: %w", addr, errNotSent, err)
		}
	}
	status, resp, err := readFrame(pc.r)
	if err != nil {
		pc.c.Close()
		if kept && idempotent(op) && time.Now().Before(deadline) {
			// The kept connection had failed meanwhile: asked again.
			return p.call(addr, op, payload, time.Until(deadline))
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("replication: call %s: connection closed: %w", addr, errSentNoAnswer)
		}
		return nil, fmt.Errorf("replication: call %s: %w: %w", addr, errSentNoAnswer, err)
	}
	pc.c.SetDeadline(time.Time{})
	p.put(addr, pc)
	if status != statusOK {
		return nil, callError(status, string(resp))
	}
	return resp, nil
}

// errSentNoAnswer: a request was sent and no answer came back; what it did
// is unknown.
var errSentNoAnswer = errors.New("sent, no answer")

// errNotSent: a request could not be sent (whole) to a node, which cannot
// have acted on it.
var errNotSent = errors.New("not sent")

// idempotent reports whether asking op again changes nothing: its call
// uses a kept connection without first checking that it is open (a
// system call), and is made again on a new connection if it fails on a
// kept one.
func idempotent(op byte) bool { return op == opTerm }

// get returns a kept connection to addr (kept true) or a new one. With
// probe, a kept connection that its node has closed meanwhile is dropped
// here, before a request is sent on it: sent, it would have had no
// answer, and its outcome would be unknown.
func (p *peers) get(addr string, timeout time.Duration, probe bool) (pc *peerConn, kept bool, err error) {
	for {
		p.mu.Lock()
		cs := p.idle[addr]
		if len(cs) == 0 {
			p.mu.Unlock()
			break
		}
		pc := cs[len(cs)-1]
		p.idle[addr] = cs[:len(cs)-1]
		p.mu.Unlock()
		if !probe || pc.open() {
			return pc, true, nil
		}
		pc.c.Close()
	}
	c, err := dialProto(p.local, p.tls, addr, protoCluster, timeout)
	if err != nil {
		return nil, false, fmt.Errorf("replication: dial %s: %w", addr, err)
	}
	return &peerConn{c: c, r: bufio.NewReader(c), w: bufio.NewWriter(c)}, false, nil
}

// open reports whether a kept connection is still open. Its node sends
// nothing between an answer and the next request, so bytes or the end of
// the connection waiting to be read (connClosed) mean it is not.
func (pc *peerConn) open() bool {
	if pc.r.Buffered() > 0 {
		return false
	}
	c := pc.c
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	return !connClosed(c)
}

func (p *peers) put(addr string, pc *peerConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.idle == nil {
		p.idle = map[string][]*peerConn{}
	}
	if len(p.idle[addr]) >= maxIdlePerPeer {
		pc.c.Close()
		return
	}
	p.idle[addr] = append(p.idle[addr], pc)
}

func (p *peers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, cs := range p.idle {
		for _, pc := range cs {
			pc.c.Close()
		}
	}
	p.idle = nil
}

// ---- encodings ----

// Result error codes: the engine's errors a result may carry.
var resultErrs = []error{nil, engine.ErrNotInteger, engine.ErrOverflow, engine.ErrRequireFailed,
	engine.ErrNotFloat, engine.ErrFloatRange, engine.ErrValueTooLarge}

// remoteErr is an error from another node: it is its sentinels for
// errors.Is, with the message the other node gave.
type remoteErr struct {
	sentinels []error
	msg       string
}

func (e *remoteErr) Error() string   { return e.msg }
func (e *remoteErr) Unwrap() []error { return e.sentinels }

func appendBytes(dst, b []byte) []byte {
	if b == nil {
		return append(dst, 0)
	}
	dst = append(dst, 1)
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func encodeOutcome(dst []byte, o engine.Outcome) []byte {
	dst = binary.AppendUvarint(dst, o.Revision)
	aborted := byte(0)
	if o.Aborted {
		aborted = 1
	}
	dst = append(dst, aborted)
	dst = binary.AppendUvarint(dst, uint64(len(o.Results)))
	for _, r := range o.Results {
		applied := byte(0)
		if r.Applied {
			applied = 1
		}
		dst = append(dst, applied)
		dst = appendBytes(dst, r.Old)
		dst = binary.AppendVarint(dst, r.Int)
		dst = appendBytes(dst, r.Value)
		dst = binary.AppendUvarint(dst, r.ModRevision)
		dst = binary.AppendUvarint(dst, r.CreateRevision)
		code := 0
		if r.Err != nil {
			code = len(resultErrs) // unknown: message only
			for i, e := range resultErrs[1:] {
				if errors.Is(r.Err, e) {
					code = i + 1
					break
				}
			}
			dst = append(dst, byte(code))
			dst = appendBytes(dst, []byte(r.Err.Error()))
		} else {
			dst = append(dst, 0)
		}
	}
	return dst
}

type decoder struct {
	p   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errors.New("replication: malformed outcome")
	}
	d.p = nil
}

func (d *decoder) byte() byte {
	if len(d.p) < 1 {
		d.fail()
		return 0
	}
	b := d.p[0]
	d.p = d.p[1:]
	return b
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.p)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.p = d.p[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.p)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.p = d.p[n:]
	return v
}

func (d *decoder) bytes() []byte {
	if d.byte() == 0 {
		return nil
	}
	n := d.uvarint()
	if uint64(len(d.p)) < n {
		d.fail()
		return nil
	}
	b := d.p[:n:n]
	d.p = d.p[n:]
	return b
}

func decodeOutcome(p []byte) (engine.Outcome, error) {
	d := &decoder{p: p}
	var o engine.Outcome
	o.Revision = d.uvarint()
	o.Aborted = d.byte() == 1
	n := d.uvarint()
	if n > uint64(len(p)) {
		return o, errors.New("replication: malformed outcome")
	}
	o.Results = make([]engine.Result, 0, n)
	for range n {
		var r engine.Result
		r.Applied = d.byte() == 1
		r.Old = d.bytes()
		r.Int = d.varint()
		r.Value = d.bytes()
		r.ModRevision = d.uvarint()
		r.CreateRevision = d.uvarint()
		if code := int(d.byte()); code != 0 {
			msg := string(d.bytes())
			var sentinels []error
			if code < len(resultErrs) {
				sentinels = []error{resultErrs[code]}
			}
			r.Err = &remoteErr{sentinels: sentinels, msg: msg}
		}
		o.Results = append(o.Results, r)
	}
	if d.err != nil {
		return engine.Outcome{}, d.err
	}
	return o, nil
}
