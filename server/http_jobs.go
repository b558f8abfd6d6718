package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/kvdstore/kvd/jobs"
)

// The jobs' HTTP API (Config.Jobs):
//
//	POST /v1/jobs                 {"type":"backup|restore|verify|import|compact", "name":..., "format":..., "revision":N}
//	                              202 Accepted, Location: /v1/jobs/{id}, the record
//	GET  /v1/jobs                 ?state=&type=&limit=: {"jobs":[records, newest first]}
//	GET  /v1/jobs/{id}            the record; ?wait=30s waits for it to change after ?seq=N (default: to finish)
//	GET  /v1/jobs/{id}/events     server-sent events: the record at each change (id: its seq), to the end
//	POST /v1/jobs/{id}/cancel     cancels; the record
//	GET  /v1/jobs/{id}/artifact   a succeeded backup's file, with Content-Length and X-Kvd-Sha256
//	GET  /v1/snapshot             a snapshot streamed as it is made, with Content-Length and X-Kvd-Revision
//	                              (the snapshot ends in its own sha256: kvctl backup status checks it)

const codeBusy = "busy"

// maxJobWait bounds ?wait.
const maxJobWait = 5 * time.Minute

func (s *Server) jobRoutes(route func(pattern, name string, h http.HandlerFunc)) {
	route("POST /v1/jobs", "job_submit", s.handleJobSubmit)
	route("GET /v1/jobs", "job_list", s.handleJobList)
	route("GET /v1/jobs/{id}", "job_get", s.handleJobGet)
	route("GET /v1/jobs/{id}/events", "job_events", s.handleJobEvents)
	route("POST /v1/jobs/{id}/cancel", "job_cancel", s.handleJobCancel)
	route("GET /v1/jobs/{id}/artifact", "job_artifact", s.handleJobArtifact)
	route("GET /v1/snapshot", "snapshot", s.handleSnapshot)
}

// jobHTTPError translates the jobs' errors.
func jobHTTPError(err error) *httpError {
	switch {
	case errors.Is(err, jobs.ErrNotFound):
		return &httpError{http.StatusNotFound, codeNotFound, err.Error()}
	case errors.Is(err, jobs.ErrBadParams):
		return &httpError{http.StatusBadRequest, codeBadRequest, err.Error()}
	case errors.Is(err, jobs.ErrBusy), errors.Is(err, jobs.ErrNoArtifact):
		return &httpError{http.StatusConflict, codeBusy, err.Error()}
	case errors.Is(err, jobs.ErrClosed):
		return &httpError{http.StatusServiceUnavailable, codeUnavailable, err.Error()}
	}
	return httpErrorFor(err)
}

// jobsOr answers 503 when the server has no job manager.
func (s *Server) jobsOr(w http.ResponseWriter) *jobs.Manager {
	if s.cfg.Jobs == nil {
		writeJSONError(w, &httpError{http.StatusServiceUnavailable, codeUnavailable, "jobs are not enabled on this server"})
	}
	return s.cfg.Jobs
}

// jobRequest is the body of POST /v1/jobs.
type jobRequest struct {
	Type     jobs.Type `json:"type"`
	Name     string    `json:"name"`
	Format   string    `json:"format"`
	Revision uint64    `json:"revision"`
}

func (s *Server) handleJobSubmit(w http.ResponseWriter, r *http.Request) {
	m := s.jobsOr(w)
	if m == nil {
		return
	}
	var req jobRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSONError(w, &httpError{http.StatusBadRequest, codeBadRequest, "the body must be a JSON object {\"type\":...}: " + err.Error()})
		return
	}
	rec, _, err := m.Submit(req.Type, jobs.Params{Name: req.Name, Format: req.Format, Revision: req.Revision})
	if err != nil {
		writeJSONError(w, jobHTTPError(err))
		return
	}
	w.Header().Set("Location", "/v1/jobs/"+rec.ID)
	writeJSON(w, http.StatusAccepted, rec)
}

func (s *Server) handleJobList(w http.ResponseWriter, r *http.Request) {
	m := s.jobsOr(w)
	if m == nil {
		return
	}
	q := r.URL.Query()
	f := jobs.Filter{State: jobs.State(q.Get("state")), Type: jobs.Type(q.Get("type"))}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			writeJSONError(w, &httpError{http.StatusBadRequest, codeBadRequest, "limit must be a number >= 0"})
			return
		}
		f.Limit = n
	}
	list := m.List(f)
	if list == nil {
		list = []jobs.Record{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"jobs": list})
}

func (s *Server) handleJobGet(w http.ResponseWriter, r *http.Request) {
	m := s.jobsOr(w)
	if m == nil {
		return
	}
	id := r.PathValue("id")
	q := r.URL.Query()
	if q.Get("wait") == "" {
		rec, err := m.Get(id)
		if err != nil {
			writeJSONError(w, jobHTTPError(err))
			return
		}
		writeJSON(w, http.StatusOK, rec)
		return
	}
	d, err := time.ParseDuration(q.Get("wait"))
	if err != nil || d < 0 {
		writeJSONError(w, &httpError{http.StatusBadRequest, codeBadRequest, "wait must be a duration such as 30s"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), min(d, maxJobWait))
	defer cancel()
	var rec jobs.Record
	if sq := q.Get("seq"); sq != "" {
		seq, perr := strconv.ParseUint(sq, 10, 64)
		if perr != nil {
			writeJSONError(w, &httpError{http.StatusBadRequest, codeBadRequest, "seq must be a number"})
			return
		}
		rec, err = m.Wait(ctx, id, seq)
	} else {
		rec, err = m.WaitFinal(ctx, id)
	}
	if err != nil {
		writeJSONError(w, jobHTTPError(err))
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

func (s *Server) handleJobEvents(w http.ResponseWriter, r *http.Request) {
	m := s.jobsOr(w)
	if m == nil {
		return
	}
	id := r.PathValue("id")
	rec, err := m.Get(id)
	if err != nil {
		writeJSONError(w, jobHTTPError(err))
		return
	}
	var seq uint64
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		seq, _ = strconv.ParseUint(last, 10, 64)
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	for {
		if rec.Seq > seq {
			b, _ := json.Marshal(rec)
			event := "progress"
			if rec.State.Final() {
				event = "done"
			}
			if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", rec.Seq, event, b); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			seq = rec.Seq
		}
		if rec.State.Final() || r.Context().Err() != nil {
			return
		}
		if rec, err = m.Wait(r.Context(), id, seq); err != nil {
			return
		}
	}
}

func (s *Server) handleJobCancel(w http.ResponseWriter, r *http.Request) {
	m := s.jobsOr(w)
	if m == nil {
		return
	}
	rec, err := m.Cancel(r.PathValue("id"))
	if err != nil {
		writeJSONError(w, jobHTTPError(err))
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

func (s *Server) handleJobArtifact(w http.ResponseWriter, r *http.Request) {
	m := s.jobsOr(w)
	if m == nil {
		return
	}
	f, rec, err := m.Artifact(r.PathValue("id"))
	if err != nil {
		writeJSONError(w, jobHTTPError(err))
		return
	}
	defer f.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(rec.Result.Size, 10))
	h.Set("X-Kvd-Sha256", rec.Result.SHA256)
	h.Set("X-Kvd-Revision", strconv.FormatUint(rec.Result.Revision, 10))
	h.Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", rec.Params.Name))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	io.Copy(newMinRateWriter(w, int64(s.cfg.HTTPMinRate), s.cfg.HTTPRateWindow), io.LimitReader(f, rec.Result.Size))
}

// handleSnapshot streams a snapshot of the store as it is made: its
// revision is made durable first. Its exact size is known up front
// (Content-Length); its last 32 bytes are the sha256 of the rest.
func (s *Server) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	m := s.jobsOr(w)
	if m == nil {
		return
	}
	snap, release, err := m.Snapshot()
	if err != nil {
		writeJSONError(w, jobHTTPError(err))
		return
	}
	defer release()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(snap.Size(), 10))
	h.Set("X-Kvd-Revision", strconv.FormatUint(snap.Revision(), 10))
	w.WriteHeader(http.StatusOK)
	if _, err := snap.WriteTo(newMinRateWriter(w, int64(s.cfg.HTTPMinRate), s.cfg.HTTPRateWindow)); err != nil {
		s.log.Warn("server: snapshot stream ended early", "err", err)
	}
}
