package jobs

import "time"

// WithClock returns o with now as the manager's clock.
func WithClock(o Options, now func() time.Time) Options {
	o.now = now
	return o
}
