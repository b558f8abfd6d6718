package engine_test

import (
	"fmt"
	"log"
	"os"

	"github.com/kvdstore/kvd/engine"
)

func Example() {
	dir, err := os.MkdirTemp("", "kvd-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// The zero Options are the safest: every write waits for its fsync.
	db, err := engine.Open(dir, engine.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	rev, err := db.Put([]byte("greeting"), []byte("hello"), engine.WriteOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("put at revision", rev)

	// An atomic batch that returns once written, without waiting for the
	// fsync; Sync then waits for everything acknowledged so far.
	var b engine.Batch
	b.Put([]byte("a"), []byte("1"))
	b.Put([]byte("b"), []byte("2"))
	if _, err := db.Write(&b, engine.WriteOptions{Durability: engine.DurabilityAsync}); err != nil {
		log.Fatal(err)
	}
	if err := db.Sync(); err != nil {
		log.Fatal(err)
	}

	v, err := db.Get([]byte("greeting"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(v))
	st := db.Stats()
	fmt.Println("committed", st.WrittenRevision, "durable", st.DurableRevision)
	// Output:
	// put at revision 1
	// hello
	// committed 2 durable 2
}
