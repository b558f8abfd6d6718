package histogram

import "testing"

// TestBucketsTile checks that the buckets cover every value once, in order,
// and that each is at most 1/128 of its values wide.
func TestBucketsTile(t *testing.T) {
	for i := 0; i < buckets-1; i++ {
		hi := upper(i)
		if index(hi) != i || index(hi+1) != i+1 {
			t.Fatalf("bucket %d ends at %d: index(%d)=%d, index(%d)=%d", i, hi, hi, index(hi), hi+1, index(hi+1))
		}
		if i >= exact {
			lo := upper(i-1) + 1
			if float64(hi-lo) > float64(lo)/128 {
				t.Fatalf("bucket %d [%d,%d] is wider than 1/128", i, lo, hi)
			}
		}
	}
	if index(^uint64(0)>>1) >= buckets {
		t.Fatal("largest duration has no bucket")
	}
}
