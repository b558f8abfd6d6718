package engine

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkStateLayout measures the state file's size against the logical
// data it holds (keys and values) for bbolt fill factors and page sizes,
// under two loads of 100-byte values: "random", three writes per key of
// keys drawn at random (as redis-benchmark -r), and "sequential", every key
// new and in order. It reports file bytes per logical byte and the share
// of free pages. A fill factor of 0 ("auto") is the engine's own choice
// (diskusage.go). Run it with -benchtime=1x:
//
//	go test ./engine/ -run '^$' -bench StateLayout -benchtime=1x
func BenchmarkStateLayout(b *testing.B) {
	const keys, valSize = 200_000, 100
	val := make([]byte, valSize)
	for _, load := range []string{"random", "sequential"} {
		for _, page := range []int{4096, 16384} {
			for _, fill := range []float64{0, 0.5, 0.75, 0.9, 1.0} {
				name := fmt.Sprintf("%s/page=%d/fill=%.2f", load, page, fill)
				if fill == 0 {
					name = fmt.Sprintf("%s/page=%d/fill=auto", load, page)
				}
				b.Run(name, func(b *testing.B) {
					for b.Loop() {
						dir := b.TempDir()
						db, err := Open(dir, Options{
							CommitMode:      CommitAsync,
							CheckpointBytes: 8 << 20,
							fillPercent:     fill,
							pageSize:        page,
						})
						if err != nil {
							b.Fatal(err)
						}
						rng := rand.New(rand.NewPCG(1, 2))
						writes := keys
						if load == "random" {
							writes = 3 * keys
						}
						live := map[int]bool{}
						var batch Batch
						for i := range writes {
							k := i
							if load == "random" {
								k = rng.IntN(keys)
							}
							live[k] = true
							batch.Put(fmt.Appendf(nil, "key:%012d", k), val)
							if batch.Len() == 100 || i == writes-1 {
								if _, err := db.Write(&batch, WriteOptions{}); err != nil {
									b.Fatal(err)
								}
								batch.Reset()
							}
						}
						if err := db.Close(); err != nil {
							b.Fatal(err)
						}
						logical := int64(len(live) * (16 + valSize))
						if got := db.data.bytes.Load(); got != logical {
							b.Fatalf("the state file's data counted %d bytes, want %d", got, logical)
						}
						fi, err := os.Stat(filepath.Join(dir, "state.db"))
						if err != nil {
							b.Fatal(err)
						}
						bdb, err := bolt.Open(filepath.Join(dir, "state.db"), 0o600, nil)
						if err != nil {
							b.Fatal(err)
						}
						// used: the pages up to the high-water mark less the
						// free ones; leaf: the kv bucket's leaf pages' use.
						var used, leafUse float64
						bdb.View(func(tx *bolt.Tx) error {
							st := bdb.Stats()
							used = float64(tx.Size() - int64(st.FreePageN+st.PendingPageN)*int64(bdb.Info().PageSize))
							bs := tx.Bucket(bucketKV).Stats()
							leafUse = float64(bs.LeafInuse) / float64(bs.LeafAlloc)
							return nil
						})
						bdb.Close()
						b.ReportMetric(float64(fi.Size())/float64(logical), "file/logical")
						b.ReportMetric(used/float64(logical), "used/logical")
						b.ReportMetric(leafUse, "leaf-fill")
					}
				})
			}
		}
	}
}
