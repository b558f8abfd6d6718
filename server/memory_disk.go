package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvdstore/kvd/engine"
)

// stateFiler is what a Store that keeps a state file offers of its size
// (*engine.DB does). A Store without it reports zeros.
type stateFiler interface {
	StateFile() (engine.StateFileStats, error)
}

// DiskStatus is the "disk" object of GET /v1/status: the state file's size
// against the logical data it holds (see engine.StateFileStats). All 0
// when the store does not report them.
type DiskStatus struct {
	// StateFileBytes is the size of state.db, StateFreeBytes what of it
	// is free pages that later checkpoints reuse.
	StateFileBytes int64 `json:"state_file_bytes"`
	StateFreeBytes int64 `json:"state_free_bytes"`
	// StateKeys is how many keys the state file holds, StateDataBytes
	// their keys' and values' bytes (writes not yet checkpointed are in
	// memory, not counted); -1 when the store could not count them (a
	// damaged state file).
	StateKeys      int64 `json:"state_keys"`
	StateDataBytes int64 `json:"state_data_bytes"`
	// HistoryBytes is the size of the change history's log, which
	// watches read revisions from (bounded by --watch-history-bytes).
	HistoryBytes int64 `json:"history_bytes"`
}

// diskStatus is the "disk" object of /v1/status.
func (s *Server) diskStatus() DiskStatus {
	sf, ok := s.store.(stateFiler)
	if !ok {
		return DiskStatus{}
	}
	st, err := sf.StateFile()
	if err != nil {
		return DiskStatus{}
	}
	return DiskStatus{StateFileBytes: st.FileBytes, StateFreeBytes: st.FreeBytes,
		StateKeys: st.Keys, StateDataBytes: st.DataBytes, HistoryBytes: st.HistoryBytes}
}

// infoDisk writes the state file's and the history's figures into INFO's
// persistence section.
func (s *Server) infoDisk(field func(string, any)) {
	d := s.diskStatus()
	field("state_file_bytes", d.StateFileBytes)
	field("state_free_bytes", d.StateFreeBytes)
	field("state_keys", d.StateKeys)
	field("state_data_bytes", d.StateDataBytes)
	field("history_bytes", d.HistoryBytes)
}

// diskCollector exports the state file's size against its data, read once
// per scrape.
type diskCollector struct{ s *Server }

var (
	stateFileDesc = prometheus.NewDesc("kvd_state_file_bytes",
		"Size of the state file (state.db).", nil, nil)
	stateFreeDesc = prometheus.NewDesc("kvd_state_free_bytes",
		"Free pages in the state file, which later checkpoints reuse.", nil, nil)
	stateKeysDesc = prometheus.NewDesc("kvd_state_keys",
		"Keys the state file holds (writes not yet checkpointed not counted).", nil, nil)
	stateDataDesc = prometheus.NewDesc("kvd_state_data_bytes",
		"Bytes of the keys and values the state file holds: the logical data behind kvd_state_file_bytes.", nil, nil)
	historyDesc = prometheus.NewDesc("kvd_history_bytes",
		"Size of the change history's log, which watches read past revisions from.", nil, nil)
)

func (c *diskCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{stateFileDesc, stateFreeDesc, stateKeysDesc, stateDataDesc, historyDesc} {
		ch <- d
	}
}

func (c *diskCollector) Collect(ch chan<- prometheus.Metric) {
	d := c.s.diskStatus()
	for _, m := range []struct {
		d *prometheus.Desc
		v int64
	}{{stateFileDesc, d.StateFileBytes}, {stateFreeDesc, d.StateFreeBytes}, {stateKeysDesc, d.StateKeys}, {stateDataDesc, d.StateDataBytes}, {historyDesc, d.HistoryBytes}} {
		ch <- prometheus.MustNewConstMetric(m.d, prometheus.GaugeValue, float64(m.v))
	}
}
