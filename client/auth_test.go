package client_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/kvdstore/kvd/auth"
	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/server"
)

// startAuthServer runs a server with users root (all) and reader (read),
// and a default user, with the passwords in pass.
func startAuthServer(t *testing.T, pass map[string]string) string {
	t.Helper()
	var file string
	for _, u := range []struct{ name, perms string }{{"root", "all"}, {"reader", "read"}, {"default", "read,write"}} {
		h, err := auth.HashPassword(pass[u.name], auth.MinIterations)
		if err != nil {
			t.Fatal(err)
		}
		file += fmt.Sprintf("%s %s password=%s\n", u.name, u.perms, h)
	}
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	users, err := auth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	db, err := engine.Open(t.TempDir(), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(db, server.Config{Users: users, AuthFailDelay: -1})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeRESP(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
		db.Close()
	})
	return ln.Addr().String()
}

func TestDialCredentials(t *testing.T) {
	pass := map[string]string{"root": "root-pw-1", "reader": "reader-pw-1", "default": "default-pw-1"}
	addr := startAuthServer(t, pass)
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("reader-pw-1\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprint("resp", proto), func(t *testing.T) {
			for _, o := range []client.Options{
				{},
				{Username: "root", Password: "wrong"},
				{Username: "nobody", Password: "root-pw-1"},
				{Password: "root-pw-1"}, // the default user's is another
			} {
				o.Protocol = proto
				c, err := client.Dial(t.Context(), addr, o)
				if !errors.Is(err, client.ErrUnauthenticated) {
					t.Errorf("Dial as %q: %v, want ErrUnauthenticated", o.Username, err)
				}
				if c != nil {
					c.Close()
				}
			}
			root := dial(t, addr, client.Options{Protocol: proto, Username: "root", Password: "root-pw-1"})
			if err := root.Put(t.Context(), "k", []byte("v")); err != nil {
				t.Fatalf("root Put: %v", err)
			}
			reader := dial(t, addr, client.Options{Protocol: proto, Username: "reader", PasswordFile: pwFile})
			if v, err := reader.Get(t.Context(), "k"); err != nil || string(v) != "v" {
				t.Errorf("reader Get = %q, %v", v, err)
			}
			if err := reader.Put(t.Context(), "k", []byte("x")); !errors.Is(err, client.ErrNoPermission) {
				t.Errorf("reader Put: %v, want ErrNoPermission", err)
			}
			def := dial(t, addr, client.Options{Protocol: proto, Password: "default-pw-1"})
			if err := def.Put(t.Context(), "d", []byte("v")); err != nil {
				t.Errorf("default user's Put: %v", err)
			}
		})
	}
	if _, err := client.Dial(t.Context(), addr, client.Options{Password: "x", PasswordFile: pwFile}); err == nil {
		t.Error("Dial with Password and PasswordFile: no error")
	}
	if _, err := client.Dial(t.Context(), addr, client.Options{PasswordFile: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("Dial with a missing PasswordFile: no error")
	}
}
