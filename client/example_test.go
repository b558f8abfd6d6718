package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/kvdstore/kvd/client"
)

// This example needs a kvd server on 127.0.0.1:6380 (go run ./cmd/kvd), so
// it is compiled but not run by go test.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	c, err := client.Dial(ctx, "127.0.0.1:6380", client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Acknowledged once fsynced, whatever the server's default.
	if err := c.Put(ctx, "greeting", []byte("hello"), client.WithDurability(client.DurabilitySync)); err != nil {
		log.Fatal(err)
	}
	// Acknowledged once written; durable within the flush interval...
	if err := c.Put(ctx, "counter", []byte("1"), client.WithDurability(client.DurabilityAsync)); err != nil {
		log.Fatal(err)
	}
	// ...or now, with a barrier.
	if err := c.Sync(ctx); err != nil {
		log.Fatal(err)
	}

	v, err := c.Get(ctx, "greeting")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", v)

	if _, err := c.Get(ctx, "nope"); errors.Is(err, client.ErrNotFound) {
		fmt.Println("nope: not found")
	}
}
