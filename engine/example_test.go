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

// ExampleDB_Submit commits the writes of several clients together, as a
// server's event loop does: each batch is submitted without waiting, one
// wait on the newest Commit writes and fsyncs them all, and each Commit
// then answers for its own batch at once.
func ExampleDB_Submit() {
	dir, err := os.MkdirTemp("", "kvd-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := engine.Open(dir, engine.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	batches := make([]engine.Batch, 3)
	commits := make([]engine.Commit, len(batches))
	for i := range batches {
		batches[i].IncrBy([]byte("hits"), 1)
		// The first client asks for an async acknowledgement; the others
		// take the DB's mode, sync.
		wo := engine.WriteOptions{}
		if i == 0 {
			wo.Durability = engine.DurabilityAsync
		}
		if commits[i], err = db.Submit(&batches[i], wo); err != nil {
			log.Fatal(err)
		}
	}
	if err := commits[len(commits)-1].WaitDurable(); err != nil { // one write, one fsync
		log.Fatal(err)
	}
	for i, c := range commits {
		if err := c.Wait(); err != nil {
			log.Fatal(err)
		}
		fmt.Printf("revision %d, sync %v, hits %d\n", c.Revision(), c.Sync(), batches[i].Results()[0].Int)
	}
	// Output:
	// revision 1, sync false, hits 1
	// revision 2, sync true, hits 2
	// revision 3, sync true, hits 3
}
