package browser

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
)

// devtools is a client of the Chrome DevTools Protocol over the pipe
// Chromium opens with --remote-debugging-pipe: JSON messages, each ended by
// a NUL byte; the browser reads commands on its descriptor 3 and writes
// replies and events on its descriptor 4. It does what the screenshot test
// needs and no more: commands (call) and the page's JavaScript errors.
type devtools struct {
	w io.WriteCloser

	mu      sync.Mutex
	nextID  int
	pending map[int]chan devtoolsMessage
	jsErrs  []string      // uncaught exceptions and console.error calls
	done    chan struct{} // closed once the browser's side of the pipe closes
	readErr error
}

// devtoolsMessage is a reply (ID set) or an event (Method set).
type devtoolsMessage struct {
	ID        int             `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// devtoolsPipes returns the two pipes for startBrowser's extra files
// (descriptors 3 and 4 of the browser) and a function that makes the
// client once the browser has started.
func devtoolsPipes(t *testing.T) (extra []*os.File, connect func() *devtools) {
	t.Helper()
	cmdR, cmdW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	evR, evW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmdW.Close(); evR.Close() })
	return []*os.File{cmdR, evW}, func() *devtools {
		// The browser holds its own copies of these ends now; closing
		// ours lets the reader see the end when the browser exits.
		cmdR.Close()
		evW.Close()
		d := &devtools{w: cmdW, pending: map[int]chan devtoolsMessage{}, done: make(chan struct{})}
		go d.read(evR)
		return d
	}
}

func (d *devtools) read(r io.Reader) {
	br := bufio.NewReader(r)
	for {
		b, err := br.ReadBytes(0)
		if err != nil {
			d.mu.Lock()
			d.readErr = err
			d.mu.Unlock()
			close(d.done)
			return
		}
		var m devtoolsMessage
		if err := json.Unmarshal(b[:len(b)-1], &m); err != nil {
			continue
		}
		d.mu.Lock()
		if ch, ok := d.pending[m.ID]; ok && m.ID != 0 {
			delete(d.pending, m.ID)
			ch <- m
		} else if e := jsError(m); e != "" {
			d.jsErrs = append(d.jsErrs, e)
		}
		d.mu.Unlock()
	}
}

// jsError returns the text of an event that reports a JavaScript error of
// the page, or "".
func jsError(m devtoolsMessage) string {
	switch m.Method {
	case "Runtime.exceptionThrown":
		var p struct {
			Details struct {
				Text      string `json:"text"`
				Exception struct {
					Description string `json:"description"`
				} `json:"exception"`
			} `json:"exceptionDetails"`
		}
		json.Unmarshal(m.Params, &p)
		return fmt.Sprintf("exception: %s %s", p.Details.Text, p.Details.Exception.Description)
	case "Runtime.consoleAPICalled":
		var p struct {
			Type string            `json:"type"`
			Args []json.RawMessage `json:"args"`
		}
		json.Unmarshal(m.Params, &p)
		if p.Type == "error" {
			return fmt.Sprintf("console.error: %s", p.Args)
		}
	}
	return ""
}

// call sends method with params to the browser (session "") or to the
// target attached as session, and decodes the reply's result into result
// (nil: ignored).
func (d *devtools) call(ctx context.Context, session, method string, params, result any) error {
	if params == nil {
		params = struct{}{}
	}
	p, err := json.Marshal(params)
	if err != nil {
		return err
	}
	ch := make(chan devtoolsMessage, 1)
	d.mu.Lock()
	d.nextID++
	id := d.nextID
	d.pending[id] = ch
	d.mu.Unlock()
	msg, err := json.Marshal(devtoolsMessage{ID: id, Method: method, SessionID: session, Params: p})
	if err != nil {
		return err
	}
	if _, err := d.w.Write(append(msg, 0)); err != nil {
		return fmt.Errorf("devtools %s: %w", method, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			return fmt.Errorf("devtools %s: %d %s", method, m.Error.Code, m.Error.Message)
		}
		if result == nil {
			return nil
		}
		return json.Unmarshal(m.Result, result)
	case <-d.done:
		return fmt.Errorf("devtools %s: the browser closed the pipe: %w", method, d.readErr)
	case <-ctx.Done():
		return fmt.Errorf("devtools %s: %w", method, ctx.Err())
	}
}

// JSErrors returns the page's JavaScript errors so far.
func (d *devtools) JSErrors() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.jsErrs...)
}

// openPage opens a new tab of size width×height, attaches to it and
// enables the runtime events (for JSErrors); it returns the session.
func (d *devtools) openPage(ctx context.Context, width, height int) (string, error) {
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := d.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		return "", err
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := d.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att); err != nil {
		return "", err
	}
	s := att.SessionID
	if s == "" {
		return "", errors.New("devtools: attaching to the page gave no session")
	}
	for _, c := range []struct {
		method string
		params any
	}{
		{"Runtime.enable", nil},
		{"Page.enable", nil},
		{"Emulation.setDeviceMetricsOverride", map[string]any{"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}},
	} {
		if err := d.call(ctx, s, c.method, c.params, nil); err != nil {
			return "", err
		}
	}
	return s, nil
}

// navigate loads url in the session's page.
func (d *devtools) navigate(ctx context.Context, session, url string) error {
	var nav struct {
		ErrorText string `json:"errorText"`
	}
	if err := d.call(ctx, session, "Page.navigate", map[string]any{"url": url}, &nav); err != nil {
		return err
	}
	if nav.ErrorText != "" {
		return fmt.Errorf("devtools: navigating to %s: %s", url, nav.ErrorText)
	}
	return nil
}

// eval evaluates a JavaScript expression in the page and decodes its JSON
// value into v.
func (d *devtools) eval(ctx context.Context, session, expr string, v any) error {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := d.call(ctx, session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r); err != nil {
		return err
	}
	if r.Exception != nil {
		return fmt.Errorf("devtools: evaluating %q: %s", expr, r.Exception.Text)
	}
	return json.Unmarshal(r.Result.Value, v)
}

// screenshot returns a PNG of the session's page as it shows now.
func (d *devtools) screenshot(ctx context.Context, session string) ([]byte, error) {
	var shot struct {
		Data []byte `json:"data"` // base64 in JSON
	}
	if err := d.call(ctx, session, "Page.captureScreenshot", map[string]any{"format": "png"}, &shot); err != nil {
		return nil, err
	}
	return shot.Data, nil
}
