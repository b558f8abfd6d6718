package engine

import "time"

// WithClock returns o with the clock now in place of time.Now: the
// engine's reads, its stamps on submitted batches and its expirer all read
// it.
func WithClock(o Options, now func() time.Time) Options {
	o.clock = now
	return o
}

// WithSweep returns o with the expiry sweep run every interval, removing at
// most limit keys a time.
func WithSweep(o Options, interval time.Duration, limit int) Options {
	o.sweepInterval, o.sweepLimit = interval, limit
	return o
}
