package wal

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// segmentNameLen is the length of a tidwall/wal segment file name: the
// segment's first index as 20 decimal digits.
const segmentNameLen = 20

func segmentName(index uint64) string { return fmt.Sprintf("%020d", index) }

// segmentFile is one segment of the log directory.
type segmentFile struct {
	name  string
	first uint64 // index (revision) of its first record
}

// finishTruncation completes a front or back truncation that tidwall/wal
// left half done (its .START and .END files are written atomically, then the
// old segments removed and the file renamed), exactly as tidwall/wal's own
// loader does, and returns the segments in order. tidwall/wal cannot do this
// itself because it refuses to open a log whose tail is torn.
func finishTruncation(dir string) ([]segmentFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("wal: read dir: %w", err)
	}
	var (
		segs             []segmentFile
		startIdx, endIdx = -1, -1
		changed          bool
	)
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, ".TEMP") {
			// A temporary file of an interrupted atomic write: never renamed,
			// so never part of the log.
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, fmt.Errorf("wal: remove %s: %w", name, err)
			}
			changed = true
			continue
		}
		if e.IsDir() || len(name) < segmentNameLen {
			continue
		}
		index, err := strconv.ParseUint(name[:segmentNameLen], 10, 64)
		if err != nil || index == 0 {
			continue
		}
		isStart := len(name) == segmentNameLen+6 && strings.HasSuffix(name, ".START")
		isEnd := len(name) == segmentNameLen+4 && strings.HasSuffix(name, ".END")
		if len(name) != segmentNameLen && !isStart && !isEnd {
			continue
		}
		if isStart {
			startIdx = len(segs)
		} else if isEnd && endIdx == -1 {
			endIdx = len(segs)
		}
		segs = append(segs, segmentFile{name: name, first: index})
	}
	if startIdx != -1 && endIdx != -1 {
		return nil, &CorruptError{Segment: segs[startIdx].name, Reason: "both a .START and an .END file are present"}
	}
	if startIdx != -1 {
		for _, s := range segs[:startIdx] {
			if err := os.Remove(filepath.Join(dir, s.name)); err != nil {
				return nil, fmt.Errorf("wal: finish truncation: %w", err)
			}
		}
		segs = segs[startIdx:]
		final := segs[0].name[:segmentNameLen]
		if err := os.Rename(filepath.Join(dir, segs[0].name), filepath.Join(dir, final)); err != nil {
			return nil, fmt.Errorf("wal: finish truncation: %w", err)
		}
		segs[0].name = final
		changed = true
	}
	if endIdx != -1 {
		for _, s := range segs[endIdx+1:] {
			if err := os.Remove(filepath.Join(dir, s.name)); err != nil {
				return nil, fmt.Errorf("wal: finish truncation: %w", err)
			}
		}
		segs = segs[:endIdx+1]
		if n := len(segs); n > 1 && segs[n-2].first == segs[n-1].first {
			segs[n-2] = segs[n-1]
			segs = segs[:n-1]
		}
		last := &segs[len(segs)-1]
		final := last.name[:segmentNameLen]
		if err := os.Rename(filepath.Join(dir, last.name), filepath.Join(dir, final)); err != nil {
			return nil, fmt.Errorf("wal: finish truncation: %w", err)
		}
		last.name = final
		changed = true
	}
	if changed {
		if err := SyncDir(dir); err != nil {
			return nil, err
		}
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].first < segs[j].first })
	return segs, nil
}

func truncateFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("wal: repair: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("wal: repair %s: %w", filepath.Base(path), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("wal: repair %s: %w", filepath.Base(path), err)
	}
	return f.Close()
}
