package kvtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// JobRecord is the part of a job's record (GET /v1/jobs/ID) the tests read.
type JobRecord struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	Result *struct {
		Path     string `json:"path"`
		Revision uint64 `json:"revision"`
		Keys     int64  `json:"keys"`
		// OldestRevision: compact's oldest revision of the change history.
		OldestRevision uint64 `json:"oldest_revision"`
	} `json:"result"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Attempt int `json:"attempt"`
}

// SubmitJob posts the job body to POST /v1/jobs of the server at base
// ("http://host:port") and returns the reply's status and body, and the
// record it holds when the status is 202 Accepted.
func SubmitJob(hc *http.Client, base, body string) (status int, rec JobRecord, reply []byte, err error) {
	resp, err := hc.Post(base+"/v1/jobs", "application/json", strings.NewReader(body))
	if err != nil {
		return 0, rec, nil, err
	}
	defer resp.Body.Close()
	if reply, err = io.ReadAll(resp.Body); err != nil {
		return resp.StatusCode, rec, reply, err
	}
	if resp.StatusCode == http.StatusAccepted {
		if err := json.Unmarshal(reply, &rec); err != nil {
			return resp.StatusCode, rec, reply, fmt.Errorf("POST /v1/jobs: decoding the reply: %w", err)
		}
	}
	return resp.StatusCode, rec, reply, nil
}

// WaitJob waits, at most 90 s, for the job id of the server at base to
// reach a final state by itself, and returns its record.
func WaitJob(ctx context.Context, base, id string) (JobRecord, error) {
	var r JobRecord
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		hc := &http.Client{Timeout: 70 * time.Second}
		if err := GetJSON(ctx, hc, base+"/v1/jobs/"+id+"?wait=60s", &r); err != nil {
			return r, fmt.Errorf("job %s: %w", id, err)
		}
		if r.State == "succeeded" || r.State == "failed" || r.State == "canceled" {
			return r, nil
		}
	}
	return r, fmt.Errorf("job %s did not finish by itself: %+v", id, r)
}
