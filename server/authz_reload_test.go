package server_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestReloadEndsStreamsOfRemovedUsers: a reload of the users ends what a
// user it removed, or whose permissions it changed, still receives without
// sending commands: KVWATCH pushes (the connection is closed; one without
// watches stays, and its next command gets -NOAUTH), an SSE stream (an
// error event, then the end), a waiting long-poll and a blocking read
// (401 at once).
func TestReloadEndsStreamsOfRemovedUsers(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts, path := startAuthServer(t, model)
		root := login(t, ts, "root", rootPass)
		watcher := login(t, ts, "reader", readerPass)
		if got := watcher.do("KVWATCH", "PREFIX", "a"); !strings.HasPrefix(got, "*4\r\n$7\r\nkvwatch\r\n") {
			t.Fatalf("KVWATCH = %q", got)
		}
		changed := login(t, ts, "appadmin", appPass)
		if got := changed.do("KVWATCH", "PREFIX", "app/"); !strings.HasPrefix(got, "*4\r\n$7\r\nkvwatch\r\n") {
			t.Fatalf("appadmin KVWATCH = %q", got)
		}
		idle := login(t, ts, "reader", readerPass) // no watch

		// An SSE stream and a long-poll of reader's, over HTTP.
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		get := func(url string) (*http.Response, error) {
			req, err := http.NewRequestWithContext(ctx, "GET", "http://"+ts.httpAddr+url, nil)
			if err != nil {
				return nil, err
			}
			req.Header.Set("Authorization", basic("reader", readerPass))
			return http.DefaultClient.Do(req)
		}
		sse, err := get("/v1/watch?prefix=a")
		if err != nil {
			t.Fatal(err)
		}
		defer sse.Body.Close()
		if sse.StatusCode != 200 {
			t.Fatalf("SSE: %d", sse.StatusCode)
		}
		// A long-poll and a blocking read, each waiting 15 s for a change
		// that does not come: the reload must end them long before.
		poll := make(chan int, 2)
		for _, url := range []string{"/v1/changes?prefix=zz&wait=15s", "/v1/kv/zz?index=1&wait=15s"} {
			go func() {
				resp, err := get(url)
				if err != nil {
					poll <- 0 // canceled at the test's end
					return
				}
				resp.Body.Close()
				poll <- resp.StatusCode
			}()
		}
		time.Sleep(200 * time.Millisecond) // the long-poll waits

		writeUsers(t, path, []testUser{
			{"root", "all", rootPass, ""},
			{"appadmin", "read", appPass, "prefix=app/"},
		})
		if got := root.do("ACL", "LOAD"); got != "+OK\r\n" {
			t.Fatalf("ACL LOAD = %q", got)
		}
		watcher.expectClosed()
		changed.expectClosed()
		if got := idle.do("GET", "a"); got != noAuth {
			t.Errorf("the removed user's connection without watches: GET = %q, want NOAUTH", got)
		}
		if got := root.do("SET", "a1", "v"); got != ok {
			t.Fatalf("SET = %q", got)
		}

		sc := bufio.NewScanner(sse.Body)
		var events []string
		for sc.Scan() {
			if e, found := strings.CutPrefix(sc.Text(), "event: "); found {
				events = append(events, e)
			}
		}
		if len(events) == 0 || events[len(events)-1] != "error" {
			t.Errorf("SSE events of a removed user: %v, want the stream to end with an error event", events)
		}
		for _, e := range events {
			if e == "change" {
				t.Errorf("SSE sent a change to a removed user")
			}
		}
		for range 2 {
			select {
			case code := <-poll:
				if code != http.StatusUnauthorized {
					t.Errorf("the removed user's waiting long-poll or blocking read: %d, want 401", code)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("a waiting long-poll or blocking read did not end at the reload")
			}
		}
	})
}
