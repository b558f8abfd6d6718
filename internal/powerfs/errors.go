package powerfs

import "errors"

// ErrClosed is returned by Crash when the file system was already
// crashed or unmounted.
var ErrClosed = errors.New("powerfs: closed")
