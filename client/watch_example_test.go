package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/kvdstore/kvd/client"
)

// This example needs a kvd server on 127.0.0.1:6380 (go run ./cmd/kvd), so
// it is compiled but not run by go test.
func ExampleClient_Watch() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := client.Dial(ctx, "127.0.0.1:6380", client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Every change under "app/" from revision 1 on, then as they happen;
	// the watch reconnects by itself and misses nothing.
	for ev := range c.Watch(ctx, "app/", 1) {
		var ce *client.CompactedError
		switch {
		case errors.As(ev.Err, &ce):
			// Older than the server's history: read the state again
			// (Scan) and watch from its revision.
			log.Fatalf("watch from %d: history starts at %d", ce.Requested, ce.Oldest)
		case ev.Err != nil:
			log.Fatal(ev.Err)
		case ev.Progress:
			// Nothing matched up to ev.Revision: a resume point.
		default:
			for _, ch := range ev.Changes {
				fmt.Println(ev.Revision, ch.Key, string(ch.Value), ch.Deleted)
			}
		}
	}
}
