package main

import (
	"net/http"
	"os"

	"github.com/kvdstore/kvd/client"
)

// authorizeHTTP sets req's credentials for kvd's HTTP API: KVD_TOKEN as a
// bearer token, else the user and password (--user or KVD_USER, default
// "default"; --password-file or KVD_PASSWORD) as basic auth, else none.
func (e *env) authorizeHTTP(req *http.Request) error {
	if token := os.Getenv("KVD_TOKEN"); token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
		return nil
	}
	password := os.Getenv("KVD_PASSWORD")
	if e.cfg.passwordFile != "" {
		var err error
		if password, err = client.ReadPasswordFile(e.cfg.passwordFile); err != nil {
			return err
		}
	}
	if password == "" {
		return nil
	}
	user := e.cfg.user
	if user == "" {
		user = "default"
	}
	req.SetBasicAuth(user, password)
	return nil
}
