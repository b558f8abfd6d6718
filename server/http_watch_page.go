package server

import (
	_ "embed"
	"net/http"
)

// watchPage is the live page at / on the HTTP listener: the written,
// durable and checkpointed revisions, the age of the oldest unsynced
// write, commits per second and commit latency per commit mode (from
// /v1/status and /metrics, every second), and the change feed through
// EventSource (/v1/watch) with a prefix filter. One file, no outside
// assets, no build step.
//
//go:embed http_watch_page.html
var watchPage []byte

func (s *Server) handlePage(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
	w.Write(watchPage)
}
