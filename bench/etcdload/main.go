// Command etcdload drives an etcd cluster as redis-benchmark drives kvd:
// CONNS connections shared by CLIENTS concurrent clients, each sending one
// request at a time (a put of a random key among KEYSPACE, or a
// linearizable or serializable get), N requests in all, and prints the
// requests per second and the latency percentiles. bench/cluster.sh runs
// it beside redis-benchmark against kvd; it is a module of its own so that
// kvd does not depend on etcd's client.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	endpoints := flag.String("endpoints", "127.0.0.21:2379", "comma-separated client URLs of the cluster")
	op := flag.String("op", "put", "put, get (linearizable) or sget (serializable)")
	clients := flag.Int("clients", 50, "concurrent clients, each with one request in flight")
	conns := flag.Int("conns", 10, "connections the clients share")
	n := flag.Int("n", 100000, "requests in all")
	keyspace := flag.Int("keyspace", 100000, "keys chosen at random among this many")
	size := flag.Int("d", 3, "value size in bytes")
	flag.Parse()

	var cls []*clientv3.Client
	for range *conns {
		c, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*endpoints, ","), DialTimeout: 5 * time.Second})
		if err != nil {
			fmt.Fprintln(os.Stderr, "etcdload:", err)
			os.Exit(1)
		}
		defer c.Close()
		cls = append(cls, c)
	}
	value := strings.Repeat("x", *size)
	var next atomic.Int64
	lat := make([][]time.Duration, *clients)
	var failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range *clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cls[i%len(cls)]
			for next.Add(1) <= int64(*n) {
				key := fmt.Sprintf("key:%012d", rand.IntN(*keyspace))
				t := time.Now()
				var err error
				switch *op {
				case "put":
					_, err = c.Put(context.Background(), key, value)
				case "get":
					_, err = c.Get(context.Background(), key)
				case "sget":
					_, err = c.Get(context.Background(), key, clientv3.WithSerializable())
				}
				if err != nil {
					failed.Add(1)
					continue
				}
				lat[i] = append(lat[i], time.Since(t))
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		fmt.Fprintln(os.Stderr, "etcdload: every request failed")
		os.Exit(1)
	}
	pct := func(p float64) float64 { return all[int(p*float64(len(all)-1))].Seconds() * 1000 }
	fmt.Printf("%s: %.2f requests per second, p50=%.3f msec p99=%.3f msec failed=%d\n",
		strings.ToUpper(*op), float64(len(all))/took.Seconds(), pct(0.5), pct(0.99), failed.Load())
}
