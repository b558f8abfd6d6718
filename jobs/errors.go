package jobs

import "errors"

var (
	// ErrNotFound is returned for a job ID that has no record.
	ErrNotFound = errors.New("jobs: no such job")
	// ErrBadParams is returned by Submit for an unknown type or bad
	// parameters.
	ErrBadParams = errors.New("jobs: bad job parameters")
	// ErrBusy is returned by Submit when the rules keep the job from
	// being queued: nothing beside a restore.
	ErrBusy = errors.New("jobs: busy")
	// ErrNoArtifact is returned by Artifact for a job that has no file to
	// serve: not a backup, or not succeeded.
	ErrNoArtifact = errors.New("jobs: no artifact")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("jobs: closed")
)
