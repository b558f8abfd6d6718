package client

import (
	"context"
	"errors"
	"time"
)

// PutWithTTL stores value under key and makes it expire after ttl (SET
// key value PX ms), rounded down to the millisecond; ttl must be at least
// 1ms. A plain Put clears a key's expiry. The caller may reuse value once
// PutWithTTL returns.
func (c *Client) PutWithTTL(ctx context.Context, key string, value []byte, ttl time.Duration, opts ...WriteOption) error {
	if ttl < time.Millisecond {
		return &OpError{Op: "put", Err: errors.New("ttl under 1ms")}
	}
	args := c.writeArgs([]any{"set", key, value, "px", ttl.Milliseconds()}, opts)
	return mapError("put", c.rdb.Do(ctx, args...).Err())
}

// Expire makes key expire after ttl (PEXPIRE), rounded down to the
// millisecond: at once if ttl is under 1ms. It reports whether the key
// existed.
func (c *Client) Expire(ctx context.Context, key string, ttl time.Duration, opts ...WriteOption) (bool, error) {
	args := c.writeArgs([]any{"pexpire", key, ttl.Milliseconds()}, opts)
	n, err := c.rdb.Do(ctx, args...).Int64()
	return n == 1, mapError("expire", err)
}

// ExpireAt makes key expire at t (PEXPIREAT), to the millisecond. It
// reports whether the key existed.
func (c *Client) ExpireAt(ctx context.Context, key string, t time.Time, opts ...WriteOption) (bool, error) {
	args := c.writeArgs([]any{"pexpireat", key, t.UnixMilli()}, opts)
	n, err := c.rdb.Do(ctx, args...).Int64()
	return n == 1, mapError("expire at", err)
}

// Persist removes key's expiry (PERSIST). It reports whether the key
// existed and had one.
func (c *Client) Persist(ctx context.Context, key string, opts ...WriteOption) (bool, error) {
	args := c.writeArgs([]any{"persist", key}, opts)
	n, err := c.rdb.Do(ctx, args...).Int64()
	return n == 1, mapError("persist", err)
}

// ExpiresAt returns the time at which key expires (PEXPIRETIME), to the
// millisecond: the zero Time if it has no expiry, an error wrapping
// ErrNotFound if it does not exist.
func (c *Client) ExpiresAt(ctx context.Context, key string) (time.Time, error) {
	ms, err := c.rdb.Do(ctx, "pexpiretime", key).Int64()
	switch {
	case err != nil:
		return time.Time{}, mapError("expires at", err)
	case ms == -2:
		return time.Time{}, ErrNotFound
	case ms == -1:
		return time.Time{}, nil
	}
	return time.UnixMilli(ms), nil
}
