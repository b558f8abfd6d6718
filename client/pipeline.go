package client

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

// Pipeline queues operations and sends them in one round trip with Exec.
// The server commits runs of queued Puts with the same durability as one
// batch. A Pipeline is not safe for concurrent use; the Client it came from
// is.
type Pipeline struct {
	c    *Client
	pipe redis.Pipeliner
	ops  []pipeOp
}

type pipeOp struct {
	kind int
	cmd  redis.Cmder
}

const (
	opPut = iota
	opGet
	opDelete
)

// Result is the outcome of one queued operation.
type Result struct {
	// Value is the value of a Get.
	Value []byte
	// Deleted reports whether a Delete found the key.
	Deleted bool
	// Err is the operation's error (ErrNotFound for a Get of a missing key).
	Err error
}

// Pipeline returns an empty pipeline.
func (c *Client) Pipeline() *Pipeline {
	return &Pipeline{c: c, pipe: c.rdb.Pipeline()}
}

// Put queues a Put. The pipeline keeps value until Exec returns.
func (p *Pipeline) Put(key string, value []byte, opts ...WriteOption) {
	args := p.c.writeArgs([]any{"set", key, value}, opts)
	p.ops = append(p.ops, pipeOp{opPut, p.pipe.Do(context.Background(), args...)})
}

// Get queues a Get.
func (p *Pipeline) Get(key string) {
	p.ops = append(p.ops, pipeOp{opGet, p.pipe.Get(context.Background(), key)})
}

// Delete queues a Delete.
func (p *Pipeline) Delete(key string, opts ...WriteOption) {
	args := p.c.writeArgs([]any{"del", key}, opts)
	p.ops = append(p.ops, pipeOp{opDelete, p.pipe.Do(context.Background(), args...)})
}

// Len returns the number of queued operations.
func (p *Pipeline) Len() int { return len(p.ops) }

// Exec sends the queued operations and returns one Result per operation, in
// order. The error is non-nil only if the pipeline as a whole failed (a
// network error, ctx ended); per-operation errors are in the Results. The
// pipeline is empty afterwards.
func (p *Pipeline) Exec(ctx context.Context) ([]Result, error) {
	ops := p.ops
	p.ops = nil
	if len(ops) == 0 {
		return nil, nil
	}
	_, err := p.pipe.Exec(ctx)
	if err != nil {
		// A reply error (or redis.Nil) belongs to one operation; anything
		// else failed the whole pipeline.
		var re redis.Error
		if !errors.As(err, &re) {
			return nil, mapError("pipeline", err)
		}
	}
	res := make([]Result, len(ops))
	for i, op := range ops {
		switch op.kind {
		case opGet:
			v, err := op.cmd.(*redis.StringCmd).Bytes()
			res[i] = Result{Value: v, Err: mapError("get", err)}
		case opDelete:
			n, err := op.cmd.(*redis.Cmd).Int64()
			res[i] = Result{Deleted: n > 0, Err: mapError("delete", err)}
		default:
			res[i] = Result{Err: mapError("put", op.cmd.Err())}
		}
	}
	return res, nil
}
