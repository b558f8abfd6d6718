// Package client is the Go client of kvd. It speaks RESP to a kvd server
// through github.com/redis/go-redis/v9: a pool of connections, safe for
// concurrent use, with explicit pipelining ([Client.Pipeline]).
//
// Every network call takes a context; its deadline bounds the call. Writes
// take a durability: the server's default, or per call with
// WithDurability(DurabilitySync) (acknowledged after fsync) or
// DurabilityAsync (acknowledged after write, fsynced within the server's
// flush interval). [Client.Sync] is a durability barrier.
//
// Every key carries the revision of the write that created it and of the
// one that last set it ([Client.GetEntry]); [Client.CompareAndPut] and
// [Client.CompareAndDelete] write only if the key's mod revision is the one
// read, for optimistic concurrency.
//
// Errors map back from the server: errors.Is(err, client.ErrNotFound) for a
// missing key, ErrValueTooLarge for a value over the server's limit, a
// *RevisionMismatchError for a failed compare, and so on (see errors.go).
package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Durability is how a write is acknowledged.
type Durability int

const (
	// DurabilityDefault uses the server's commit mode.
	DurabilityDefault Durability = iota
	// DurabilitySync acknowledges a write once it is fsynced.
	DurabilitySync
	// DurabilityAsync acknowledges a write once it is written to the log;
	// the server fsyncs it within its flush interval.
	DurabilityAsync
)

// String returns "default", "sync" or "async".
func (d Durability) String() string {
	switch d {
	case DurabilitySync:
		return "sync"
	case DurabilityAsync:
		return "async"
	default:
		return "default"
	}
}

// ParseDurability parses "sync", "async" or "default" ("" is default).
func ParseDurability(s string) (Durability, error) {
	switch strings.ToLower(s) {
	case "", "default":
		return DurabilityDefault, nil
	case "sync":
		return DurabilitySync, nil
	case "async":
		return DurabilityAsync, nil
	}
	return 0, errors.New("kvd: durability must be sync, async or default, not " + strconv.Quote(s))
}

// token is the extra argument that asks the server for durability d.
func (d Durability) token() string {
	switch d {
	case DurabilitySync:
		return "SYNC"
	case DurabilityAsync:
		return "ASYNC"
	}
	return ""
}

// Options configures a Client. The zero value is valid.
type Options struct {
	// PoolSize is the most connections the client opens (default: 10 per
	// CPU, as go-redis).
	PoolSize int
	// Durability is the default durability of writes.
	Durability Durability
	// DialTimeout bounds connecting (default 5s).
	DialTimeout time.Duration
	// Protocol is the RESP version to speak, 2 or 3 (default 3).
	Protocol int
	// Username and Password authenticate each connection (HELLO ... AUTH,
	// or AUTH) to a server with users; an empty Username is the user
	// "default" (kvd --requirepass). PasswordFile, if set, is read for
	// the password instead (its first line), so that it need not be in
	// the program's arguments or environment.
	Username     string
	Password     string
	PasswordFile string
	// TLS, if set, connects over TLS with this configuration (kvd
	// --tls-cert); TLSFiles.Config makes one from PEM files. Without a
	// ServerName the host of addr is verified.
	TLS *tls.Config
}

// password returns opts' password, from PasswordFile if set.
func (opts *Options) password() (string, error) {
	if opts.PasswordFile == "" {
		return opts.Password, nil
	}
	if opts.Password != "" {
		return "", errors.New("kvd: Options.Password and PasswordFile exclude each other")
	}
	return ReadPasswordFile(opts.PasswordFile)
}

// ReadPasswordFile returns the first line of the file at path, without its
// line ending: a password kept out of command lines and environments.
func ReadPasswordFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("kvd: password file: %w", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return "", fmt.Errorf("kvd: password file %s: the first line is empty", path)
	}
	return line, nil
}

// Client is a kvd client. It is safe for concurrent use.
type Client struct {
	rdb        *redis.Client
	durability Durability
}

// KV is a key and its value.
type KV struct {
	Key   string
	Value []byte
}

// Dial returns a client of the kvd server at addr (host:port) after checking
// that it answers.
func Dial(ctx context.Context, addr string, opts Options) (*Client, error) {
	if opts.Durability < DurabilityDefault || opts.Durability > DurabilityAsync {
		return nil, errors.New("kvd: bad Options.Durability")
	}
	if opts.Protocol == 0 {
		opts.Protocol = 3
	}
	password, err := opts.password()
	if err != nil {
		return nil, err
	}
	rdb := redis.NewClient(&redis.Options{
		Addr:                  addr,
		Username:              opts.Username,
		Password:              password,
		Protocol:              opts.Protocol,
		PoolSize:              opts.PoolSize,
		DialTimeout:           opts.DialTimeout,
		TLSConfig:             opts.TLS,
		ContextTimeoutEnabled: true,
		// kvd sends no maintenance notifications.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, mapError("dial "+addr, err)
	}
	return &Client{rdb: rdb, durability: opts.Durability}, nil
}

// Close closes the client's connections. Calls after it return ErrClosed.
func (c *Client) Close() error {
	err := c.rdb.Close()
	if errors.Is(err, redis.ErrClosed) {
		return nil
	}
	return err
}

// WriteOption modifies one write.
type WriteOption func(*writeOptions)

type writeOptions struct{ durability Durability }

// WithDurability sets the durability of one write.
func WithDurability(d Durability) WriteOption {
	return func(o *writeOptions) { o.durability = d }
}

// writeArgs appends the durability token of opts to args.
func (c *Client) writeArgs(args []any, opts []WriteOption) []any {
	wo := writeOptions{durability: c.durability}
	for _, o := range opts {
		o(&wo)
	}
	if t := wo.durability.token(); t != "" {
		args = append(args, t)
	}
	return args
}

// Put stores value under key. The caller may reuse value once Put returns.
func (c *Client) Put(ctx context.Context, key string, value []byte, opts ...WriteOption) error {
	args := c.writeArgs([]any{"set", key, value}, opts)
	return mapError("put", c.rdb.Do(ctx, args...).Err())
}

// PutMany stores every pair as one atomic batch (MSET): after a crash either
// all of them or none survive.
func (c *Client) PutMany(ctx context.Context, kvs []KV, opts ...WriteOption) error {
	if len(kvs) == 0 {
		return nil
	}
	args := make([]any, 0, 2+2*len(kvs))
	args = append(args, "mset")
	for _, kv := range kvs {
		args = append(args, kv.Key, kv.Value)
	}
	args = c.writeArgs(args, opts)
	return mapError("put many", c.rdb.Do(ctx, args...).Err())
}

// Get returns the value of key, or an error wrapping ErrNotFound. The
// returned slice belongs to the caller.
func (c *Client) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := c.rdb.Get(ctx, key).Bytes()
	if err != nil {
		return nil, mapError("get", err)
	}
	return v, nil
}

// Entry is a key's value and revisions.
type Entry struct {
	Value []byte
	// ModRevision is the revision of the write that last set the key: the
	// revision CompareAndPut and CompareAndDelete compare.
	ModRevision uint64
	// CreateRevision is the revision of the write that created the key
	// (the first to give it a value since it last held none).
	CreateRevision uint64
}

// GetEntry returns the value and revisions of key (GETREV), or an error
// wrapping ErrNotFound. The returned value belongs to the caller.
func (c *Client) GetEntry(ctx context.Context, key string) (Entry, error) {
	res, err := c.rdb.Do(ctx, "getrev", key).Slice()
	if err != nil {
		return Entry{}, mapError("get entry", err)
	}
	bad := &OpError{Op: "get entry", Err: errors.New("unexpected GETREV reply")}
	if len(res) != 3 {
		return Entry{}, bad
	}
	v, ok1 := res[0].(string)
	mod, ok2 := res[1].(int64)
	create, ok3 := res[2].(int64)
	if !ok1 || !ok2 || !ok3 {
		return Entry{}, bad
	}
	return Entry{Value: []byte(v), ModRevision: uint64(mod), CreateRevision: uint64(create)}, nil
}

// CompareAndPut stores value under key only if the key's mod revision is
// rev when the server applies the write; rev 0 means only if the key holds
// no value. It returns the key's new mod revision (the write's revision),
// or a *RevisionMismatchError (errors.Is(err, ErrRevisionMismatch)) with
// the key's current mod revision if it was another: then nothing was
// written. The caller may reuse value once CompareAndPut returns.
func (c *Client) CompareAndPut(ctx context.Context, key string, value []byte, rev uint64, opts ...WriteOption) (uint64, error) {
	args := c.writeArgs([]any{"cas", key, rev, value}, opts)
	n, err := c.rdb.Do(ctx, args...).Int64()
	if err != nil {
		return 0, mapError("compare and put", err)
	}
	return uint64(n), nil
}

// CompareAndDelete deletes key only if its mod revision is rev when the
// server applies the write (rev 0: only if the key holds no value, which
// deletes nothing). If it was another, it returns a *RevisionMismatchError
// with the key's current mod revision, and nothing was deleted.
func (c *Client) CompareAndDelete(ctx context.Context, key string, rev uint64, opts ...WriteOption) error {
	args := c.writeArgs([]any{"cad", key, rev}, opts)
	return mapError("compare and delete", c.rdb.Do(ctx, args...).Err())
}

// Delete deletes key and reports whether it existed.
func (c *Client) Delete(ctx context.Context, key string, opts ...WriteOption) (bool, error) {
	args := c.writeArgs([]any{"del", key}, opts)
	n, err := c.rdb.Do(ctx, args...).Int64()
	if err != nil {
		return false, mapError("delete", err)
	}
	return n > 0, nil
}

// ScanOptions selects the keys of a Scan.
type ScanOptions struct {
	// Prefix keeps only keys that start with it.
	Prefix string
	// Limit is the most pairs returned; 0 means no limit.
	Limit int
	// Values fetches the values too (one MGET per page of keys).
	Values bool
}

// scanPage is the number of keys asked for per SCAN call.
const scanPage = 1000

// Scan returns keys (and values, if asked) in ascending key order. It is not
// a snapshot: keys written or deleted during the scan may or may not appear.
func (c *Client) Scan(ctx context.Context, o ScanOptions) ([]KV, error) {
	match := ""
	if o.Prefix != "" {
		match = escapeGlob(o.Prefix) + "*"
	}
	var out []KV
	var cursor uint64
	for {
		count := scanPage
		if o.Limit > 0 {
			count = min(count, o.Limit-len(out))
		}
		keys, next, err := c.rdb.Scan(ctx, cursor, match, int64(count)).Result()
		if err != nil {
			return nil, mapError("scan", err)
		}
		if o.Values && len(keys) > 0 {
			vals, err := c.rdb.MGet(ctx, keys...).Result()
			if err != nil {
				return nil, mapError("scan", err)
			}
			for i, v := range vals {
				if s, ok := v.(string); ok { // nil: deleted since SCAN
					out = append(out, KV{Key: keys[i], Value: []byte(s)})
				}
			}
		} else {
			for _, k := range keys {
				out = append(out, KV{Key: k})
			}
		}
		if next == 0 || (o.Limit > 0 && len(out) >= o.Limit) {
			if o.Limit > 0 && len(out) > o.Limit {
				out = out[:o.Limit]
			}
			return out, nil
		}
		cursor = next
	}
}

// escapeGlob escapes the glob metacharacters of s for SCAN MATCH.
func escapeGlob(s string) string {
	var b strings.Builder
	for i := range len(s) {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Sync is a durability barrier (WAITAOF 1 0 0): it returns once every write
// the server acknowledged before the call is fsynced. Use a context deadline
// to bound the wait.
func (c *Client) Sync(ctx context.Context) error {
	res, err := c.rdb.Do(ctx, "waitaof", 1, 0, 0).Int64Slice()
	if err != nil {
		return mapError("sync", err)
	}
	if len(res) != 2 || res[0] < 1 {
		return ErrNotDurable
	}
	return nil
}

// Info returns the server's INFO text for the given sections (all when none).
func (c *Client) Info(ctx context.Context, sections ...string) (string, error) {
	s, err := c.rdb.Info(ctx, sections...).Result()
	if err != nil {
		return "", mapError("info", err)
	}
	return s, nil
}

// Status is a summary of the server's state.
type Status struct {
	Version          string
	CommitMode       string
	FlushInterval    time.Duration
	Written          uint64 // last revision written to the log (visible to reads)
	Durable          uint64 // last revision fsynced
	Checkpointed     uint64 // last revision checkpointed into the state file
	Fsyncs           uint64
	RecordsSynced    uint64
	RecordsPerFsync  float64
	ConnectedClients int
	Uptime           time.Duration
	LogFailed        bool
}

// Status returns the server's status, from INFO.
func (c *Client) Status(ctx context.Context) (Status, error) {
	text, err := c.Info(ctx, "server", "clients", "persistence")
	if err != nil {
		return Status{}, err
	}
	f := parseInfo(text)
	u := func(k string) uint64 { n, _ := strconv.ParseUint(f[k], 10, 64); return n }
	st := Status{
		Version:       f["kvd_version"],
		CommitMode:    f["commit_mode"],
		Written:       u("written_revision"),
		Durable:       u("durable_revision"),
		Checkpointed:  u("checkpointed_revision"),
		Fsyncs:        u("fsyncs"),
		RecordsSynced: u("records_synced"),
		Uptime:        time.Duration(u("uptime_in_seconds")) * time.Second,
		LogFailed:     f["log_status"] == "failed",
	}
	st.RecordsPerFsync, _ = strconv.ParseFloat(f["records_per_fsync"], 64)
	ms, _ := strconv.ParseFloat(f["flush_interval_ms"], 64)
	st.FlushInterval = time.Duration(ms * float64(time.Millisecond))
	st.ConnectedClients, _ = strconv.Atoi(f["connected_clients"])
	if st.CommitMode == "" {
		return st, &OpError{Op: "status", Err: errors.New("server sent no commit_mode in INFO")}
	}
	return st, nil
}

// parseInfo parses INFO text into its fields.
func parseInfo(text string) map[string]string {
	f := make(map[string]string)
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			f[k] = v
		}
	}
	return f
}
