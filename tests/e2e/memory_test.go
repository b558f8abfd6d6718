package e2e

import (
	"strconv"
	"strings"
	"testing"

	"github.com/kvdstore/kvd/client"
)

// TestGarbageCollectorTarget: kvd runs the garbage collector with GOGC=200
// unless the environment sets GOGC, and INFO memory reports what is in
// effect along with the heap and the resident set.
func TestGarbageCollectorTarget(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{nil, "200"},
		{[]string{"GOGC=50"}, "50"},
		{[]string{"GOGC=off"}, "off"},
	} {
		p := startKVDEnv(t, tc.env, "")
		c, err := client.Dial(t.Context(), p.RESPAddr, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(t.Context(), "memory")
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		fields := map[string]string{}
		for _, line := range strings.Split(info, "\r\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				fields[k] = v
			}
		}
		if fields["gogc"] != tc.want {
			t.Errorf("env %q: INFO memory gogc:%q, want %q\n%s", tc.env, fields["gogc"], tc.want, info)
		}
		for _, k := range []string{"used_memory", "used_memory_rss"} {
			if n, err := strconv.ParseInt(fields[k], 10, 64); err != nil || n <= 0 {
				t.Errorf("env %q: INFO memory %s:%q, want a positive number\n%s", tc.env, k, fields[k], info)
			}
		}
	}
}
