package server

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kvdstore/kvd/auth"
)

// Connection and server administration: CLIENT LIST, INFO, KILL and HELP,
// SHUTDOWN, TIME.

// clientLine describes c as a line of CLIENT LIST: the fields of Redis's
// that kvd knows (memory and buffer fields are left out, but for omem). sub
// counts KVWATCH watches; omem the output held, as of the connection's
// last write or push.
func (c *respConn) clientLine(now time.Time) string {
	idle := c.created
	if ns := c.lastActive.Load(); ns != 0 {
		idle = time.Unix(0, ns)
	}
	cmd := "NULL"
	if p := c.lastCmd.Load(); p != nil {
		cmd = p.name
	}
	var b strings.Builder
	b.WriteString("id=" + strconv.FormatInt(c.id, 10))
	b.WriteString(" addr=" + c.addr)
	b.WriteString(" laddr=" + c.laddr)
	b.WriteString(" name=" + c.clientName())
	b.WriteString(" age=" + strconv.FormatInt(int64(now.Sub(c.created)/time.Second), 10))
	b.WriteString(" idle=" + strconv.FormatInt(int64(max(0, now.Sub(idle))/time.Second), 10))
	user := auth.DefaultUser
	if u := c.shownUser.Load(); u != nil {
		user = *u
	}
	b.WriteString(" flags=N db=0 sub=" + strconv.FormatInt(int64(c.push.count.Load()), 10))
	b.WriteString(" omem=" + strconv.FormatInt(c.push.omem.Load(), 10))
	b.WriteString(" cmd=" + cmd + " user=" + user + "\n")
	return b.String()
}

// clientsByID returns the open connections in the order of their ids.
func (s *Server) clientsByID() []*respConn {
	s.mu.Lock()
	cs := make([]*respConn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	slices.SortFunc(cs, func(a, b *respConn) int { return int(a.id - b.id) })
	return cs
}

// kill closes another connection at once, as Shutdown closes connections
// when its context ends; what it was doing is cut short. c itself quits
// after this command's reply instead.
func (c *respConn) kill(target *respConn) {
	if target == c {
		c.quit = true
		return
	}
	c.s.killConn(target)
}

// killConn closes connection target at once, if still open.
func (s *Server) killConn(target *respConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[target]; !ok {
		return
	}
	if target.nc != nil {
		target.nc.Close()
	} else if s.loop != nil {
		s.loop.post(loopMsg{kind: msgKill, c: target})
	}
}

// clientList answers CLIENT LIST [TYPE normal|master|replica|pubsub]
// [ID id ...]: every connection is of type normal.
func (c *respConn) clientList(args [][]byte) {
	var ids []int64
	typeOK := true
	for i := 0; i < len(args); i++ {
		switch {
		case equalFold(args[i], "type") && i+1 < len(args):
			t := string(lowerBytes(args[i+1]))
			if !slices.Contains([]string{"normal", "master", "replica", "slave", "pubsub"}, t) {
				c.writeError("ERR Unknown client type '" + printable(args[i+1], 64) + "'")
				return
			}
			typeOK = typeOK && t == "normal"
			i++
		case equalFold(args[i], "id") && i+1 < len(args):
			for _, a := range args[i+1:] {
				id, ok := parseInt64(a)
				if !ok || id <= 0 {
					c.writeError("ERR Invalid client ID")
					return
				}
				ids = append(ids, id)
			}
			i = len(args)
		default:
			c.writeError(respErrSyntax)
			return
		}
	}
	var b strings.Builder
	now := time.Now()
	if typeOK {
		for _, o := range c.s.clientsByID() {
			if ids == nil || slices.Contains(ids, o.id) {
				b.WriteString(o.clientLine(now))
			}
		}
	}
	c.writeBulkString(b.String())
}

// clientKill answers CLIENT KILL addr:port (OK, or an error if no
// connection is from there) and CLIENT KILL filter value [filter value ...]
// with filters ID, ADDR, LADDR, TYPE, USER and SKIPME (default yes): the
// number of connections closed.
func (c *respConn) clientKill(args [][]byte) {
	if len(args) == 1 {
		for _, o := range c.s.clientsByID() {
			if o.addr == string(args[0]) {
				c.writeOK()
				c.kill(o)
				return
			}
		}
		c.writeError("ERR No such client")
		return
	}
	if len(args)%2 != 0 {
		c.writeError(respErrSyntax)
		return
	}
	var (
		id          int64
		addr, laddr string
		user        string
		typeOK      = true
		skipMe      = true
	)
	for i := 0; i < len(args); i += 2 {
		opt, v := args[i], args[i+1]
		switch {
		case equalFold(opt, "id"):
			n, ok := parseInt64(v)
			if !ok || n <= 0 {
				c.writeError("ERR client-id should be greater than 0")
				return
			}
			id = n
		case equalFold(opt, "addr"):
			addr = string(v)
		case equalFold(opt, "laddr"):
			laddr = string(v)
		case equalFold(opt, "user"):
			user = string(v)
		case equalFold(opt, "type"):
			t := string(lowerBytes(v))
			if !slices.Contains([]string{"normal", "master", "replica", "slave", "pubsub"}, t) {
				c.writeError("ERR Unknown client type '" + printable(v, 64) + "'")
				return
			}
			typeOK = t == "normal"
		case equalFold(opt, "skipme"):
			switch {
			case equalFold(v, "yes"):
				skipMe = true
			case equalFold(v, "no"):
				skipMe = false
			default:
				c.writeError(respErrSyntax)
				return
			}
		default:
			c.writeError(respErrSyntax)
			return
		}
	}
	var victims []*respConn
	for _, o := range c.s.clientsByID() {
		if !typeOK || (id != 0 && o.id != id) || (addr != "" && o.addr != addr) ||
			(laddr != "" && o.laddr != laddr) || (user != "" && user != "default") || (skipMe && o == c) {
			continue
		}
		victims = append(victims, o)
	}
	c.writeInt(int64(len(victims)))
	for _, o := range victims {
		c.kill(o)
	}
}

var clientHelp = []string{
	"CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
	"ID",
	"    Return the ID of the current connection.",
	"INFO",
	"    Return information about the current client connection.",
	"LIST [TYPE (NORMAL|MASTER|REPLICA|PUBSUB)] [ID <id> [<id> ...]]",
	"    Return information about client connections; every kvd connection is of type normal.",
	"KILL <ip:port>",
	"    Kill the connection made from <ip:port>.",
	"KILL <option> <value> [<option> <value> [...]]",
	"    Kill connections. Options are:",
	"    * ID <client-id>",
	"    * ADDR <ip:port>",
	"    * LADDR <ip:port>",
	"    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
	"    * USER <username> (every connection is the default user)",
	"    * SKIPME (YES|NO): skip the current connection (default: yes).",
	"GETNAME",
	"    Return the name of the current connection.",
	"SETNAME <name>",
	"    Assign the name <name> to the current connection.",
	"SETINFO <LIB-NAME|LIB-VER> <value>",
	"    Accepted and ignored.",
	"DURABILITY [SYNC|ASYNC|DEFAULT]",
	"    Get or set when this connection's writes are acknowledged: once fsynced (sync), once written (async), or by the server's commit mode (default).",
	"CONSISTENCY [LINEARIZABLE|LEADER|STALE|DEFAULT] [MAXSTALE <ms>] [MINREV <revision>]",
	"    Cluster mode: get or set how current this connection's reads are; leader and stale reads also wait for the connection's last write.",
	"REDIRECT [ON|OFF]",
	"    Cluster mode: with ON, a write sent to a follower is answered -MOVED 0 <leader host:port> instead of being forwarded.",
	"LASTREV",
	"    Return the revision of this connection's last successful write (0 before any).",
	"HELP",
	"    Print this help.",
}

// cmdShutdown answers SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE] [ABORT]: it asks
// the program serving the server to stop it as on SIGTERM (see
// Server.ShutdownRequested) and closes this connection without a reply,
// as Redis does. Every write is in the log already, so SAVE and NOSAVE
// change nothing; NOW and FORCE are accepted: the stop is graceful anyway.
func cmdShutdown(c *respConn, args [][]byte) {
	for _, a := range args[1:] {
		switch {
		case equalFold(a, "nosave"), equalFold(a, "save"), equalFold(a, "now"), equalFold(a, "force"):
		case equalFold(a, "abort"):
			c.writeError("ERR No shutdown in progress.")
			return
		default:
			c.writeError(respErrSyntax)
			return
		}
	}
	c.s.log.Info("shutdown requested", "conn", c.id, "remote", c.addr)
	c.s.shutdownOnce.Do(func() { close(c.s.shutdownReq) })
	c.quit = true
}

// ShutdownRequested returns a channel that is closed when a client sends
// SHUTDOWN. The server does not stop by itself: the program serving it
// should then call Shutdown, as it does on SIGTERM.
func (s *Server) ShutdownRequested() <-chan struct{} { return s.shutdownReq }

// cmdTime answers TIME: the server's clock as [unix seconds, microseconds].
func cmdTime(c *respConn, _ [][]byte) {
	now := time.Now()
	c.writeArray(2)
	c.writeBulkString(strconv.FormatInt(now.Unix(), 10))
	c.writeBulkString(strconv.Itoa(now.Nanosecond() / 1000))
}
