package server

import (
	"errors"
	"math"
	"time"

	"github.com/kvdstore/kvd/engine"
)

// Expiry over RESP: SET's EX, PX, EXAT, PXAT and KEEPTTL (in cmdSet),
// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, PERSIST, GETEX, TTL, PTTL,
// EXPIRETIME and PEXPIRETIME, with Redis's replies and errors. The store
// keeps an absolute expiry time in Unix milliseconds; relative times are
// added to this server's clock when the command is read.

// expireUnit is how an expiry argument is given.
type expireUnit uint8

const (
	unitSeconds   expireUnit = iota // EX, EXPIRE
	unitMillis                      // PX, PEXPIRE
	unitUnixSecs                    // EXAT, EXPIREAT
	unitUnixMilli                   // PXAT, PEXPIREAT
)

// expireTime turns n in unit u into an absolute time in Unix ms. It reports
// false on overflow.
func expireTime(n int64, u expireUnit) (int64, bool) {
	if u == unitSeconds || u == unitUnixSecs {
		if n > math.MaxInt64/1000 || n < math.MinInt64/1000 {
			return 0, false
		}
		n *= 1000
	}
	if u == unitSeconds || u == unitMillis {
		now := time.Now().UnixMilli()
		if n > math.MaxInt64-now {
			return 0, false
		}
		n += now
	}
	return n, true
}

// setExpiry parses the value of SET's or GETEX's EX, PX, EXAT or PXAT
// option: a positive integer that gives a time that does not overflow. It
// replies with Redis's error and reports false otherwise.
func (c *respConn) setExpiry(arg []byte, u expireUnit, cmd string) (int64, bool) {
	n, ok := parseInt64(arg)
	if !ok {
		c.writeError(respErrNotInteger)
		return 0, false
	}
	at, ok := expireTime(n, u)
	if n <= 0 || !ok {
		c.writeError("ERR invalid expire time in '" + cmd + "' command")
		return 0, false
	}
	return at, true
}

// expiryOption matches opt against EX, PX, EXAT and PXAT.
func expiryOption(opt []byte) (expireUnit, bool) {
	switch {
	case equalFold(opt, "ex"):
		return unitSeconds, true
	case equalFold(opt, "px"):
		return unitMillis, true
	case equalFold(opt, "exat"):
		return unitUnixSecs, true
	case equalFold(opt, "pxat"):
		return unitUnixMilli, true
	}
	return 0, false
}

// cmdSetEx answers SETEX key seconds value and PSETEX key milliseconds
// value, which are SET key value EX seconds and SET key value PX
// milliseconds: +OK.
func cmdSetEx(c *respConn, args [][]byte) (engine.Durability, writeReply, bool) {
	name, u := "setex", unitSeconds
	if equalFold(args[0], "psetex") {
		name, u = "psetex", unitMillis
	}
	at, ok := c.setExpiry(args[2], u, name)
	if !ok || !c.checkKeyValue(args[1], args[3]) {
		return 0, 0, false
	}
	c.batch.Reset()
	c.batch.PutExpiresAt(args[1], args[3], 0, at)
	return c.durability, replyOK, true
}

// cmdExpire answers EXPIRE key seconds, PEXPIRE key ms, EXPIREAT key
// unix-seconds and PEXPIREAT key unix-ms, each with [NX|XX|GT|LT]
// [SYNC|ASYNC]: 1 if the expiry was set, 0 if the key does not exist or
// the condition did not hold. A time in the past deletes the key (1).
func cmdExpire(c *respConn, args [][]byte) (engine.Durability, writeReply, bool) {
	var buf [16]byte
	name := string(lower(buf[:0], args[0]))
	u := map[string]expireUnit{"expire": unitSeconds, "pexpire": unitMillis, "expireat": unitUnixSecs, "pexpireat": unitUnixMilli}[name]
	n, ok := parseInt64(args[2])
	if !ok {
		c.writeError(respErrNotInteger)
		return 0, 0, false
	}
	at, ok := expireTime(n, u)
	if !ok {
		c.writeError("ERR invalid expire time in '" + name + "' command")
		return 0, 0, false
	}
	var cond engine.ExpireCond
	d := c.durability
	for _, opt := range args[3:] {
		switch {
		case equalFold(opt, "nx"):
			cond |= engine.ExpireNX
		case equalFold(opt, "xx"):
			cond |= engine.ExpireXX
		case equalFold(opt, "gt"):
			cond |= engine.ExpireGT
		case equalFold(opt, "lt"):
			cond |= engine.ExpireLT
		case equalFold(opt, "sync"):
			d = engine.DurabilitySync
		case equalFold(opt, "async"):
			d = engine.DurabilityAsync
		default:
			c.writeError("ERR Unsupported option " + string(opt))
			return 0, 0, false
		}
	}
	switch {
	case cond&engine.ExpireNX != 0 && cond&(engine.ExpireXX|engine.ExpireGT|engine.ExpireLT) != 0:
		c.writeError("ERR NX and XX, GT or LT options at the same time are not compatible")
		return 0, 0, false
	case cond&engine.ExpireGT != 0 && cond&engine.ExpireLT != 0:
		c.writeError("ERR GT and LT options at the same time are not compatible")
		return 0, 0, false
	}
	key := args[1]
	if msg := c.checkKey(key); msg != "" {
		c.writeError(msg)
		return 0, 0, false
	}
	c.batch.Reset()
	c.batch.Expire(key, at, cond)
	return d, replyApplied, true
}

// cmdPersist answers PERSIST key [SYNC|ASYNC]: 1 if the key's expiry was
// removed, 0 if it does not exist or has none.
func cmdPersist(c *respConn, args [][]byte) (engine.Durability, writeReply, bool) {
	rest, d := c.trailingDurability(args[1:])
	if len(rest) != 1 {
		c.writeError(respErrSyntax)
		return 0, 0, false
	}
	if msg := c.checkKey(rest[0]); msg != "" {
		c.writeError(msg)
		return 0, 0, false
	}
	c.batch.Reset()
	c.batch.Persist(rest[0], 0)
	return d, replyApplied, true
}

// cmdGetEx answers GETEX key [EX s|PX ms|EXAT t|PXAT t|PERSIST]
// [SYNC|ASYNC]: the key's value (null if it does not exist) and, with an
// option, a change of its expiry made in the same write. Without an option
// it is a GET: it replies at once and writes nothing.
func cmdGetEx(c *respConn, args [][]byte) (engine.Durability, writeReply, bool) {
	key := args[1]
	opts, d := args[2:], c.durability
	if len(opts) > 0 {
		opts, d = c.trailingDurability(args[1:])
		opts = opts[1:]
	}
	var at int64
	persist, set := false, false
	for i := 0; i < len(opts); i++ {
		u, isExp := expiryOption(opts[i])
		switch {
		case isExp && !set && !persist && i+1 < len(opts):
			var ok bool
			if at, ok = c.setExpiry(opts[i+1], u, "getex"); !ok {
				return 0, 0, false
			}
			set = true
			i++
		case equalFold(opts[i], "persist") && !set && !persist:
			persist = true
		default:
			c.writeError(respErrSyntax)
			return 0, 0, false
		}
	}
	if msg := c.checkKey(key); msg != "" {
		c.writeError(msg)
		return 0, 0, false
	}
	if !set && !persist {
		cmdGet(c, args[:2])
		return 0, 0, false // answered: nothing to write
	}
	c.batch.Reset()
	if persist {
		c.batch.Persist(key, engine.ExpireReturnValue)
	} else {
		c.batch.Expire(key, at, engine.ExpireReturnValue)
	}
	return d, replyOld, true
}

// cmdTTL answers TTL and PTTL key with the time left before the key
// expires, in seconds (rounded as Redis does) or milliseconds, and
// EXPIRETIME and PEXPIRETIME key with its absolute expiry time, in Unix
// seconds or milliseconds: -2 if the key does not exist, -1 if it has no
// expiry.
func cmdTTL(c *respConn, args [][]byte) {
	e, err := c.reads().GetEntry(args[1])
	switch {
	case errors.Is(err, engine.ErrNotFound):
		c.writeInt(-2)
		return
	case err != nil:
		c.writeError(respError(err))
		return
	case e.ExpiresAt == 0:
		c.writeInt(-1)
		return
	}
	var buf [16]byte
	switch string(lower(buf[:0], args[0])) {
	case "ttl":
		c.writeInt((max(e.ExpiresAt-time.Now().UnixMilli(), 0) + 500) / 1000)
	case "pttl":
		c.writeInt(max(e.ExpiresAt-time.Now().UnixMilli(), 0))
	case "expiretime":
		c.writeInt(e.ExpiresAt / 1000)
	default:
		c.writeInt(e.ExpiresAt)
	}
}
