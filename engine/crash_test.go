package engine_test

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
)

// The crash test runs this test binary again as a child process that writes
// under load and reports every acknowledged write on stdout, then kills it
// with SIGKILL at a random moment.

const (
	childEnvDir  = "KVD_ENGINE_CRASH_DIR"
	childEnvMode = "KVD_ENGINE_CRASH_MODE"
	childWriters = 8
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnvDir); dir != "" {
		crashChild(dir, os.Getenv(childEnvMode))
		return
	}
	os.Exit(m.Run())
}

// batchKeys are the keys of batch i of writer g: written together, they
// must survive together.
func batchKeys(g, i int) [3]string {
	p := fmt.Sprintf("w%d/%06d/", g, i)
	return [3]string{p + "a", p + "b", p + "c"}
}

func crashChild(dir, mode string) {
	if mode == "fill" {
		fillChild(dir)
		return
	}
	m, err := engine.ParseCommitMode(mode)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	db, err := engine.Open(dir, engine.Options{CommitMode: m, CheckpointBytes: 256 << 10, SegmentSize: 128 << 10})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var out sync.Mutex
	var wg sync.WaitGroup
	for g := range childWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Continue after the batches that survived earlier runs.
			start := 0
			for {
				if _, err := db.Get([]byte(batchKeys(g, start)[0])); err != nil {
					break
				}
				start++
			}
			for i := start; ; i++ {
				var b engine.Batch
				for _, k := range batchKeys(g, i) {
					b.Put([]byte(k), []byte(fmt.Sprint(g, "-", i)))
				}
				rev, err := db.Write(&b, engine.WriteOptions{})
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
				out.Lock()
				fmt.Fprintf(os.Stdout, "ack %d %d %d\n", g, i, rev)
				out.Unlock()
			}
		}()
	}
	wg.Wait()
}

func TestKillNineLosesNoAcknowledgedWrite(t *testing.T) {
	seed := rand.Uint64()
	if s := os.Getenv("KVD_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (set KVD_CRASH_SEED to repeat)", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"sync", "async"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			acked := make([]int, childWriters) // highest acknowledged batch per writer
			for i := range acked {
				acked[i] = -1
			}
			for cycle := range 4 {
				killAfter := 50 + rng.IntN(2000)
				cmd := exec.Command(exe)
				cmd.Env = append(os.Environ(), childEnvDir+"="+dir, childEnvMode+"="+mode)
				var stderr strings.Builder
				cmd.Stderr = &stderr
				stdout, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				sc := bufio.NewScanner(stdout)
				seen := 0
				for sc.Scan() {
					var g, i int
					var rev uint64
					if _, err := fmt.Sscanf(sc.Text(), "ack %d %d %d", &g, &i, &rev); err != nil {
						t.Fatalf("child said %q", sc.Text())
					}
					acked[g] = max(acked[g], i)
					if seen++; seen == killAfter {
						cmd.Process.Kill() // SIGKILL; keep reading acks already printed
					}
				}
				err = cmd.Wait()
				if seen < killAfter {
					t.Fatalf("child stopped after %d acks: %v\n%s", seen, err, stderr.String())
				}
				checkRecovered(t, dir, acked)
				t.Logf("cycle %d: killed after %d acks", cycle, killAfter)
			}
		})
	}
}

// checkRecovered opens dir and checks that every acknowledged batch is there,
// that each writer's batches form a prefix with no hole, and that every batch
// is all there or not at all. It then resets acked to what survived, so that
// the next run continues each writer's sequence.
func checkRecovered(t *testing.T, dir string, acked []int) {
	t.Helper()
	db, err := engine.Open(dir, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for g := range childWriters {
		present := 0
		for i := 0; ; i++ {
			n := 0
			for _, k := range batchKeys(g, i) {
				v, err := db.Get([]byte(k))
				switch {
				case err == nil:
					if string(v) != fmt.Sprint(g, "-", i) {
						t.Fatalf("%s = %q", k, v)
					}
					n++
				case !errors.Is(err, engine.ErrNotFound):
					t.Fatal(err)
				}
			}
			if n != 0 && n != 3 {
				t.Fatalf("writer %d batch %d: %d of 3 keys survived", g, i, n)
			}
			if n == 0 {
				present = i
				break
			}
		}
		if present-1 < acked[g] {
			t.Fatalf("writer %d: batches 0..%d survived, %d was acknowledged", g, present-1, acked[g])
		}
		// No later batch may exist past the hole.
		for i := present + 1; i < present+50; i++ {
			if _, err := db.Get([]byte(batchKeys(g, i)[0])); err == nil {
				t.Fatalf("writer %d: batch %d survived but batch %d did not", g, i, present)
			}
		}
		acked[g] = present - 1
	}
}

// fillChild writes KVD_FILL_RECORDS records that are never checkpointed,
// makes them durable and exits without closing the store.
func fillChild(dir string) {
	n, _ := strconv.Atoi(os.Getenv("KVD_FILL_RECORDS"))
	db, err := engine.Open(dir, engine.Options{
		CommitMode:         engine.CommitAsync,
		CheckpointInterval: time.Hour,
		CheckpointBytes:    4 << 30,
		CheckpointLogBytes: 4 << 30,
		MaxMemtableBytes:   4 << 30,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	val := make([]byte, 100)
	key := make([]byte, 16)
	for i := range n {
		binary.BigEndian.PutUint64(key, uint64(i))
		if _, err := db.Put(key, val, engine.WriteOptions{}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if err := db.Sync(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("filled")
	os.Exit(0) // no Close: nothing is checkpointed
}
