package kvtest_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kvdstore/kvd/internal/kvtest"
)

func TestGetJSON(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte(`{"written": 7}`))
		case "/bad":
			w.Write([]byte(`{"written": `))
		default:
			http.Error(w, "the log failed", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	var st struct {
		Written int `json:"written"`
	}
	if err := kvtest.GetJSON(t.Context(), srv.Client(), srv.URL+"/ok", &st); err != nil || st.Written != 7 {
		t.Errorf("GetJSON /ok: %+v, %v; want written 7", st, err)
	}
	if err := kvtest.GetJSON(t.Context(), srv.Client(), srv.URL+"/bad", &st); err == nil {
		t.Error("GetJSON of a cut JSON reply: no error")
	}
	err := kvtest.GetJSON(t.Context(), srv.Client(), srv.URL+"/down", &st)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "the log failed") {
		t.Errorf("GetJSON of a 503: %v; want an error with the status and the body", err)
	}
}
